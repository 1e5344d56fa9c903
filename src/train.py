"""Train one model and evaluate it: `python src/train.py [group=option] [key=value] ...`.

The whole command is `blf.app.train`; this file only connects it to Hydra (conf/train.yaml)
and turns user errors into one line and exit status 2.
"""

import hydra
from omegaconf import DictConfig

from blf import app
from blf.run.folder import RunFolder


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    with app.user_errors(RunFolder(app.hydra_run_dir())):
        app.train(cfg)


if __name__ == "__main__":
    main()

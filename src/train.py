"""Train one model and evaluate it: `python src/train.py [group=option] [key=value] ...`.

The whole command is `blf.app.train`; this file only connects it to Hydra (conf/train.yaml)
and turns user errors into one line and exit status 2.
"""

import sys

try:
    import hydra
    from omegaconf import DictConfig

    from blf import app
    from blf.run.folder import RunFolder
except ModuleNotFoundError as missing:  # a Python without the project's environment
    print(f"error: {missing.name} is not installed for {sys.executable}; allowed: the project's environment "
          "(make install, then .venv/bin/python src/train.py ..., or . .venv/bin/activate)", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    with app.user_errors(RunFolder(app.hydra_run_dir())):
        app.train(cfg)


if __name__ == "__main__":
    main()

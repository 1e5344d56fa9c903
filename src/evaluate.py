"""Evaluate an existing run: `python src/evaluate.py run_dir=<folder> 'attack=[pgd,spsa]' eval.n=N`.

The whole command is `blf.app.evaluate`; this file only connects it to Hydra
(conf/evaluate.yaml) and turns user errors into one line and exit status 2. New records replace
records with the same key and keep all others; the worst case and the integrity checks cover
every attack recorded for the same checkpoint and subset.
"""

import hydra
from omegaconf import DictConfig

from blf import app


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    with app.user_errors():
        app.evaluate(cfg)


if __name__ == "__main__":
    main()

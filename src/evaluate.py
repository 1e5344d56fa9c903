"""Evaluate an existing run: `python src/evaluate.py run_dir=<folder> 'attack=[pgd,spsa]' eval.n=N`.

The whole command is `blf.app.evaluate`; this file only connects it to Hydra
(conf/evaluate.yaml) and turns user errors into one line and exit status 2. New records replace
records with the same key and keep all others; the worst case and the integrity checks cover
every attack recorded for the same checkpoint and subset.
"""

import sys

try:
    import hydra
    from omegaconf import DictConfig

    from blf import app
    from blf.run.folder import RunFolder
except ModuleNotFoundError as missing:  # a Python without the project's environment
    print(f"error: {missing.name} is not installed for {sys.executable}; allowed: the project's environment "
          "(make install, then .venv/bin/python src/evaluate.py ..., or . .venv/bin/activate)", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    with app.user_errors(RunFolder(app.hydra_run_dir())):
        app.evaluate(cfg)


if __name__ == "__main__":
    # Hydra would fail on the missing folder name with a traceback while naming its own folder.
    if not any(a.startswith(("run_dir=", "-")) for a in sys.argv[1:]):
        print("error: run_dir is missing; allowed: run_dir=<a run folder written by src/train.py>", file=sys.stderr)
        sys.exit(2)
    main()

"""Evaluate an existing run: `python src/evaluate.py run_dir=<folder> 'attack=[pgd,spsa]' eval.n=N`.

The run's settings come from its checkpoint; the attacks, analyses and evaluation settings from
this command. New records replace records with the same key and keep all others; the worst
case and the integrity checks cover every attack recorded for the same checkpoint and subset.
"""

import hydra
from omegaconf import DictConfig, OmegaConf

from blf import app, assess, data, reporting, tracking
from blf import config as C
from blf.workspace import Workspace

# What this command decides; everything else comes from the run's checkpoint.
EVALUATION_KEYS = ("attack", "analysis", "eval", "logger", "device", "progress")


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    workspace = Workspace(app.run_dir())
    with app.user_errors():
        try:
            saved = workspace.load(cfg.eval.checkpoint)
        finally:
            workspace.remove_if_fresh()  # Hydra created the folder if run_dir did not exist
        # The run's config with this command's evaluation settings (their interpolations,
        # such as ${dataset.threat.eval_eps}, resolve against the run's dataset).
        run_cfg = OmegaConf.create(saved["config"])
        for key in EVALUATION_KEYS:
            run_cfg[key] = cfg.get(key)
        config = C.to_container(run_cfg)
        app.configure_cpu(run_cfg.trainer.get("threads"))
        device = app.device(run_cfg.device)
        dataset = data.load(run_cfg.dataset)
        parts = app.build_parts(run_cfg, dataset.num_classes)
        classifier = app.build_classifier(run_cfg, dataset).to(device)
        with tracking.start(run_cfg.logger, config, workspace.root, job_type="eval") as tracker:
            rows, _ = assess.assess(workspace, run_cfg, config, dataset.to(device), classifier, parts, device, tracker,
                                    skip_done=False)
        print(reporting.summary(rows))
        print(f"records: {workspace.results_path}")


if __name__ == "__main__":
    main()

"""Train one model and evaluate it: `python src/train.py [group=option] [key=value] ...`.

Composes the config groups (conf/train.yaml) into a dataset, a classifier (network + head), a
regularizer, a training mode and attacks; trains with resumption (trainer.fit); assesses the
selected checkpoint (attacks, worst case, integrity checks, analyses); writes everything into
the run folder.
"""

import hydra
import torch
from omegaconf import DictConfig

from blf import app, assess, data, precision, reporting, tracking, trainer
from blf import config as C
from blf.workspace import Workspace


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    workspace = Workspace(app.run_dir())
    with app.user_errors(workspace):
        config = C.to_container(cfg)
        app.configure_cpu(cfg.trainer.get("threads"))
        device = app.device(cfg.device)
        epochs = C.integer("trainer.epochs", cfg.trainer.epochs, ge=1)
        batch_size = C.integer("trainer.batch_size", cfg.trainer.batch_size, ge=1)
        dataset = data.load(cfg.dataset)
        parts = app.build_parts(cfg, dataset.num_classes)
        torch.manual_seed(cfg.seed)
        classifier = app.build_classifier(cfg, dataset).to(device)
        optimizer, scheduler = app.build_optimizer(cfg, classifier)
        precision.policy(cfg.trainer.get("amp"))
        dataset = dataset.to(device)
        augment = data.augmentation(cfg.dataset, device, cfg.seed)
        with tracking.start(cfg.logger, config, workspace.root, job_type="train") as tracker:
            progress = trainer.fit(
                workspace, classifier, dataset, parts[1], parts[0], optimizer, scheduler,
                epochs=epochs, batch_size=batch_size, seed=cfg.seed, config=config,
                device=device, tracker=tracker, progress=cfg.progress,
            )
            rows, _ = assess.assess(workspace, cfg, config, dataset, classifier, parts, device, tracker, skip_done=True)
        workspace.mark_finished(C.job_key(config))
        print(f"best epoch {progress.best_epoch}: clean test accuracy {progress.best_accuracy:.2f}%")
        print(reporting.summary(rows))
        print(f"run folder: {workspace.root}")


if __name__ == "__main__":
    main()

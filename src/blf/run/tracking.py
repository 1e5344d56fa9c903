"""Experiment tracking (the `logger` config group): Weights & Biases, or nothing.

W&B runs offline unless WANDB_MODE says otherwise (`make wandb-sync` uploads later). Each
Hydra job opens one W&B run and finishes it, so a multirun logs every job, not just the first.
A training run keeps its W&B id across resumptions.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from blf import config as C
from blf.run.records import Kind

if TYPE_CHECKING:
    import pandas as pd

LOGGERS = ("wandb", "none")


class Tracker:
    """The no-op tracker (`logger=none`)."""

    def log_epoch(self, row: dict) -> None:
        pass

    def log_records(self, rows: Sequence[dict]) -> None:
        pass

    def log_tables(self, tables: Mapping[str, pd.DataFrame]) -> None:
        pass

    def finish(self) -> None:
        pass

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc) -> None:
        self.finish()


class WandbTracker(Tracker):
    def __init__(self, cfg, config: dict, run_dir: Path, job_type: str, name: str | None = None):
        import wandb

        # WANDB_MODE wins (the Makefile and CI set it); then logger.mode.
        mode = os.environ.get("WANDB_MODE") or cfg.mode
        C.choice("logger.mode (or WANDB_MODE)", mode, ("online", "offline", "disabled"))
        run_dir = Path(run_dir).resolve()
        # A stable id per (run folder, job type): a resumed training run continues its W&B run.
        run_id = hashlib.sha1(f"{run_dir}:{job_type}".encode()).hexdigest()[:16]
        self.wandb = wandb
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            group=cfg.group,
            job_type=job_type,
            name=name or run_dir.name,
            id=run_id if job_type == "train" else None,
            resume="allow" if job_type == "train" else None,
            dir=str(run_dir),
            mode=mode,
            config=config,
            tags=list(cfg.tags),
            settings=wandb.Settings(silent=C.boolean("logger.silent", cfg.silent)),
        )

    def log_epoch(self, row: dict) -> None:
        self.run.log({f"epoch/{k}": v for k, v in row.items() if k != "epoch"} | {"epoch": row["epoch"]})

    def log_records(self, rows: Sequence[dict]) -> None:
        """The robustness curve: a table of (attack, eps, accuracy) and a line plot per attack."""
        curve = [r for r in rows if r.get("kind") == Kind.ROBUSTNESS]
        if not curve:
            return
        wandb = self.wandb
        table = wandb.Table(columns=["attack", "eps", "accuracy"], data=[[r["attack"], r["eps"], r["accuracy"]] for r in curve])
        logged = {"robustness/table": table}
        for attack in sorted({r["attack"] for r in curve}):
            points = wandb.Table(
                columns=["eps", "accuracy"], data=[[r["eps"], r["accuracy"]] for r in curve if r["attack"] == attack]
            )
            logged[f"robustness/{attack}"] = wandb.plot.line(points, "eps", "accuracy", title=f"accuracy vs eps ({attack})")
        for r in rows:
            if r.get("kind") == Kind.NORMS:
                logged.update({f"norms/{k}": r[k] for k in ("logit_l2", "logit_linf", "prelogit_l2", "prelogit_linf")})
        self.run.log(logged)
        for r in curve:
            self.run.summary[f"accuracy/{r['attack']}@{r['eps']:.4g}"] = r["accuracy"]

    def log_tables(self, tables: Mapping[str, pd.DataFrame]) -> None:
        """Frames as W&B tables under `report/<name>` (a study's side-by-side and claims)."""
        self.run.log({f"report/{name}": self.wandb.Table(dataframe=frame.astype(object).where(frame.notna(), None))
                      for name, frame in tables.items()})

    def finish(self) -> None:
        self.run.finish()


def start(cfg, config: dict, run_dir: Path, job_type: str, name: str | None = None) -> Tracker:
    """The tracker of `logger` (cfg); `name` names the W&B run (default: the run folder's name)."""
    if C.choice("logger", cfg.name, LOGGERS) == "wandb":
        return WandbTracker(cfg, config, run_dir, job_type, name)
    return Tracker()

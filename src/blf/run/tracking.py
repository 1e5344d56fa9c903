"""Experiment tracking (the `logger` config group): Weights & Biases, or nothing.

W&B runs offline unless WANDB_MODE says otherwise (`make wandb-sync` uploads later); `wandb` is
imported only when `logger=wandb`. Each Hydra job opens one W&B run and finishes it, so a
multirun logs every job, not just the first. A W&B run is named for what it trains
(`2C2F BLF (gamma=1.5) standard s0`), tagged with experiment, profile, dataset, model, head and
training, and its summary answers the questions asked of a trained model: the evaluated
checkpoint's clean accuracy, the robust accuracy per attack and eps, the worst case per eps, and
the integrity verdicts. A training run keeps its W&B id across resumptions (the id lives in the
run folder, so a deleted and retrained folder is a new W&B run).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from blf import config as C
from blf.errors import BLFError
from blf.report import labels
from blf.run import storage, untrusted
from blf.run.records import WORST_CASE, Kind

if TYPE_CHECKING:
    import pandas as pd

LOGGERS = ("wandb", "none")
# Where a training run keeps its W&B id (in its run folder).
RUN_ID_FILE = "wandb_id.json"
TAG_COLUMNS = ("experiment", "profile", "dataset", "model", "head", "training")
NORM_COLUMNS = ("logit_l2", "logit_linf", "prelogit_l2", "prelogit_linf")


def run_name(identity: Mapping) -> str:
    """A short name for what a run trains: model, method with its hyper-parameter, training, seed."""
    parts = [labels.facet_label("model", identity.get("model")), labels.label(identity), identity.get("training")]
    return " ".join(str(p) for p in parts if p) + f" s{identity.get('seed')}"


def tags(identity: Mapping, extra: Sequence[str] = ()) -> list[str]:
    """The identity's values that W&B filters by (profile `smoke` stays apart from `paper`)."""
    found = [str(identity[k]) for k in TAG_COLUMNS if identity.get(k) is not None]
    return list(dict.fromkeys([*found, *extra]))[:20]


def eps_key(eps: float) -> str:
    return f"{float(eps):.4g}"


def summary(rows: Sequence[Mapping]) -> dict:
    """The evaluation of one checkpoint as summary keys: `clean/accuracy` (the whole test set,
    at the evaluated epoch), `robust/<attack>@<eps>`, `worst_case@<eps>`, `integrity/<check>`
    (pass, FAIL or skipped) and `integrity/failed` (how many FAILed), `checkpoint/*`."""
    out = {}
    for r in rows:
        kind = r.get("kind")
        if kind == Kind.ROBUSTNESS:
            out[f"robust/{r['attack']}@{eps_key(r['eps'])}"] = r["accuracy"]
        elif kind == Kind.WORST_CASE:
            out[f"worst_case@{eps_key(r['eps'])}"] = r["accuracy"]
        elif kind == Kind.INTEGRITY:
            out[f"integrity/{r['check']}"] = r["status"]
        elif kind == Kind.NORMS:
            out.update({f"norms/{k}": r[k] for k in NORM_COLUMNS})
    if any(r.get("kind") == Kind.INTEGRITY for r in rows):
        out["integrity/failed"] = sum(r.get("kind") == Kind.INTEGRITY and r.get("status") == "FAIL" for r in rows)
    if rows:
        first = rows[0]
        out |= {"clean/accuracy": first.get("clean_test_acc"), "checkpoint/which": first.get("checkpoint"),
                "checkpoint/epoch": first.get("checkpoint_epoch"), "eval/n": first.get("n")}
    return out


class Tracker:
    """The no-op tracker (`logger=none`)."""

    def log_epoch(self, row: dict) -> None:
        pass

    def log_evaluation(self, rows: Sequence[dict], added: Sequence[dict]) -> None:
        pass

    def log_checkpoint(self, path: Path, metadata: Mapping) -> None:
        pass

    def log_tables(self, tables: Mapping[str, pd.DataFrame]) -> None:
        pass

    def log_audit(self, summary: Mapping, figure) -> None:
        pass

    def finish(self) -> None:
        pass

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc) -> None:
        self.finish()


def stable_id(run_dir: Path) -> str:
    """The W&B id of the training run in `run_dir`: read from the folder, or new (and kept)."""
    path = Path(run_dir) / RUN_ID_FILE
    try:
        kept = untrusted.read_json(path, "allowed: the id file W&B runs keep", limit=4096)
        kept = kept.get("id") if isinstance(kept, dict) else None
    except (OSError, BLFError):  # missing, unreadable or hostile: a new id, which replaces the file
        kept = None
    if isinstance(kept, str) and kept.isalnum():
        return kept
    new = secrets.token_hex(8)
    storage.write_text(path, json.dumps({"id": new}) + "\n")
    return new


class WandbTracker(Tracker):
    def __init__(self, cfg, config: dict, run_dir: Path, job_type: str, name: str | None = None,
                 identity: Mapping | None = None):
        import wandb

        # WANDB_MODE wins (the Makefile and CI set it); then logger.mode.
        mode = os.environ.get("WANDB_MODE") or cfg.mode
        C.choice("logger.mode (or WANDB_MODE)", mode, ("online", "offline", "disabled"))
        self.log_checkpoints = C.boolean("logger.log_checkpoints", cfg.log_checkpoints)
        run_dir = Path(run_dir).resolve()
        identity = identity or {}
        training = job_type == "train"
        if name is None:
            name = run_name(identity) if identity else run_dir.name
            name = name if training else f"{name} ({job_type})"
        self.wandb = wandb
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            group=cfg.group,
            job_type=job_type,
            name=name,
            id=stable_id(run_dir) if training else None,
            resume="allow" if training else None,
            dir=str(run_dir),
            mode=mode,
            config=config,
            tags=tags(identity, list(cfg.tags)),
            settings=wandb.Settings(silent=C.boolean("logger.silent", cfg.silent)),
        )
        # Training curves against the epoch, not W&B's step counter.
        self.run.define_metric("epoch")
        self.run.define_metric("epoch/*", step_metric="epoch")

    def log_epoch(self, row: dict) -> None:
        self.run.log({f"epoch/{k}": v for k, v in row.items() if k != "epoch"} | {"epoch": row["epoch"]})

    def log_evaluation(self, rows: Sequence[dict], added: Sequence[dict]) -> None:
        """The summary of the evaluated checkpoint (from all its `rows`), and charts of what this
        call `added`: a line per attack run over several budgets (worst case included), and one
        table and bar chart for the attacks run at a single budget."""
        self.run.summary.update(summary(rows))
        curve = [r for r in added if r.get("kind") in (Kind.ROBUSTNESS, Kind.WORST_CASE)]
        if not curve:
            return
        wandb = self.wandb
        columns = ["attack", "eps", "accuracy"]
        logged = {"robustness/table": wandb.Table(columns=columns, data=[[r["attack"], r["eps"], r["accuracy"]] for r in curve])}
        budgets = {}
        for r in curve:
            budgets.setdefault(r["attack"], []).append(r)
        single = [r for attack, points in budgets.items() if len(points) == 1 and attack != WORST_CASE for r in points]
        for attack, points in budgets.items():
            if len(points) > 1:
                table = wandb.Table(columns=["eps", "accuracy"], data=[[r["eps"], r["accuracy"]] for r in points])
                logged[f"robustness/{attack}"] = wandb.plot.line(table, "eps", "accuracy", title=f"accuracy vs eps ({attack})")
        if single:
            table = wandb.Table(columns=["attack (eps)", "accuracy"],
                                data=[[f"{r['attack']} ({eps_key(r['eps'])})", r["accuracy"]] for r in single])
            logged["robustness/single_budget"] = wandb.plot.bar(table, "attack (eps)", "accuracy",
                                                                title="accuracy under attacks run at one eps")
        self.run.log(logged)

    def log_checkpoint(self, path: Path, metadata: Mapping) -> None:
        """The evaluated checkpoint as a `model` artifact (`logger.log_checkpoints=true`)."""
        if not self.log_checkpoints:
            return
        artifact = self.wandb.Artifact(f"model-{self.run.id}", type="model", metadata=dict(metadata))
        artifact.add_file(str(path), name=Path(path).name)
        self.run.log_artifact(artifact, aliases=[Path(path).stem])

    def log_tables(self, tables: Mapping[str, pd.DataFrame]) -> None:
        """Frames as W&B tables under `report/<name>` (a study's side-by-side and claims)."""
        self.run.log({f"report/{name}": self.wandb.Table(dataframe=frame.astype(object).where(frame.notna(), None))
                      for name, frame in tables.items()})

    def log_audit(self, summary: Mapping, figure) -> None:
        """An audit's card (blf.audit, analysis=audit): its numbers as summary keys
        (audit/eps=<e>/...), its figure as an image."""
        self.run.summary.update(dict(summary))
        self.run.log({"audit/figure": self.wandb.Image(figure)})

    def finish(self) -> None:
        self.run.finish()


def start(cfg, config: dict, run_dir: Path, job_type: str, name: str | None = None,
          identity: Mapping | None = None) -> Tracker:
    """The tracker of `logger` (cfg). `identity` (the run's record columns) names and tags the W&B
    run; `name` overrides the name (default: from `identity`, else the run folder's name)."""
    if C.choice("logger", cfg.name, LOGGERS) == "wandb":
        return WandbTracker(cfg, config, run_dir, job_type, name, identity)
    return Tracker()

"""The settings a run's config yields for training and for evaluation, checked: the types the
assembly builds (assembly.py) and the loop and the assessment take (train/loop.py,
eval/assessment.py). They live below all three, so none of those imports another's module for them;
and below eval/: the budget sweep's check is here, not beside the sweep, which imports the attacks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf

from blf import config as C
from blf.data import Augmentation
from blf.nn import precision

ANALYSES = ("operator_norm", "loss_surface", "budget_sweep", "audit")
AUDIT_BUDGETS = ("quick", "standard", "thorough")  # conf/audit.yaml
CHECKPOINTS = ("best", "last")
SELECTION_SPLITS = ("test", "validation")


def budget_sweep(cfg: DictConfig) -> dict:
    """The budget sweep's settings (`analysis.budget_sweep`, eval/budget_sweep.py), checked (one
    line per bad value)."""
    steps = [C.integer("analysis.budget_sweep.steps", s, ge=1) for s in cfg.steps]
    restarts = [C.integer("analysis.budget_sweep.restarts", r, ge=1) for r in cfg.restarts]
    if not steps or not restarts:
        raise C.ConfigError("analysis.budget_sweep.steps and .restarts need at least one value each; allowed: lists of integers >= 1")
    return {"eps": C.number("analysis.budget_sweep.eps", cfg.eps, gt=0),
            "eps_iter": C.number("analysis.budget_sweep.eps_iter", cfg.eps_iter, gt=0),
            "steps": steps, "restarts": restarts,
            "restart_steps": C.integer("analysis.budget_sweep.restart_steps", cfg.restart_steps, ge=1),
            "max_n": C.integer("analysis.budget_sweep.max_n", cfg.max_n, ge=1)}


@dataclass(frozen=True)
class TrainSettings:
    """How `fit` trains. Every field comes from the config and none has a default, so a setting
    cannot be dropped on its way from the config to the loop (assembly.py builds it)."""

    epochs: int
    batch_size: int
    seed: int
    device: torch.device
    amp: str  # precision policy: fp32 | bf16 (precision.py)
    augment: Augmentation | None  # CIFAR-10 crop and flip; None where the dataset has none
    progress: bool


@dataclass(frozen=True)
class EvalSettings:
    """How a checkpoint is evaluated (the `eval` and `analysis` keys, the run's precision
    policy and `progress`); checked when the run is assembled, before any training."""

    checkpoint: str
    selection_split: str
    validation_n: int | None  # training examples held out (selection_split=validation), else None
    selection_eps: tuple[float, ...]  # budgets a selection scores attacks at: the tables' and the training's
    adaptive: bool
    n: int | None
    seed: int
    batch_size: int
    analyses: tuple[str, ...]
    integrity: DictConfig
    loss_surface: DictConfig
    sweep: dict | None  # analysis.budget_sweep, checked
    audit: dict | None  # analysis.audit, checked
    amp: str
    progress: bool

    @classmethod
    def from_config(cls, cfg: DictConfig) -> EvalSettings:
        spec = cfg.eval
        # `analysis=[]` removes the key altogether.
        analyses = tuple(C.choice("analysis", name, ANALYSES) for name in (cfg.get("analysis") or {}))
        if "loss_surface" in analyses:
            surface = spec.loss_surface
            C.choice("eval.loss_surface.split", surface.split, ("train", "test"))
            C.integer("eval.loss_surface.points", surface.points, ge=1)
            C.number("eval.loss_surface.radius", surface.radius, gt=0)
            C.number("eval.loss_surface.step", surface.step, gt=0)
            C.integer("eval.loss_surface.batch_size", surface.batch_size, ge=1)
        # Configs saved before the option existed selected on the test set.
        split = C.choice("eval.selection_split", spec.get("selection_split", "test"), SELECTION_SPLITS)
        threat = cfg.dataset.get("threat") or {}
        return cls(
            checkpoint=C.choice("eval.checkpoint", spec.checkpoint, CHECKPOINTS),
            selection_split=split,
            validation_n=C.integer("eval.validation_n", spec.validation_n, ge=1) if split == "validation" else None,
            selection_eps=tuple(sorted({float(threat[k]) for k in ("table_eps", "eps") if threat.get(k) is not None})),
            adaptive=C.boolean("eval.adaptive", spec.adaptive),
            n=None if spec.n is None else C.integer("eval.n", spec.n, ge=1),
            seed=C.integer("eval.seed", spec.seed),
            batch_size=C.integer("eval.batch_size", spec.batch_size, ge=1),
            analyses=analyses,
            integrity=spec.integrity,
            loss_surface=spec.loss_surface,
            sweep=budget_sweep(cfg.analysis.budget_sweep) if "budget_sweep" in analyses else None,
            audit=audit_settings(cfg.analysis.audit) if "audit" in analyses else None,
            amp=precision.policy(cfg.trainer.amp),
            progress=C.boolean("progress", cfg.progress),
        )


def audit_settings(cfg: DictConfig) -> dict:
    """analysis.audit, checked (one line per bad value)."""
    eps = [C.number("analysis.audit.eps", e, ge=0) for e in (cfg.eps if OmegaConf.is_list(cfg.eps) else [cfg.eps])]
    if not eps:
        raise C.ConfigError("analysis.audit.eps is empty; allowed: a list of numbers >= 0")
    return {"eps": eps, "budget": C.choice("analysis.audit.budget", cfg.budget, AUDIT_BUDGETS),
            "max_n": C.integer("analysis.audit.max_n", cfg.max_n, ge=1)}

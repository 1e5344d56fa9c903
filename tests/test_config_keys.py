"""No dead key: every setting does what it says.

`test_every_key_is_probed_or_inert` enumerates every leaf key of the composed `train` and
`evaluate` configs (every option of every config group, both datasets, every experiment and
profile). Each key must have a probe in PROBES, or be listed in INERT with a reason; a key added
to a config with neither fails the suite, and so does an entry for a key that no longer exists.

A probe runs the app twice, the same command with two values of the key, and shows that what
runs differs. What runs is observed through the apps themselves (`blf.app.train`,
`blf.app.evaluate`, in process): the training metrics, the measured values of the records
(accuracies, per-example outcomes, norms, verdicts and the thresholds they were held to; not the
settings the records echo), and a trace of every forward call of the classifier (train or eval
mode, batch size, autocast, threads, memory format). So a value that is read from the config
and then not passed on (the defect that once kept CIFAR-10 augmentation, `trainer.amp` and
`trainer.compile` out of training) cannot pass. Logger keys are observed where they arrive
(`wandb.init`), study keys through the study driver's plan, selection and report.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import io
import itertools
import json
import shutil
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
import torch
import torchvision
import yaml
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from blf import app, assembly, console, data
from blf.eval import attacks
from blf.nn import heads, models, regularizers
from blf.run import storage
from blf.study import driver, spec
from blf.train import objectives
from conftest import CONF, TINY, as_overrides, attack_members, compose_config

OTHER_RUN = "<another trained run>"  # the evaluate app's other trained run, as run_dir or as a value


@dataclass(frozen=True)
class Probe:
    """Two commands that differ in one key: `a` (default: the base command) and `b`.

    `a` and `b` are the key's value, or a dict of overrides when a key is switched by others
    (an analysis by the `analysis` list). `context` holds overrides of both commands; a value of
    None there drops an override of the base command (so that an interpolation can act).
    `offline` makes both commands meet a network that fails at once."""

    app: str  # "train", "evaluate", "wandb", "console" or "study"
    b: object
    a: object = None
    context: dict = field(default_factory=dict)
    offline: bool = False
    fails: bool = False  # the base command is meant to fail (no data), the other one differently or not


@dataclass(frozen=True)
class Covered:
    """A key whose liveness is shown by a dedicated test (named as pytest names it)."""

    test: str


def P(app_name: str, b, a=None, offline: bool = False, fails: bool = False, **context) -> Probe:
    return Probe(app_name, b, a, context, offline, fails)


def probes(prefix: str, app_name: str, context: dict, **values) -> dict[str, Probe]:
    """Keys of one section probed in the same context: `prefix.key` set to each value."""
    return {f"{prefix}.{key}": P(app_name, value, **context) for key, value in values.items()}


def many(*probes: Probe) -> tuple[Probe, ...]:
    """A key read by several options of a group: one probe per option."""
    return probes


# Options used by several probes.
PGD_AT = {"training": "pgd_at", "training.nb_iter": 2}
TRADES = {"training": "trades", "training.nb_iter": 2}
CIFAR = {"dataset": "cifar10", "model": "resnet18", "model.width": 4, "model.blocks": "[1,1,1,1]",
         "dataset.synthetic_train": 32, "dataset.synthetic_test": 16, "trainer.batch_size": 16}
# A library's model (nn/zoo.py): timm's smallest ResNet, or a small torchvision one.
ZOO = {**CIFAR, "model": "timm", "model.arch": "test_resnet", "model.width": None, "model.blocks": None}
TORCHVISION = {**ZOO, "model": "torchvision", "model.arch": "mobilenet_v3_small"}
WRN = {**CIFAR, "model": "wrn34_10", "model.depth": 10, "model.widen_factor": 1, "model.width": None,
       "model.blocks": None}
TWO_EPOCHS = {"trainer.epochs": 2}
# A model that classifies most test images (attacks that skip broken examples then have work).
LEARNS = {"optim.lr": 0.05, "optim.momentum": 0.9, "dataset.synthetic_train": 512}
NO_DATA = {"dataset.synthetic": False, "dataset.root": "/nonexistent/blf-data", "dataset.download": False}
INTEGRITY = {"eval.integrity.enabled": True}
SQUARE = {"attack": "[pgd,square]", "attack.square.n_queries": 20, "attack.square.eps": "[0.1]", **INTEGRITY}
SURFACE = {"analysis": "[loss_surface]", "eval.loss_surface.points": 2, "eval.loss_surface.radius": 0.1,
           "eval.loss_surface.step": 0.05}
AUDIT = {"analysis": "[audit]", "analysis.audit.budget": "quick", "analysis.audit.max_n": 8, "analysis.audit.eps": "[0.05]"}
SWEEP = {"analysis": "[budget_sweep]", "analysis.budget_sweep.steps": "[1,2]", "analysis.budget_sweep.restarts": "[1,2]",
         "analysis.budget_sweep.restart_steps": 2, "analysis.budget_sweep.max_n": 8}


def attack_probes(name: str, context: dict) -> dict:
    """The keys every PGD-like attack has."""
    return {
        f"attack.{name}.eps": P("evaluate", "[0.0,0.05]", **context),
        f"attack.{name}.eps_iter": P("evaluate", 0.05, **context),
        f"attack.{name}.nb_iter": P("evaluate", 5, **context),
        f"attack.{name}.rand_init": P("evaluate", False, **context),
        f"attack.{name}.restarts": P("evaluate", 3, **context),
        f"attack.{name}.targeted": P("evaluate", True, **context),
        f"attack.{name}.target": P("evaluate", "least_likely", **{**context, f"attack.{name}.targeted": True}),
        f"attack.{name}.implementation": P("evaluate", "advertorch", **context),
    }


ATTACK_PGD = {"attack": "[pgd]"}
ATTACK_SURROGATE = {"attack": "[pgd_tanh_surrogate]", "attack.pgd_tanh_surrogate.nb_iter": 2,
                    "attack.pgd_tanh_surrogate.eps": "[0.0,0.1,0.2]"}
ATTACK_SPSA = {"attack": "[spsa]", "attack.spsa.nb_iter": 2, "attack.spsa.nb_sample": 16, "attack.spsa.eps": "[0.2]",
               "attack.spsa.max_batch_size": 16, "attack.spsa.batch_size": 8}
ATTACK_SQUARE = {"attack": "[square]", "attack.square.n_queries": 20, "attack.square.eps": "[0.1]"}
ATTACK_APGD = {"attack": "[apgd_ce]", "attack.apgd_ce.n_iter": 5, "attack.apgd_ce.n_restarts": 1,
               "attack.apgd_ce.eps": "[0.1]"}
ATTACK_APGD_T = {"attack": "[apgd_t]", "attack.apgd_t.n_iter": 5, "attack.apgd_t.n_restarts": 1,
                 "attack.apgd_t.n_target_classes": 2, "attack.apgd_t.eps": "[0.1]"}
# At a budget that breaks every example quickly, AutoAttack stops after its first attack.
ATTACK_AA = {"attack": "[autoattack]", "attack.autoattack.eps": "[0.3]", "eval.n": 8}
# The options that are one attack each (not a set of them, as `adaptive` is), and the adaptive set.
ATTACK_NAMES = sorted(p.stem for p in (CONF / "attack").glob("*.yaml") if attack_members(p.stem) == [p.stem])
ADAPTIVE_SET = attack_members("adaptive")
# The adaptive options (eval/attacks/{surrogate,margin,transfer}.py): PGD with another loss or
# crafting model, each alone at one eps and 2 iterations; transfer crafts on the other trained run.
ADAPTIVE_OPTIONS = ("bpda_envelope", "bpda_tanh", "bpda_identity", "pgd_cw", "pgd_dlr", "pgd_cw_prelogits",
                    "pgd_dlr_prelogits", "prelogit_targeted", "transfer")
ATTACK_ADAPTIVE = {name: {"attack": f"[{name}]", f"attack.{name}.nb_iter": 2, f"attack.{name}.eps": "[0.1]", "eval.n": 16,
                          **({"attack.transfer.source": OTHER_RUN} if name == "transfer" else {})}
                   for name in ADAPTIVE_OPTIONS}
# The whole set (conf/attack/adaptive.yaml), each member as cheap as above.
ADAPTIVE = {"attack": "[adaptive]", "eval.n": 16,
            **{k: v for name in ADAPTIVE_SET for k, v in ATTACK_ADAPTIVE[name].items() if k.startswith("attack.")}}


def adaptive_probes(name: str) -> dict:
    """The keys every adaptive option has (PGD's, less targeting and the implementation)."""
    context = ATTACK_ADAPTIVE[name]
    return probes(f"attack.{name}", "evaluate", context, eps="[0.05]", eps_iter=0.05, nb_iter=3, rand_init=False, restarts=2)


# Studies with a small grid (the report draws every run), on made-up records (fake_records).
FIG3 = {"experiment": "fig3", "profile": "paper", "study.grid": {
    "blf": {"dataset": "mnist", "model": "2c2f,4c3f", "training": "standard,pgd_at", "head": "blf", "head.gamma": "0.5,1.0,3.5"}}}
CIFAR_STUDY = {"experiment": "fig4", "profile": "paper", "study.grid": {
    "blf": {"dataset": "cifar10", "model": "resnet18", "training": "standard", "head": "blf", "head.gamma": "0.5,1.0"}}}

PROBES: dict[str, Probe | Covered | tuple[Probe, ...]] = {
    # dataset (data.py) and its threat model (read by the training and attack configs)
    "dataset.name": P("train", "cifar10"),
    "dataset.root": P("train", "/nonexistent/other", fails=True, **NO_DATA),
    "dataset.download": P("train", True, offline=True, fails=True, **NO_DATA),
    "dataset.n_train": P("train", 64),
    "dataset.synthetic": P("train", False, **{k: v for k, v in NO_DATA.items() if k != "dataset.synthetic"}),
    "dataset.synthetic_seed": P("train", 1),
    "dataset.synthetic_train": P("train", 96),
    "dataset.synthetic_test": P("train", 48),
    "dataset.augment.crop_padding": P("train", 0, **CIFAR),
    "dataset.augment.flip": P("train", False, **CIFAR),
    "dataset.threat.eps": P("train", 0.1, **PGD_AT),
    "dataset.threat.pgd_at.nb_iter": P("train", 3, 2, **{**PGD_AT, "training.nb_iter": None}),
    "dataset.threat.pgd_at.eps_iter": P("train", 0.05, **PGD_AT),
    "dataset.threat.trades.nb_iter": P("train", 3, 2, **{**TRADES, "training.nb_iter": None}),
    "dataset.threat.trades.eps_iter": P("train", 0.05, **TRADES),
    "dataset.threat.eval_eps": P("train", "[0.0,0.2]", **{"attack.pgd.eps": None}),
    "dataset.threat.pgd_eval.nb_iter": P("train", 3, **{"attack.pgd.nb_iter": None}),
    "dataset.threat.pgd_eval.eps_iter": P("train", 0.05),
    "dataset.threat.table_eps": P("train", 0.3, **{**SQUARE, "attack.square.eps": None}),
    "dataset.threat.spsa.nb_iter": P("train", 3, **{**ATTACK_SPSA, "attack.spsa.nb_iter": None}),
    "dataset.threat.spsa.nb_sample": P("train", 32, **{**ATTACK_SPSA, "attack.spsa.nb_sample": None}),
    "dataset.threat.square.n_queries": P("train", 40, **{**ATTACK_SQUARE, "attack.square.n_queries": None}),
    "dataset.threat.apgd.n_iter": P("train", 7, **{**ATTACK_APGD, "attack.apgd_ce.n_iter": None}),
    "dataset.threat.apgd.n_restarts": P("train", 2, **{**ATTACK_APGD, **LEARNS, "attack.apgd_ce.n_restarts": None}),
    "dataset.threat.apgd_t.n_target_classes": P("train", 3, **{**ATTACK_APGD_T, **LEARNS,
                                                                "attack.apgd_t.n_target_classes": None}),
    **probes("dataset.threat.adaptive", "train", {"attack": "[bpda_tanh]", "attack.bpda_tanh.eps": "[0.1]"},
             eps_iter=0.05, restarts=2),
    "dataset.threat.adaptive.nb_iter": P("train", 3, 2, **{"attack": "[bpda_tanh]", "attack.bpda_tanh.eps": "[0.1]"}),
    "dataset.threat.adaptive.n_target_classes": P("train", 2, **{**ATTACK_ADAPTIVE["prelogit_targeted"],
                                                                 "attack.prelogit_targeted.n_target_classes": None}),
    "dataset.threat.unbounded_eps": P("train", 0.05, **INTEGRITY),
    # model (nn/models.py, nn/resnet.py, nn/wide_resnet.py) and its appendix B.2 recipes
    "model.name": P("train", "4c3f"),
    **probes("model", "train", CIFAR, width=8, blocks="[1,1,1,2]"),
    **probes("model", "train", WRN, depth=16, widen_factor=2, dropout=0.3, init="trades"),
    "model.arch": many(P("train", "test_convnext", **ZOO), P("train", "squeezenet1_1", **TORCHVISION)),
    "model.small_stem": many(P("train", False, **ZOO), P("train", False, **TORCHVISION)),
    "model.kwargs": many(P("train", "{drop_rate:0.5}", **ZOO), P("train", "{dropout:0.5}", **TORCHVISION)),
    **{f"model.recipe.{regime}.{key}": P("train", b, a, **{**context, **(PGD_AT if regime == "adversarial" else {})})
       for regime in ("standard", "adversarial")
       for key, b, a, context in (
           ("epochs", 2, 1, {"trainer.epochs": None}),
           ("batch_size", 32, None, {"trainer.batch_size": None}),
           ("lr", 0.05, None, {}),
           ("momentum", 0.9, None, {}),
           ("weight_decay", 0.5, None, {}),
           ("milestones", "[1]", None, TWO_EPOCHS))},
    # head (nn/heads.py)
    "head.name": P("train", "tanh", head="blf"),
    "head.gamma": many(*(P("train", 3.0, head=h) for h in ("blf", "tanh", "sigmoid", "sine", "single_wave"))),
    "head.gamma_tilde_init": P("train", 1.0, head="lblf"),
    # regularizer (nn/regularizers.py)
    "regularizer.name": P("train", "none", regularizer="logit_squeezing"),
    "regularizer.lam": P("train", 0.5, regularizer="logit_squeezing"),
    "regularizer.alpha": P("train", 0.5, regularizer="label_smoothing"),
    # training mode (train/objectives.py)
    "training.name": P("train", "standard", **PGD_AT),
    "training.regime": P("train", "adversarial", **{"model.recipe.adversarial.lr": 0.05}),
    "training.eps": many(P("train", 0.01, **PGD_AT), P("train", 0.01, **TRADES)),
    "training.nb_iter": many(P("train", 3, **PGD_AT), P("train", 3, **TRADES)),
    "training.eps_iter": many(P("train", 0.05, **PGD_AT), P("train", 0.05, **TRADES)),
    "training.beta": P("train", 1.0, **TRADES),
    "training.init_std": P("train", 0.1, **TRADES),
    # the loop (train/loop.py), the optimiser and its schedule
    "trainer.epochs": P("train", 2),
    "trainer.batch_size": P("train", 16),
    "trainer.threads": P("train", lambda: torch.get_num_threads() + 1),
    "trainer.channels_last": P("train", False),
    "trainer.amp": P("train", "bf16"),
    "trainer.compile": Covered("tests/test_apps.py::test_compile_is_applied_to_the_training_steps"),
    "trust_code": Covered("tests/test_hostile.py::test_evaluate_refuses_a_foreign_class_and_the_opt_in_imports_it"),
    # the class each option builds (`_target_`): what the assembly builds follows it
    **{key: Covered("tests/test_config_keys.py::test_every_target_names_the_class_the_assembly_builds") for key in (
        "model._target_", "head._target_", "regularizer._target_", "training._target_",
        *(f"attack.{name}._target_" for name in ATTACK_NAMES))},
    "optim._target_": P("train", "torch.optim.RMSprop"),
    "optim._partial_": P("train", False),
    "optim.lr": P("train", 0.05),
    "optim.momentum": P("train", 0.9),
    "optim.weight_decay": P("train", 0.5),
    "scheduler._target_": P("train", "torch.optim.lr_scheduler.StepLR"),
    "scheduler._partial_": P("train", False),
    "scheduler.milestones": P("train", "[1]", **TWO_EPOCHS),
    "scheduler.gamma": P("train", 0.5, **TWO_EPOCHS, **{"scheduler.milestones": "[1]"}),
    # top level
    "seed": P("train", 1),
    "device": P("train", "cuda:0" if not torch.cuda.is_available() else "cpu"),
    "progress": P("console", False, True),
    "paths.data_dir": P("train", "/nonexistent/other", "/nonexistent/blf-data", fails=True,
                        **{**NO_DATA, "dataset.root": None}),
    "experiment_name": P("train", "another"),
    "profile_name": P("train", "another"),
    "run_dir": P("evaluate", {"run_dir": OTHER_RUN}),
    # attacks (eval/attacks/), evaluated on a trained run by the evaluate app
    **attack_probes("pgd", ATTACK_PGD),
    **attack_probes("pgd_tanh_surrogate", ATTACK_SURROGATE),
    **probes("attack.spsa", "evaluate", ATTACK_SPSA, eps="[0.3]", delta=0.2, lr=0.2, nb_iter=3, nb_sample=32, max_batch_size=8,
             batch_size=4),
    **probes("attack.square", "evaluate", ATTACK_SQUARE, eps="[0.2]", n_queries=40, p_init=0.1, n_restarts=2, loss="ce", seed=1),
    **{f"attack.{name}.{key}": P("evaluate", b, **context)
       for name, context in (("apgd_ce", ATTACK_APGD), ("apgd_t", ATTACK_APGD_T))
       for key, b in (("eps", "[0.2]"), ("n_iter", 8), ("seed", 1))},
    # Restarts run only on examples the first run did not break: at a small budget.
    **{f"attack.{name}.n_restarts": P("evaluate", 2, **{**context, f"attack.{name}.eps": "[0.02]"})
       for name, context in (("apgd_ce", ATTACK_APGD), ("apgd_t", ATTACK_APGD_T))},
    **{f"attack.{name}.rho": P("evaluate", 0.1, **{**context, f"attack.{name}.n_iter": 20})
       for name, context in (("apgd_ce", ATTACK_APGD), ("apgd_t", ATTACK_APGD_T))},
    "attack.apgd_t.n_target_classes": P("evaluate", 4, **ATTACK_APGD_T),
    "attack.autoattack.eps": P("evaluate", "[0.25]", **ATTACK_AA),
    "attack.autoattack.version": P("evaluate", "rand", **ATTACK_AA),
    "attack.autoattack.seed": P("evaluate", 1, **ATTACK_AA),
    # the adaptive attacks (eval/attacks/surrogate.py, margin.py, transfer.py) and their set
    **{key: probe for name in ADAPTIVE_OPTIONS for key, probe in adaptive_probes(name).items()},
    **{f"attack.{name}.surrogate": P("evaluate", b, **ATTACK_ADAPTIVE[name])
       for name, b in (("bpda_envelope", "tanh"), ("bpda_tanh", "identity"), ("bpda_identity", "envelope"))},
    **{f"attack.{name}.{key}": P("evaluate", b, **ATTACK_ADAPTIVE[name])
       for name, loss, outputs in (("pgd_cw", "dlr", "prelogits"), ("pgd_dlr", "cw", "prelogits"),
                                   ("pgd_cw_prelogits", "dlr", "logits"), ("pgd_dlr_prelogits", "cw", "logits"))
       for key, b in (("loss", loss), ("outputs", outputs))},
    "attack.prelogit_targeted.n_target_classes": P("evaluate", 1, **ATTACK_ADAPTIVE["prelogit_targeted"]),
    # auto finds no Baseline beside the evaluated (BLF) run: transfer is then not run
    "attack.transfer.source": P("evaluate", OTHER_RUN, "auto", **ATTACK_ADAPTIVE["transfer"]),
    "attack.transfer.checkpoint": P("evaluate", "last", **ATTACK_ADAPTIVE["transfer"]),
    # eval.adaptive=false leaves out the members of the set, and only those
    **{f"attack.{name}.in_adaptive_set": P("evaluate", False, **{**ADAPTIVE, "eval.adaptive": False})
       for name in ADAPTIVE_SET},
    # analyses (operator_norm.py, loss_surface.py, budget_sweep.py)
    "analysis.operator_norm": P("evaluate", {"analysis": "[operator_norm]"}, {"analysis": "[]"}),
    "analysis.loss_surface": P("evaluate", {"analysis": "[loss_surface]"}, {"analysis": "[]"}),
    **probes("analysis.audit", "evaluate", AUDIT, eps="[0.1]", budget="standard", max_n=4),
    **probes("analysis.budget_sweep", "evaluate", SWEEP, eps=0.05, eps_iter=0.05, steps="[1,3]", restarts="[1,3]",
             restart_steps=3, max_n=4),
    # evaluation settings (eval group: eval/robustness.py, eval/assessment.py, eval/integrity.py)
    "eval.n": P("evaluate", 16),
    "eval.seed": P("evaluate", 1),
    "eval.batch_size": P("evaluate", 8),
    "eval.checkpoint": P("evaluate", "last"),
    # the validation split changes the training set, the checkpoint chosen and the records
    "eval.selection_split": P("train", "validation", **{"eval.validation_n": 32}),
    "eval.validation_n": P("train", 48, 32, **{"eval.selection_split": "validation"}),
    "eval.adaptive": P("evaluate", False, **ADAPTIVE),
    **probes("eval.loss_surface", "evaluate", SURFACE, points=3, split="test", radius=0.2, step=0.1, seed=1, batch_size=4),
    "eval.loss_surface.clip": P("evaluate", True, **{**SURFACE, "eval.loss_surface.radius": 0.5}),
    "eval.integrity.enabled": P("evaluate", False, **INTEGRITY),
    "eval.integrity.monotonic_tolerance": P("evaluate", 3.0, **INTEGRITY),
    "eval.integrity.precision_tolerance": P("train", 3.0, **INTEGRITY, **{"trainer.amp": "bf16"}),
    "eval.integrity.unbounded.eps": P("evaluate", 0.05, **INTEGRITY),
    "eval.integrity.unbounded.nb_iter": P("evaluate", 3, **INTEGRITY),
    "eval.integrity.unbounded.eps_iter": P("evaluate", 0.001, **INTEGRITY),
    "eval.integrity.unbounded.max_accuracy": P("evaluate", 50.0, **INTEGRITY),
    "eval.integrity.convergence.iter_factor": P("evaluate", 3, **INTEGRITY),
    "eval.integrity.convergence.restarts": P("evaluate", 3, **INTEGRITY),
    "eval.integrity.convergence.tolerance": P("evaluate", 9.0, **INTEGRITY),
    "eval.integrity.convergence.max_n": P("evaluate", 8, **INTEGRITY),
    "eval.integrity.convergence.step_factors": P("evaluate", "[0.5]", **INTEGRITY),
    # Square where no gradient-free attack ran at PGD's largest eps
    "eval.integrity.gradient_free.n_queries": P("evaluate", 40, **INTEGRITY),
    "eval.integrity.gradient_free.max_n": P("evaluate", 8, **INTEGRITY),
    "eval.integrity.saturation.max_share": P("evaluate", 50.0, **INTEGRITY),
    "eval.integrity.saturation.max_n": P("evaluate", 8, **INTEGRITY),
    "eval.integrity.attack_gap_tolerance": P("evaluate", 50.0, **{**INTEGRITY, **ATTACK_ADAPTIVE["pgd_dlr_prelogits"],
                                                                  "attack": "[pgd,pgd_dlr_prelogits]"}),
    # W&B (run/tracking.py): observed where the values arrive, wandb.init
    "logger.name": P("wandb", "none"),
    "logger.project": P("wandb", "another"),
    "logger.entity": P("wandb", "someone"),
    "logger.mode": P("wandb", "disabled"),
    "logger.group": P("wandb", "another"),
    "logger.tags": P("wandb", "[a]"),
    "logger.silent": P("wandb", False),
    "logger.log_checkpoints": P("wandb", True),
    # studies (conf/driver.yaml, conf/study/; blf.study): the driver's plan, selection and report
    "limits": P("study", {"limits": {"paper": {"grid_values": 1, "seeds": 1}, "smoke": {"grid_values": 2, "seeds": 1}}}, **FIG3),
    "study.grid": P("study", {"study.grid": {"baseline": {"model": "2c2f", "training": "standard"}}}, **FIG3),
    "study.seeds": P("study", "[0,1]", **FIG3),
    "study.title": P("study", "another", **FIG3),
    "study.report": P("study", "operator_norms", **FIG3),
    "study.facets": P("study", "[model]", **FIG3),
    "study.select": P("study", "none", **FIG3),
    "study.select_eps": P("study", {"study.select_eps": {"mnist": 0.1}}, **FIG3),
    "study.select_attacks": P("study", "[square]", **{**FIG3, "experiment": "table1"}),
    "study.transfer": P("study", {"study.transfer": {}}, **CIFAR_STUDY),
    "study.norm_eps": P("study", 0.0313725490, **{**CIFAR_STUDY, "experiment": "fig1"}),
    "study.compare": P("study", "[2]", **{**FIG3, "experiment": "table4"}),
    "study.also_seeded": P("study", {"study.also_seeded": {"blf_1_5": {"head": "blf", "head.gamma": "1.5"}}}, **FIG3),
}

INERT: dict[str, str] = {}

# Subtrees that are one value to the code that reads them (a grid, a per-dataset mapping).
VALUES = ("study.grid", "study.seeds", "study.select_eps", "study.transfer", "study.also_seeded", "limits")
LIST_GROUPS = ("attack", "analysis")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def leaves(node, prefix: str = "") -> set[str]:
    if prefix.rstrip(".") in VALUES or not isinstance(node, DictConfig):
        return {prefix.rstrip(".")}
    if len(node) == 0:
        return {prefix.rstrip(".")}  # an option selected by its presence (analysis=[loss_surface])
    return set().union(*(leaves(node._get_node(k), f"{prefix}{k}.") for k in node.keys()))


def every_key() -> set[str]:
    """Every leaf key of the composed train, evaluate and driver configs (Hydra's own `hydra.*` aside)."""
    from hydra import compose, initialize_config_dir

    keys = set()
    groups = ["model", "head", "regularizer", "training", "attack", "analysis", "eval", "logger", "experiment", "profile"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):  # once: compose_config's, many times
        # A list group's options all at once: each adds only its own keys.
        every = [f"{group}=[{','.join(options(group))}]" for group in LIST_GROUPS]
        for dataset in options("dataset"):
            keys |= leaves(compose("train", overrides=[f"dataset={dataset}", *every]))
            for group in groups:
                for option in options(group) if group not in LIST_GROUPS else ():
                    keys |= leaves(compose("train", overrides=[f"dataset={dataset}", f"{group}={option}"]))
        keys |= leaves(compose("evaluate", overrides=["run_dir=x", *every]))
        for group in ["eval", "logger"]:
            for option in options(group):
                keys |= leaves(compose("evaluate", overrides=["run_dir=x", f"{group}={option}"]))
        for study in options("study"):  # the study driver's config: a spec and the profiles' limits
            keys |= leaves(compose("driver", overrides=[f"study={study}"]))
    return keys


def unaccounted(keys: set[str]) -> list[str]:
    return sorted(keys - set(PROBES) - set(INERT))


def test_every_key_is_probed_or_inert():
    keys = every_key()
    missing = unaccounted(keys)
    assert not missing, f"config keys with neither a probe (PROBES) nor a reason to be inert (INERT): {missing}"
    stale = sorted((set(PROBES) | set(INERT)) - keys)
    assert not stale, f"PROBES/INERT name keys that no config has: {stale}"
    assert not set(PROBES) & set(INERT)


def test_covered_keys_name_existing_tests():
    for key, probe in PROBES.items():
        if isinstance(probe, Covered):
            path, name = probe.test.split("::")
            assert f"def {name}(" in (CONF.parent / path).read_text(), (key, probe.test)


# The PGD keys every adaptive option shares go through one path (PGD.pgd_arguments): probed fast
# on one option, on the others under `make test-all` (keeping `make test` near 10 minutes).
SHARED_ADAPTIVE_KEYS = {f"attack.{name}.{key}" for name in ADAPTIVE_OPTIONS if name != "bpda_envelope"
                        for key in ("eps", "eps_iter", "nb_iter", "rand_init", "restarts", "in_adaptive_set")}


def cases(*apps: str):
    for key, entry in PROBES.items():
        for i, probe in enumerate(entry if isinstance(entry, tuple) else (entry,)):
            if isinstance(probe, Probe) and probe.app in apps:
                marks = [pytest.mark.slow] if key in SHARED_ADAPTIVE_KEYS else []
                yield pytest.param(key, probe, id=f"{key}[{i}]" if isinstance(entry, tuple) else key, marks=marks)


# --- observing what runs ---------------------------------------------------------------------

# The train app's base command: tiny and quick; probes add to it or drop from it.
TRAIN_BASE = {
    "dataset.synthetic": True, "dataset.synthetic_train": 128, "dataset.synthetic_test": 32, "trainer.epochs": 1,
    "eval.n": 16, "eval.batch_size": 16, "attack.pgd.nb_iter": 2, "attack.pgd.eps": "[0.0,0.1]",
    "eval.integrity.enabled": False, "eval.integrity.unbounded.nb_iter": 5, "eval.integrity.convergence.iter_factor": 2,
    "eval.integrity.convergence.restarts": 2, "eval.integrity.convergence.max_n": 16,
    "eval.integrity.gradient_free.n_queries": 20, "eval.integrity.gradient_free.max_n": 16,
    "eval.integrity.saturation.max_n": 16, "analysis": "[]", "logger": "none", "progress": False,
}
# The evaluate app's base command, on a run trained by `trained_runs`.
EVALUATE_BASE = {
    "logger": "none", "progress": False, "eval.n": 32, "eval.batch_size": 16, "attack": "[pgd]",
    "attack.pgd.nb_iter": 3, "attack.pgd.eps": "[0.0,0.1,0.2]", "analysis": "[]", "eval.integrity.enabled": False,
    "eval.integrity.unbounded.nb_iter": 5, "eval.integrity.convergence.iter_factor": 2,
    "eval.integrity.convergence.restarts": 2, "eval.integrity.convergence.max_n": 16,
    "eval.integrity.gradient_free.n_queries": 20, "eval.integrity.gradient_free.max_n": 16,
    "eval.integrity.saturation.max_n": 16,
}
# Record columns that echo settings, say where or when, or identify: not measurements.
NOT_MEASURED = {"experiment", "profile", "dataset", "n_train", "model", "seed", "epochs", "run_key", "head", "gamma",
                "regularizer", "lam", "alpha", "training", "beta", "synthetic", "checkpoint", "n", "eval_seed",
                "schema_version", "code_commit", "code_dirty", "trained_schema_version", "trained_code_commit",
                "trained_code_dirty", "augmented", "threads", "cpu_capability", "evaluated_at", "run_dir", "seconds", "detail",
                "per_example", "arrays", "radius", "step", "surface_seed", "clip"}


def command(base: dict, probe: Probe, key: str, side: str) -> dict:
    value = probe.b if side == "b" else probe.a
    overrides = {**base, **probe.context}
    if isinstance(value, dict):
        overrides.update(value)
    elif value is not None:
        overrides[key] = value() if callable(value) else value
    return {k: v for k, v in overrides.items() if v is not None}


@contextlib.contextmanager
def traced(monkeypatch):
    """Record every forward call of a classifier: what runs, beyond what is recorded."""
    trace = []
    forward, both = models.Classifier.forward, models.Classifier.prelogits_and_logits
    native = attacks.pgd_module.pgd

    def seen(self, x, call: str):
        layout = tuple(p.is_contiguous(memory_format=torch.channels_last) for p in self.parameters() if p.dim() == 4)
        # The input's sum stands for the input: attack settings change the examples even where
        # they do not change an outcome.
        trace.append((call, self.training, torch.is_grad_enabled(), tuple(x.shape), float(x.detach().double().sum()),
                      torch.is_autocast_enabled(x.device.type), torch.get_num_threads(), layout))

    def spy(self, x):
        seen(self, x, "forward")
        return forward(self, x)

    def spy_both(self, x):  # the margin attacks and checks read the pre-logits too
        seen(self, x, "prelogits_and_logits")
        return both(self, x)

    def native_pgd(*args, **kwargs):
        trace.append("native pgd")
        return native(*args, **kwargs)

    monkeypatch.setattr(models.Classifier, "forward", spy)
    monkeypatch.setattr(models.Classifier, "prelogits_and_logits", spy_both)
    monkeypatch.setattr(attacks.pgd_module, "pgd", native_pgd)
    yield trace
    monkeypatch.undo()


def measured(run_dir: Path, rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        kept = {k: v for k, v in row.items() if k not in NOT_MEASURED and not k.startswith("attack.")}
        if row.get("per_example"):
            kept["outcome"] = storage.load_tensors(run_dir / row["per_example"])["correct"].tolist()
        out.append(kept)
    return out


def error(exc: Exception, run_dir: Path) -> dict:
    return {"error": type(exc).__name__, "message": str(exc).replace(str(run_dir), "<run>")}


@contextlib.contextmanager
def offline_network(monkeypatch):
    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torchvision.datasets, "MNIST", unreachable)
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", unreachable)
    monkeypatch.setattr(data, "mnist_from_wheel", unreachable)
    yield


def observe_train(overrides: dict, run_dir: Path, monkeypatch, offline: bool) -> dict:
    with contextlib.ExitStack() as stack:
        if offline:
            stack.enter_context(offline_network(monkeypatch))
        trace = stack.enter_context(traced(monkeypatch))
        try:
            outcome = app.train(compose_config("train", as_overrides(overrides)), run_dir)
        except Exception as exc:  # noqa: BLE001 - a refused value is behaviour too
            return error(exc, run_dir)
    metrics = [{k: v for k, v in m.items() if k not in ("seconds", "images_per_second")} for m in outcome.progress.history]
    labels = sorted({(r.get("experiment"), r.get("profile")) for r in outcome.rows})
    return {"metrics": metrics, "measured": measured(run_dir, outcome.added), "trace": trace, "labels": labels}


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    """Two trained runs (seeds 0 and 1) whose best checkpoint (epoch 3) is not their last (4)."""
    runs = {}
    for seed in (0, 1):
        folder = tmp_path_factory.mktemp(f"trained{seed}")
        recipe = ["head=blf", "head.gamma=3.5", "dataset.synthetic=true", "dataset.synthetic_train=4000",
                  "dataset.synthetic_test=64", "optim.lr=0.05", "optim.momentum=0.9", "logger=none", "progress=false",
                  "attack=[]", "analysis=[]", f"seed={seed}"]
        app.train(compose_config("train", [*recipe, "trainer.epochs=3"]), folder / "one")
        app.train(compose_config("train", [*recipe, "trainer.epochs=4"]), folder / "run")
        # The run as if epoch 3 had had the best accuracy: its own epoch-3 checkpoint as best.pt.
        shutil.copy(folder / "one" / "checkpoints" / "best.pt", folder / "run" / "checkpoints" / "best.pt")
        runs[seed] = folder / "run"
    return runs


def observe_evaluate(overrides: dict, runs: dict, workdir: Path, monkeypatch) -> dict:
    source = runs[1] if overrides.pop("run_dir", None) == OTHER_RUN else runs[0]
    overrides = {k: str(runs[1]) if v == OTHER_RUN else v for k, v in overrides.items()}
    run_dir = workdir / f"copy{len(list(workdir.iterdir()))}"
    shutil.copytree(source, run_dir)
    with traced(monkeypatch) as trace:
        try:
            outcome = app.evaluate(compose_config("evaluate", [f"run_dir={run_dir}", *as_overrides(overrides)]), run_dir)
        except Exception as exc:  # noqa: BLE001
            return error(exc, run_dir)
    return {"measured": measured(run_dir, outcome.added), "trace": trace}


# What a command observed, by command: the same command runs the same (same config, same seed, same
# machine), and observations hold no paths, so the base command that most probes share runs once.
OBSERVED: dict[str, dict] = {}


def once(observe, overrides: dict, *args, tag=()) -> dict:
    key = json.dumps([observe.__name__, overrides, *tag], sort_keys=True, default=str)
    if key not in OBSERVED:
        OBSERVED[key] = observe(dict(overrides), *args)
    return copy.deepcopy(OBSERVED[key])


@pytest.mark.parametrize("key, probe", list(cases("train")))
def test_train_key_changes_what_runs(key, probe, tmp_path, monkeypatch):
    a = once(observe_train, command(TRAIN_BASE, probe, key, "a"), tmp_path / "a", monkeypatch, probe.offline,
             tag=(probe.offline,))
    b = observe_train(command(TRAIN_BASE, probe, key, "b"), tmp_path / "b", monkeypatch, probe.offline)
    assert a != b, f"{key}: the two values ran the same"
    # A command Hydra cannot compose shows nothing about the key.
    assert b.get("error") != "ConfigCompositionException", b
    # The base command itself runs, or fails as a probe without data intends.
    assert ("error" in a) == probe.fails, a
    assert not probe.fails or a["error"] == "DataError", a


@pytest.mark.parametrize("key, probe", list(cases("evaluate")))
def test_evaluate_key_changes_what_runs(key, probe, trained_runs, tmp_path, monkeypatch):
    a = once(observe_evaluate, command(EVALUATE_BASE, probe, key, "a"), trained_runs, tmp_path, monkeypatch)
    b = observe_evaluate(command(EVALUATE_BASE, probe, key, "b"), trained_runs, tmp_path, monkeypatch)
    assert "error" not in a and "error" not in b, (a, b)
    assert a != b, f"{key}: the two values ran the same"


# --- keys observed elsewhere -----------------------------------------------------------------


class FakeRun:
    """What wandb.init returns, keeping the artifacts logged to it in `calls`."""

    id = "fake"

    def __init__(self, calls: list):
        self.summary, self.calls = {}, calls

    def log(self, *args, **kwargs):
        pass

    def define_metric(self, *args, **kwargs):
        pass

    def log_artifact(self, artifact, aliases=()):
        self.calls.append({"artifact": artifact.type, "files": sorted(artifact.manifest.entries), "aliases": list(aliases)})

    def finish(self):
        pass


@pytest.mark.parametrize("key, probe", list(cases("wandb")))
def test_logger_key_reaches_wandb(key, probe, tmp_path, monkeypatch):
    import wandb

    monkeypatch.delenv("WANDB_MODE", raising=False)  # the Makefile's WANDB_MODE would hide logger.mode

    def observe(side):
        calls = []
        monkeypatch.setattr(wandb, "init", lambda **kwargs: calls.append(kwargs) or FakeRun(calls))
        overrides = command({**TRAIN_BASE, "logger": "wandb"}, probe, key, side)
        app.train(compose_config("train", as_overrides(overrides)), tmp_path / side)
        return [{k: (v.silent if k == "settings" else v) for k, v in c.items() if k not in ("dir", "name", "id", "config")}
                for c in calls]

    base = json.dumps(["study", command({}, probe, key, "a")], sort_keys=True, default=str)
    if base not in OBSERVED:
        OBSERVED[base] = observe("a")
    assert OBSERVED[base] != observe("b")


@pytest.mark.parametrize("key, probe", list(cases("console")))
def test_console_key_changes_what_is_shown(key, probe, tmp_path, monkeypatch):
    monkeypatch.setattr(console, "interactive", lambda: True)  # as on a terminal

    def observe(side):
        stream = io.StringIO()
        with contextlib.redirect_stderr(stream):
            app.train(compose_config("train", as_overrides(command(TRAIN_BASE, probe, key, side))), tmp_path / side)
        return stream.getvalue()

    shown, hidden = observe("a"), observe("b")
    assert "epoch 1/1" in shown and shown != hidden


def fake_records(s: driver.Study) -> pd.DataFrame:
    """Records of every grid job of a study at its first seed, with made-up but fixed numbers:
    what the driver's selection and report read."""
    rows = []
    defaults = spec.run_config(s.experiment, s.profile)
    for entry in s.grid_overrides():
        values = {o.split("=", 1)[0]: o.split("=", 1)[1].split(",") for o in entry}
        for combo in itertools.product(*values.values()):
            job = dict(zip(values, combo))
            dataset = job.get("dataset", defaults.dataset.name)
            head = job.get("head", "identity")
            base = {"run_dir": "/runs/" + "+".join(sorted(f"{k}:{v}" for k, v in job.items())), "dataset": dataset,
                    "model": job.get("model", defaults.model.name), "head": head,
                    "gamma": float(job.get("head.gamma", 1.0)) if head not in ("identity", "lblf") else None,
                    "regularizer": job.get("regularizer", "none"), "lam": _float(job.get("regularizer.lam")),
                    "alpha": _float(job.get("regularizer.alpha")), "training": job.get("training", "standard"),
                    "beta": _float(job.get("training.beta", 6.0 if job.get("training") == "trades" else None)),
                    "seed": int(job["seed"]), "synthetic": False}

            def number(*parts, run=base["run_dir"]) -> float:
                return int(hashlib.sha1(repr((run, *parts)).encode()).hexdigest()[:6], 16) % 1000 / 10

            base["clean_test_acc"] = number("clean")
            rows.append({**base, "kind": "norms", "logit_l2": number("l2"), "logit_linf": number("linf"),
                         "prelogit_l2": number("pl2"), "prelogit_linf": number("plinf")})
            rows.append({**base, "kind": "operator_norm_summary", "mean_conv": number("conv")})
            rows.append({**base, "kind": "loss_surface", "point": 0, "max_minus_min": number("surface")})
            threat = threat_model(dataset)
            for attack in ("pgd", "spsa", "square", "apgd_ce", "apgd_t"):
                for eps in [*threat.eval_eps, threat.table_eps]:
                    rows.append({**base, "kind": "robustness", "attack": attack, "eps": float(eps),
                                 "accuracy": number(attack, float(eps))})
    return pd.DataFrame(rows)


@functools.cache
def threat_model(dataset: str):
    return compose_config("train", [f"dataset={dataset}"]).dataset.threat


def _float(value):
    return None if value is None else float(value)


@pytest.mark.parametrize("key, probe", list(cases("study")))
def test_study_key_changes_the_plan_selection_or_report(key, probe, tmp_path):
    def observe(side):
        overrides = command({}, probe, key, side)
        experiment, profile = overrides.pop("experiment"), overrides.pop("profile")
        s = driver.Study(experiment, profile, dry_run=True, sweep=tmp_path / side / "multirun", out=tmp_path / side / "out")
        for name, value in overrides.items():
            value = yaml.safe_load(value) if isinstance(value, str) else value
            OmegaConf.update(s.cfg, name, value, merge=False, force_add=True)
        s.spec = s.cfg.study
        df = fake_records(s)
        chosen = s.select(df)
        final = s.final(df, chosen)
        written = s.report(final) + s.versus_paper(final, s.tuned_per_table(df, chosen))[0]
        return {"grid": s.grid_overrides(), "seeds": {d: spec.seeds_of(s.cfg, d) for d in ("mnist", "cifar10")},
                "also_seeded": s.also_seeded(),
                "chosen": chosen.to_csv(index=False),
                # Tables as text, figures as the digest of their pixels (a PDF carries its date).
                "files": {p.name: p.read_text() if p.suffix in (".md", ".tex", ".csv") else hashlib.sha1(p.read_bytes()).hexdigest()
                          for p in written if p.suffix != ".pdf"}}

    base = json.dumps(["study", command({}, probe, key, "a")], sort_keys=True, default=str)
    if base not in OBSERVED:
        OBSERVED[base] = observe("a")
    assert OBSERVED[base] != observe("b")


# Subclasses of the package's own, as a user would name theirs with `_target_`.
class OwnNetwork(models.TwoConvTwoFC):
    pass


class OwnHead(heads.BLF):
    pass


class OwnRegularizer(regularizers.LogitSqueezing):
    pass


class OwnTraining(objectives.PGDAdversarial):
    pass


for _name in ATTACK_NAMES:  # OwnPGD, OwnSquare, ...: one subclass per attack option's class
    _cls = get_class(compose_config(overrides=[f"attack=[{_name}]"]).attack[_name]["_target_"])
    globals()[f"Own{_cls.__name__}"] = type(f"Own{_cls.__name__}", (_cls,), {"__module__": __name__})


def test_every_target_names_the_class_the_assembly_builds():
    """Each option's `_target_` is the class the assembly builds, and another class named there
    (a subclass of the package's own, as a user's would be) is built in its place."""
    base = [*TINY, "head=blf", "regularizer=logit_squeezing", "training=pgd_at", f"attack=[{','.join(ATTACK_NAMES)}]"]

    def built(overrides: list[str]) -> dict[str, type]:
        run = assembly.for_training(compose_config(overrides=overrides))
        parts = {"model": run.classifier.network, "head": run.classifier.head, "regularizer": run.regularizer,
                 "training": run.training, **{f"attack.{name}": a for name, a in zip(ATTACK_NAMES, run.attacks)}}
        return {key: type(part) for key, part in parts.items()}

    cfg = compose_config(overrides=base)
    named = {key: get_class(OmegaConf.select(cfg, f"{key}._target_")) for key in built(base)}
    assert built(base) == named
    own = {"model": OwnNetwork, "head": OwnHead, "regularizer": OwnRegularizer, "training": OwnTraining,
           **{f"attack.{name}": globals()[f"Own{named[f'attack.{name}'].__name__}"] for name in ATTACK_NAMES}}
    assert built([*base, *(f"{key}._target_={__name__}.{cls.__name__}" for key, cls in own.items())]) == own


def test_a_new_key_without_a_probe_is_caught(tmp_path):
    """The guard itself: a key added to a group's YAML and used nowhere is found and reported."""
    shutil.copytree(CONF, tmp_path / "conf")
    with open(tmp_path / "conf" / "model" / "2c2f.yaml", "a") as handle:
        handle.write("unused_new_setting: 1\n")
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(tmp_path / "conf"), version_base="1.3"):
        keys = leaves(compose("train", overrides=["model=2c2f"]))
    assert unaccounted(keys) == ["model.unused_new_setting"]

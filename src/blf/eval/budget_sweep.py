"""Budget sweep (Carlini et al. 2019: "plot accuracy against the number of iterations"): PGD's
accuracy at one eps against its number of steps and, at a fixed number of steps, against its
restarts. A curve that is still falling at its right end means the evaluated PGD had not
converged; a flat one means more budget buys nothing. `analysis=[...,budget_sweep]`
(conf/analysis/budget_sweep.yaml); drawn by the report (blf.report.figures.budget_sweep).
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from blf import config as C
from blf.console import bar as progress_bar
from blf.data import Split
from blf.eval.attacks import PGD
from blf.eval.robustness import attacked_correct, percent
from blf.nn.models import Classifier, frozen
from blf.run.records import Kind


def settings(cfg: DictConfig) -> dict:
    """The sweep's settings, checked (one line per bad value)."""
    steps = [C.integer("analysis.budget_sweep.steps", s, ge=1) for s in cfg.steps]
    restarts = [C.integer("analysis.budget_sweep.restarts", r, ge=1) for r in cfg.restarts]
    if not steps or not restarts:
        raise C.ConfigError("analysis.budget_sweep.steps and .restarts need at least one value each; allowed: lists of integers >= 1")
    return {"eps": C.number("analysis.budget_sweep.eps", cfg.eps, gt=0),
            "eps_iter": C.number("analysis.budget_sweep.eps_iter", cfg.eps_iter, gt=0),
            "steps": steps, "restarts": restarts,
            "restart_steps": C.integer("analysis.budget_sweep.restart_steps", cfg.restart_steps, ge=1),
            "max_n": C.integer("analysis.budget_sweep.max_n", cfg.max_n, ge=1)}


def sweep(classifier: Classifier, subset: Split, cfg: dict, *, batch_size: int, device, seed: int,
          progress: bool = False) -> list[dict]:
    """One row per PGD budget on the first `max_n` examples: (s steps, 1 restart) for each s of
    `steps` and (restart_steps, r restarts) for each r of `restarts`, each budget once. The budget
    is in the attack settings (`attack.nb_iter`, `attack.restarts`), so each row has its own key;
    the steps curve is the rows with one restart, the restarts curve those with restart_steps."""
    subset = subset.first(min(len(subset), cfg["max_n"]))
    budgets = list(dict.fromkeys([(s, 1) for s in cfg["steps"]] + [(cfg["restart_steps"], r) for r in cfg["restarts"]]))
    rows = []
    bar = progress_bar(total=len(budgets) * len(subset), desc="budget sweep", unit="img", enabled=progress)
    with frozen(classifier), bar:
        for steps, restarts in budgets:
            attack = PGD([cfg["eps"]], nb_iter=steps, eps_iter=cfg["eps_iter"], restarts=restarts)
            torch.manual_seed(seed)
            correct = attacked_correct(classifier, subset, attack, cfg["eps"], batch_size, device, bar)
            rows.append({"kind": Kind.BUDGET_SWEEP, "attack": "pgd", "eps": cfg["eps"], "attack.nb_iter": steps,
                         "attack.restarts": restarts, "attack.eps_iter": cfg["eps_iter"],
                         "attack.restart_steps": cfg["restart_steps"], "sweep_n": len(subset), "accuracy": percent(correct)})
    return rows

"""Budget sweep (Carlini et al. 2019: "plot accuracy against the number of iterations"): PGD's
accuracy at one eps against its number of steps and, at a fixed number of steps, against its
restarts. A curve that is still falling at its right end means the evaluated PGD had not
converged; a flat one means more budget buys nothing. `analysis=[...,budget_sweep]`
(conf/analysis/budget_sweep.yaml; its settings are checked by blf.settings.budget_sweep); drawn by
the report (blf.report.figures.budget_sweep).
"""

from __future__ import annotations

import torch

from blf.console import bar as progress_bar
from blf.data import Split
from blf.eval.attacks import PGD
from blf.eval.robustness import attacked_correct, percent
from blf.nn.models import Classifier, frozen
from blf.run.records import Kind


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

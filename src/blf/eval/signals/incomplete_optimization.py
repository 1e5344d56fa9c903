"""Incomplete optimization: the loss was still rising when the reported attack stopped. Fix: the
reported attack with `steps_factor` x its steps, then APGD-CE, whose step size schedule does not
depend on a step chosen by hand. Re-check: the longer attack's loss still rising."""

from __future__ import annotations

import torch

from blf.eval.attacks import APGDCE
from blf.eval.attacks.base import PERTURB_ONLY
from blf.eval.signals.base import Attempt, Fix, Signal


def incomplete_optimization(trace, survives: torch.Tensor, window: float, min_gain: float) -> torch.Tensor:
    """The best loss of the last `window` share of the iterates exceeds the best before them by
    more than `min_gain` of the loss's scale (and by `min_gain` absolute)."""
    curve = trace.loss_curve[:-1]  # the iterates the attack stepped from (the last row is the point returned)
    steps = curve.shape[0]
    if steps < 2:
        return torch.zeros_like(survives)
    tail = max(1, round(window * steps))
    before, last = curve[:-tail].amax(0), curve[-tail:].amax(0)
    scale = curve.abs().amax(0).clamp_min(1e-12)
    rising = (last - before > min_gain * scale) & (last - before > min_gain)
    return rising & survives


class IncompleteOptimization(Signal):
    name, title, remedy = "incomplete_optimization", "incomplete optimization", "more steps, then APGD-CE's step schedule"

    def detect(self, at: Attempt) -> torch.Tensor:
        return incomplete_optimization(at.traces[0], at.standing, self.cfg.window, self.cfg.min_gain)

    def repair(self, at: Attempt, index: torch.Tensor, fix: Fix) -> None:
        p = at.procedure
        steps = p.reported.nb_iter * p.budget.steps_factor
        _, trace = p.attack(at, f"{p.reported.name}-{steps}", p.pgd_like(p.reported, nb_iter=steps), p.subject.crafter(),
                         index, fix, traced=True)
        at.found["longer"] = (index, trace)
        p.attack(at, f"apgd_ce-{steps}", APGDCE(PERTURB_ONLY, steps, 1, 0.75, p.seed), p.subject.crafter(),
                 at.standing_among(index), fix)

    def recheck(self, at: Attempt) -> int:
        if "longer" not in at.found:
            return 0
        index, trace = at.found["longer"]
        standing = at.ledger.survival > 0
        return int(incomplete_optimization(trace, standing[index], self.cfg.window, self.cfg.min_gain).sum())

"""Non-converging restarts: restarts of the reported attack end at different outcomes, or at
margins spread wider than the distance still to misclassification. Fix: `restarts_factor` x the
restarts at the longer attack's steps. Re-check: the second half of those restarts still moved
the best margin (doubling the restarts still changes the result, Carlini et al. 2019)."""

from __future__ import annotations

import torch

from blf.eval.signals.base import Attempt, Fix, Signal


def non_converging_restarts(traces: list, outcomes: list[torch.Tensor], survives: torch.Tensor,
                            spread: float) -> torch.Tensor:
    if len(traces) < 2:
        return torch.zeros_like(survives)
    held = torch.stack(outcomes)
    disagree = held.any(0) & ~held.all(0)
    finals = torch.stack([t.margins[-1] for t in traces])
    gap = (-finals.amax(0)).clamp_min(0)
    wide = (finals.amax(0) - finals.amin(0)) > spread * gap
    return (disagree | wide) & survives


def restarts_still_pay(traces: list, survives: torch.Tensor, gain: float) -> torch.Tensor:
    finals = torch.stack([t.margins[-1] for t in traces])
    half = max(1, len(traces) // 2)
    best, first = finals.amax(0), finals[:half].amax(0)
    gap = (-best).clamp_min(0)
    return (best - first > gain * gap) & (best > first) & survives


class NonConvergingRestarts(Signal):
    name, title, remedy = "non_converging_restarts", "non-converging restarts", "more restarts"

    def detect(self, at: Attempt) -> torch.Tensor:
        return non_converging_restarts(at.traces, [s > 0 for s in at.runs], at.standing, self.cfg.margin_spread)

    def repair(self, at: Attempt, index: torch.Tensor, fix: Fix) -> None:
        p = at.procedure
        # At the longer attack's steps: restarts of an attack that has not finished disagree for that reason.
        count = p.budget.restarts * p.budget.restarts_factor
        attack = p.pgd_like(p.reported, nb_iter=p.reported.nb_iter * p.budget.steps_factor)
        traces = []
        with p.bar(f"eps={at.eps:g} fix: {count} restarts", len(index) * count) as bar:
            for r in range(count):
                points, trace = p.run(attack, p.subject.crafter(), index, at.eps, bar, traced=True, seed_offset=100 + r)
                at.ledger.record(f"{p.reported.name}-{attack.nb_iter}_x{count}_restarts", index, points)
                traces.append(trace)
        fix.attacks.append(f"{p.reported.name}-{attack.nb_iter} x {count} restarts")
        at.found["restarts"] = (index, traces)

    def recheck(self, at: Attempt) -> int:
        if "restarts" not in at.found:
            return 0
        index, traces = at.found["restarts"]
        standing = at.ledger.survival > 0
        return int(restarts_still_pay(traces, standing[index], self.cfg.still_gain).sum())

"""Silent success: an iterate of the reported attack was adversarial, the point it returned is
not. Fix: keep the best iterate. It cannot recur: every attack the audit runs keeps its best."""

from __future__ import annotations

import torch

from blf.eval.signals.base import Attempt, Fix, Signal


def silent_success(trace, survives: torch.Tensor) -> torch.Tensor:
    ever = torch.stack(trace.adversarial[:-1]).any(0) if len(trace.adversarial) > 1 else torch.zeros_like(survives)
    return ever & survives


class SilentSuccess(Signal):
    name, title, remedy = "silent_success", "silent success", "keep the best iterate"

    def detect(self, at: Attempt) -> torch.Tensor:
        return silent_success(at.traces[0], at.standing)

    def repair(self, at: Attempt, index: torch.Tensor, fix: Fix) -> None:
        trace = at.traces[0]
        at.ledger.record("best_iterate", index, trace.first[index.to(trace.first.device)])
        fix.attacks.append("best iterate")

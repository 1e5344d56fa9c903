"""Unstable predictions: repeated forward passes of the same input disagree (a randomized
defense). Fix: EOT, the gradient of the expected loss over draws (Athalye et al. 2018 sec. 4.3),
and accuracy as an expectation. Re-check: two independent expectations still disagree."""

from __future__ import annotations

import torch
from torch import nn

from blf.eval.signals.base import Attempt, Fix, Signal


@torch.no_grad()
def unstable_predictions(model: nn.Module, x: torch.Tensor, draws: int) -> torch.Tensor:
    """The prediction changes over `draws` forward passes of the same input."""
    predictions = torch.stack([model(x).argmax(1) for _ in range(max(2, draws))])
    return (predictions != predictions[0]).any(0).cpu()


class UnstablePredictions(Signal):
    name, title, remedy = "unstable_predictions", "unstable predictions", "EOT over draws; accuracy as an expectation"

    def detect(self, at: Attempt) -> torch.Tensor:
        p = at.procedure
        if not p.subject.randomized:
            return at.none()
        found = [unstable_predictions(p.subject.view, part, p.budget.stability_draws) for part in at.points.split(p.batch_size)]
        return torch.cat(found) & at.standing

    def repair(self, at: Attempt, index: torch.Tensor, fix: Fix) -> None:
        p = at.procedure
        name = f"eot_{p.reported.name}"
        p.attack(at, name, p.pgd_like(p.reported), p.subject.crafter(), index, fix)

    def recheck(self, at: Attempt) -> int:
        p = at.procedure
        index = at.ledger.standing()
        if not p.subject.randomized or not len(index):
            return 0
        eot = p.subject.crafter()
        with torch.no_grad():
            a = torch.cat([eot(x).argmax(1).cpu() for x in at.ledger.points[index].split(p.batch_size)])
            b = torch.cat([eot(x).argmax(1).cpu() for x in at.ledger.points[index].split(p.batch_size)])
        return int((a != b).sum())

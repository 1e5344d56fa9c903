"""Another family wins: a gradient-free attack (Square, SPSA) or a transfer attack breaks examples that
every gradient attack left standing. Honest gradients find almost everything a random search
finds; where they do not, they mislead (AutoAttack warns of the same; Croce and Hein 2020). It
is the studies' `gradient_free_vs_gradient` integrity check, per example. Detected after the
standard set. Fix, when it fires: Square at AutoAttack's budget (`square_queries`) on the
examples standing, then every gradient repair (disagreeing_gradients.py) on those and on the
examples only the other family broke. Re-check: the share only the other family broke."""

from __future__ import annotations

import torch

from blf.eval.attacks import Square
from blf.eval.attacks.base import PERTURB_ONLY
from blf.eval.signals.base import Attempt, Fix, Signal
from blf.eval.signals.disagreeing_gradients import DisagreeingGradients

OTHER_FAMILY = ("square", "spsa", "transfer")  # attack names beginning so do not follow the model's own gradient


def other_family(name: str) -> bool:
    return name.startswith(OTHER_FAMILY)


def only_other_family(broke: dict[str, torch.Tensor], n: int) -> torch.Tensor:
    """Per example: broken by an attack of the other family and by no gradient attack."""
    none = torch.zeros(n, dtype=torch.bool)
    other = [b for name, b in broke.items() if other_family(name)]
    gradient = [b for name, b in broke.items() if not other_family(name)]
    other = torch.stack(other).any(0) if other else none
    gradient = torch.stack(gradient).any(0) if gradient else none
    return other & ~gradient


class AnotherFamilyWins(Signal):
    name, title = "another_family_wins", "another family wins"
    remedy = "Square at AutoAttack's budget, then every gradient repair"
    after_standard_set = True

    def detect(self, at: Attempt) -> torch.Tensor:
        return only_other_family(at.ledger.broke, at.n)

    def targets(self, at: Attempt, flags: torch.Tensor) -> torch.Tensor:
        """Every example standing, when the signal fires; none otherwise."""
        if 100.0 * float(flags.sum()) / at.n <= self.cfg.max_share:
            return torch.zeros(0, dtype=torch.long)
        return at.ledger.standing()

    def repair(self, at: Attempt, index: torch.Tensor, fix: Fix) -> None:
        p = at.procedure
        queries = self.cfg.square_queries
        p.attack(at, f"square-{queries}", Square(PERTURB_ONLY, queries, 0.8, 1, "margin", p.seed), p.subject.view, index, fix)
        gradients = DisagreeingGradients(p.cfg.signals.disagreeing_gradients)
        # Where the gradient family can be repaired, it breaks what the other family broke, and more.
        tried = torch.nonzero((at.ledger.survival > 0) | self.detect(at)).flatten()
        for name, crafter in gradients.crafters(at, tried):
            p.attack(at, f"{name}_{p.reported.name}", p.pgd_like(p.reported), crafter, tried, fix)

    def recheck(self, at: Attempt) -> int:
        return int(self.detect(at).sum())

"""Transfer failure: a point crafted on a surrogate (the head's envelope or tanh, or the smooth
surrogate of disagreeing gradients) is adversarial there but not on the model. Fix: the margin
losses straight on the pre-logits (CW margin, the pre-logit targeted attack). Re-check: the same
test on the examples still standing."""

from __future__ import annotations

import torch
from torch import nn

from blf.eval.attacks import MarginPGD, PrelogitTargeted
from blf.eval.attacks.base import PERTURB_ONLY
from blf.eval.signals.base import Attempt, Fix, Signal


@torch.no_grad()
def transfer_failure(surrogate: nn.Module, model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor,
                     survives: torch.Tensor) -> torch.Tensor:
    """Adversarial on the surrogate that crafted the point, not on the model."""
    return (surrogate(x_adv).argmax(1) != y).cpu() & (model(x_adv).argmax(1) == y).cpu() & survives


class TransferFailure(Signal):
    name, title, remedy = "transfer_failure", "transfer failure", "margin losses on the pre-logits"

    def detect(self, at: Attempt) -> torch.Tensor:
        p = at.procedure
        flagged = at.none()
        standing = at.ledger.survival > 0
        for surrogate, index, points in at.found.get("surrogates", {}).values():
            if len(index):
                found = [transfer_failure(surrogate, p.subject.view, xb, p.y[ib], standing[ib])
                         for xb, ib in zip(points.split(p.batch_size), index.split(p.batch_size))]
                flagged[index] |= torch.cat(found)
        return flagged

    def repair(self, at: Attempt, index: torch.Tensor, fix: Fix) -> None:
        p = at.procedure
        steps, step, outputs = p.reported.nb_iter, p.reported.eps_iter, p.outputs
        found = [(f"pgd_cw_{outputs}", MarginPGD(PERTURB_ONLY, steps, step, loss="cw", outputs=outputs, name=f"pgd_cw_{outputs}"))]
        if p.subject.has_prelogits:
            found.append(("prelogit_targeted", PrelogitTargeted(PERTURB_ONLY, steps, step,
                                                                n_target_classes=min(3, p.num_classes() - 1))))
        for name, attack in found:
            part = at.standing_among(index)
            if not len(part):
                break
            p.attack(at, name, attack, p.subject.crafter(), part, fix)

    def recheck(self, at: Attempt) -> int:
        return int(self.detect(at).sum()) if at.found.get("surrogates") else 0

"""Unavailable gradients: the cross-entropy input gradient is non-finite, zero, vanishing next to
the gradient of the pre-logit margin, or reversed (ascending the loss moves away from
misclassification, as BLF's gradient does beyond z*, Theorem 3). Fix: BPDA across the modules
that pass no gradient and through a bounded head's envelope, margin losses on the pre-logits (or
logits), Square. Re-check: every loss the fixes ascended still lacks a gradient. The same per-
example test is the studies' `input_gradients` integrity check (eval/integrity.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blf.eval.attacks import BPDA, MarginPGD, Square
from blf.eval.attacks.base import PERTURB_ONLY
from blf.eval.attacks.margin import cw_margin
from blf.eval.signals.base import Attempt, Fix, Repair, Signal
from blf.nn.heads import Tanh
from blf.nn.models import frozen


def input_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, relative_floor: float) -> dict[str, torch.Tensor]:
    """Per example, what is wrong with the cross-entropy input gradient: `non_finite`, `zero`,
    `vanishing` (below `relative_floor` x the gradient of the margin max_{i != y} v_i - v_y of the
    pre-logits, or of the logits where those are unknown) or `reversed` (a negative inner product
    with it)."""
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        z, logits = model.prelogits_and_logits(x)
        (grad,) = torch.autograd.grad(F.cross_entropy(logits.float(), y, reduction="sum"), x, retain_graph=True)
        (reference,) = torch.autograd.grad(cw_margin(z.float(), y).sum(), x)
    grad, reference = grad.flatten(1).double(), reference.flatten(1).double()
    non_finite = ~torch.isfinite(grad).all(1)
    zero = (grad == 0).all(1) & ~non_finite
    vanishing = (grad.abs().sum(1) < relative_floor * reference.abs().sum(1)) & ~zero & ~non_finite
    reversed_ = ((grad * reference).sum(1) < 0) & ~(non_finite | zero | vanishing)
    return {"non_finite": non_finite.cpu(), "zero": zero.cpu(), "vanishing": vanishing.cpu(), "reversed": reversed_.cpu()}


def unavailable_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, relative_floor: float) -> torch.Tensor:
    return torch.stack(list(input_gradients(model, x, y, relative_floor).values())).any(0)


def margin_gradient_unavailable(model: nn.Module, x: torch.Tensor, y: torch.Tensor, outputs: str) -> torch.Tensor:
    """The gradient of the margin of the pre-logits (or logits) is zero or not finite: the margin
    attacks have no direction either (a quantizer, a blocked gradient)."""
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        z, logits = model.prelogits_and_logits(x)
        values = z if outputs == "prelogits" else logits
        (grad,) = torch.autograd.grad(cw_margin(values.float(), y).sum(), x)
    grad = grad.flatten(1)
    return (~torch.isfinite(grad).all(1) | (grad == 0).all(1)).cpu()


class EnvelopeHead(nn.Module):
    """gamma x the head's smooth envelope (eval/attacks/surrogate.py), forward and backward."""

    name = "envelope"

    def __init__(self, function, gamma: float, envelope):
        super().__init__()
        self.function, self.gamma, self.envelope = function, gamma, envelope

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.gamma * self.envelope(self.function, z)


def surrogate_classifier(subject, surrogate: str) -> nn.Module:
    """The classifier with the surrogate head in place of the real one, forward and backward."""
    from blf.eval.attacks.surrogate import envelope

    classifier = subject.classifier
    if surrogate == "tanh":
        return classifier.with_head(Tanh(classifier.head.scale()))
    return classifier.with_head(EnvelopeHead(subject.function, classifier.head.scale(), envelope))


class UnavailableGradients(Signal):
    name, title = "unavailable_gradients", "unavailable gradients"
    remedy = "BPDA (head envelope, blocking modules), margin losses on the pre-logits, Square"

    def flags(self, model: nn.Module, p, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        parts = [unavailable_gradients(model, xb, p.y[ib], self.cfg.relative_floor)
                 for xb, ib in zip(x.split(p.batch_size), index.split(p.batch_size))]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool)

    def detect(self, at: Attempt) -> torch.Tensor:
        """At the clean input or at the reported attack's point."""
        p = at.procedure
        everyone = torch.arange(at.n)
        with frozen(p.subject.model):
            found = self.flags(p.subject.view, p, p.x, everyone) | self.flags(p.subject.view, p, at.points, everyone)
        return found & at.standing

    def fixes(self, at: Attempt) -> list[Repair]:
        p = at.procedure
        steps, step = p.reported.nb_iter, p.reported.eps_iter
        found = []
        if p.subject.blockers:  # the reported attack again, across the blocking modules by BPDA
            found.append(Repair(f"bpda_{p.reported.name}", p.pgd_like(p.reported), p.subject.crafter()))
        if p.subject.bounded:
            classifier = p.subject.classifier_crafter()
            for surrogate in ("envelope", "tanh"):
                attack = BPDA(PERTURB_ONLY, steps, step, surrogate=surrogate, name=f"bpda_{surrogate}")
                found.append(Repair(f"bpda_{surrogate}", attack, classifier, surrogate_classifier(p.subject, surrogate)))
        else:
            at.skipped.append("BPDA through the head: no bounded head known (pass a blf Classifier or a model from "
                              "blf.with_head)")
        outputs = p.outputs
        if not p.subject.has_prelogits:
            at.skipped.append("margin losses on the pre-logits: no pre-logits known (prelogits=); the logits' instead")
        found.append(Repair(f"pgd_dlr_{outputs}", MarginPGD(PERTURB_ONLY, steps, step, loss="dlr", outputs=outputs,
                                                            name=f"pgd_dlr_{outputs}"), p.subject.crafter()))
        found.append(Repair("square", Square(PERTURB_ONLY, p.budget.square_queries, 0.8, 1, "margin", p.seed),
                            p.subject.view))
        return found

    def repair(self, at: Attempt, index: torch.Tensor, fix: Fix) -> None:
        p = at.procedure
        for repair in self.fixes(at):
            part = at.standing_among(index)
            if not len(part):
                break
            points = p.attack(at, repair.name, repair.attack, repair.crafter, part, fix)
            if repair.surrogate is not None:
                at.found.setdefault("surrogates", {})[repair.name] = (repair.surrogate, part, points)

    def recheck(self, at: Attempt) -> int:
        """Examples still standing where no loss the fixes ascended has a gradient: cross-entropy
        through the crafter, the margin on the pre-logits or logits, and for a bounded head the
        envelope's."""
        p = at.procedure
        index = at.ledger.standing()
        if not len(index) or not at.fixes[self.name].flagged:
            return 0
        points, crafter, out = at.ledger.points[index], p.subject.crafter(), []
        with frozen(p.subject.model):
            for part, where in zip(index.split(p.batch_size), points.split(p.batch_size)):
                y = p.y[part]
                stuck = unavailable_gradients(crafter, where, y, self.cfg.relative_floor)
                stuck &= margin_gradient_unavailable(crafter, where, y, p.outputs)
                if p.subject.bounded:
                    stuck &= unavailable_gradients(surrogate_classifier(p.subject, "envelope"), where, y,
                                                   self.cfg.relative_floor)
                out.append(stuck)
        return int(torch.cat(out).sum())

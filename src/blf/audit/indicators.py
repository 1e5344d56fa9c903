"""The six indicators of attack failure, per example (Pintor, Demetrio, Sotgiu, Melis, Demontis,
Carlini, Biggio, Roli, "Indicators of Attack Failure: Debugging and Improving Optimization of
Adversarial Examples", NeurIPS 2022). Each names one way a gradient attack can report an example
as robust when it is not; procedure.py applies each one's fix to the examples it flags.

| indicator | fires on an example where | fix (procedure.py) |
|---|---|---|
| silent success | an iterate was adversarial, the point returned is not | keep the best iterate |
| incomplete optimization | the loss still rose over the last steps | more steps, then APGD's step schedule |
| transfer failure | adversarial on the surrogate that crafted it, not on the model | the other surrogates, pre-logit losses |
| unavailable gradients | the input gradient is non-finite, zero, vanishing or reversed | BPDA, margin losses on the pre-logits, Square |
| unstable predictions | repeated forward passes disagree | EOT; accuracy as an expectation |
| non-converging restarts | restarts end at different outcomes or losses | more restarts |

Thresholds: conf/audit.yaml (`indicators`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blf.eval.attacks.margin import cw_margin

NAMES = ("silent_success", "incomplete_optimization", "transfer_failure", "unavailable_gradients",
         "unstable_predictions", "non_converging_restarts")
TITLES = {
    "silent_success": "silent success",
    "incomplete_optimization": "incomplete optimization",
    "transfer_failure": "transfer failure",
    "unavailable_gradients": "unavailable gradients",
    "unstable_predictions": "unstable predictions",
    "non_converging_restarts": "non-converging restarts",
}
FIXES = {
    "silent_success": "keep the best iterate",
    "incomplete_optimization": "more steps, then APGD-CE's step schedule",
    "transfer_failure": "the other surrogates; margin losses on the pre-logits",
    "unavailable_gradients": "BPDA (head envelope, blocking modules), margin losses on the pre-logits, Square",
    "unstable_predictions": "EOT over draws; accuracy as an expectation",
    "non_converging_restarts": "more restarts",
}


class Trace:
    """What one run of a PGD-family attack did to each example: the loss it ascended at every
    iterate (the last row: the point returned), whether each iterate was misclassified, and the
    first misclassified iterate (an attack's `observe` hook, eval/attacks/pgd.py)."""

    def __init__(self, y: torch.Tensor):
        self.y = y
        self.losses: list[torch.Tensor] = []
        self.margins: list[torch.Tensor] = []  # max_{i != y} logit_i - logit_y: > 0 misclassified
        self.adversarial: list[torch.Tensor] = []
        self.first: torch.Tensor | None = None
        self.found = torch.zeros_like(y, dtype=torch.bool)

    def __call__(self, x: torch.Tensor, losses: torch.Tensor, logits: torch.Tensor) -> None:
        wrong = logits.argmax(1) != self.y
        self.losses.append(losses.float().cpu())
        self.margins.append(cw_margin(logits.float(), self.y).cpu())
        self.adversarial.append(wrong.cpu())
        if self.first is None:
            self.first = x.clone()
        new = wrong & ~self.found.to(wrong.device)
        self.first[new] = x[new]
        self.found |= new.to(self.found.device)

    @property
    def loss_curve(self) -> torch.Tensor:
        """(iterates, examples)."""
        return torch.stack(self.losses)

    def final_loss(self) -> torch.Tensor:
        return self.losses[-1]


def silent_success(trace: Trace, survives: torch.Tensor) -> torch.Tensor:
    """An iterate broke the example, the attack returned a point that does not."""
    ever = torch.stack(trace.adversarial[:-1]).any(0) if len(trace.adversarial) > 1 else torch.zeros_like(survives)
    return ever & survives


def incomplete_optimization(trace: Trace, survives: torch.Tensor, window: float, min_gain: float) -> torch.Tensor:
    """The best loss of the last `window` share of the iterates exceeds the best before them by
    more than `min_gain` of the loss's scale (and by `min_gain` absolute): still rising when the
    attack stopped."""
    curve = trace.loss_curve[:-1]  # the iterates the attack stepped from (the last row is the point returned)
    steps = curve.shape[0]
    if steps < 2:
        return torch.zeros_like(survives)
    tail = max(1, round(window * steps))
    before, last = curve[:-tail].amax(0), curve[-tail:].amax(0)
    scale = curve.abs().amax(0).clamp_min(1e-12)
    rising = (last - before > min_gain * scale) & (last - before > min_gain)
    return rising & survives


def non_converging_restarts(traces: list[Trace], outcomes: list[torch.Tensor], survives: torch.Tensor,
                            spread: float) -> torch.Tensor:
    """Restarts of one attack disagree on an example: some break it and some do not, or the
    margins (max_{i != y} logit_i - logit_y) they end at spread over more than `spread` x the
    distance still separating the best of them from misclassification: then another restart may
    well cross it."""
    if len(traces) < 2:
        return torch.zeros_like(survives)
    held = torch.stack(outcomes)
    disagree = held.any(0) & ~held.all(0)
    finals = torch.stack([t.margins[-1] for t in traces])
    gap = (-finals.amax(0)).clamp_min(0)
    wide = (finals.amax(0) - finals.amin(0)) > spread * gap
    return (disagree | wide) & survives


def restarts_still_pay(traces: list[Trace], survives: torch.Tensor, gain: float) -> torch.Tensor:
    """After more restarts: the second half of them brought the best final margin closer to
    misclassification, by more than `gain` x the distance that remains (doubling the restarts
    still changes the result, Carlini et al. 2019)."""
    finals = torch.stack([t.margins[-1] for t in traces])
    half = max(1, len(traces) // 2)
    best, first = finals.amax(0), finals[:half].amax(0)
    gap = (-best).clamp_min(0)
    return (best - first > gain * gap) & (best > first) & survives


def input_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, relative_floor: float) -> dict[str, torch.Tensor]:
    """Per example, what is wrong with the cross-entropy input gradient: `non_finite`, `zero`,
    `vanishing` (below `relative_floor` x the gradient of the margin max_{i != y} v_i - v_y of the
    pre-logits, or of the logits where those are unknown: no head and no softmax between that
    margin and the network) or `reversed` (ascending the loss moves away from misclassification,
    as BLF's gradient does beyond z*, Theorem 3)."""
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
    return {"non_finite": non_finite, "zero": zero, "vanishing": vanishing, "reversed": reversed_}


def unavailable_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, survives: torch.Tensor,
                          relative_floor: float) -> torch.Tensor:
    flags = input_gradients(model, x, y, relative_floor)
    return torch.stack(list(flags.values())).any(0).cpu() & survives


def margin_gradient_unavailable(model: nn.Module, x: torch.Tensor, y: torch.Tensor, outputs: str) -> torch.Tensor:
    """Per example: the gradient of the margin max_{i != y} v_i - v_y of the pre-logits (or the
    logits) is zero or not finite, so the margin attacks that fix masked cross-entropy have no
    direction either (a quantizer, a blocked gradient)."""
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        z, logits = model.prelogits_and_logits(x)
        values = z if outputs == "prelogits" else logits
        (grad,) = torch.autograd.grad(cw_margin(values.float(), y).sum(), x)
    grad = grad.flatten(1)
    return (~torch.isfinite(grad).all(1) | (grad == 0).all(1)).cpu()


@torch.no_grad()
def unstable_predictions(model: nn.Module, x: torch.Tensor, draws: int) -> torch.Tensor:
    """The prediction changes over `draws` forward passes of the same input."""
    predictions = torch.stack([model(x).argmax(1) for _ in range(max(2, draws))])
    return (predictions != predictions[0]).any(0).cpu()


@torch.no_grad()
def transfer_failure(surrogate: nn.Module, model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor,
                     survives: torch.Tensor) -> torch.Tensor:
    """Adversarial on the surrogate that crafted the point, not on the model."""
    return (surrogate(x_adv).argmax(1) != y).cpu() & (model(x_adv).argmax(1) == y).cpu() & survives

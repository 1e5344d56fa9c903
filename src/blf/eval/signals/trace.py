"""What one run of a PGD-family attack did to each example, iterate by iterate (an attack's
`observe` hook, eval/attacks/pgd.py): the signals that read an attack's path use it."""

from __future__ import annotations

import torch

from blf.eval.attacks.margin import cw_margin


class Trace:
    """The loss ascended at every iterate (the last row: the point returned), the margin
    max_{i != y} logit_i - logit_y (> 0: misclassified), whether each iterate was misclassified,
    and the first misclassified iterate."""

    def __init__(self, y: torch.Tensor):
        self.y = y
        self.losses: list[torch.Tensor] = []
        self.margins: list[torch.Tensor] = []
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


def merge(traces: list[Trace]) -> Trace:
    """The traces of consecutive batches as one trace over all their examples."""
    merged = Trace(torch.cat([t.y for t in traces]))
    merged.losses = [torch.cat(rows) for rows in zip(*[t.losses for t in traces])]
    merged.margins = [torch.cat(rows) for rows in zip(*[t.margins for t in traces])]
    merged.adversarial = [torch.cat(rows) for rows in zip(*[t.adversarial for t in traces])]
    merged.first = torch.cat([t.first for t in traces])
    merged.found = torch.cat([t.found.cpu() for t in traces])
    return merged

"""What every attack provides to the evaluation."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import nn

from blf import config as C

# The eps grid of an attack that is only called through perturb(..., eps), as the audit's are: any
# valid grid, never read.
PERTURB_ONLY = (1.0,)


class Attack(ABC):
    """An attack with an epsilon grid (L-infinity, pixel units in [0, 1])."""

    name = "attack"

    def __init__(self, eps: Sequence[float], name: str | None = None):
        if name is not None:  # an option of a class several options share (conf/attack/bpda_*.yaml)
            self.name = name
        if isinstance(eps, (int, float)):
            eps = [eps]
        self.eps = [C.number(f"attack.{self.name}.eps", e, ge=0) for e in eps]
        if not self.eps:
            raise C.ConfigError(f"attack.{self.name}.eps is empty; allowed: a list of numbers >= 0")

    # Evaluation batch size for this attack (None: eval.batch_size). Slow attacks use small
    # batches so that the progress bar moves.
    batch_size: int | None = None

    def check(self, classifier: nn.Module, num_classes: int) -> None:  # noqa: B027 - an optional hook, not abstract
        """Raise ConfigError if this attack cannot run against `classifier`."""

    def settings(self) -> dict:
        """Everything but eps that determines the result (goes into each record)."""
        return {}

    @abstractmethod
    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        """Adversarial versions of x (model in eval mode, no parameter gradients)."""

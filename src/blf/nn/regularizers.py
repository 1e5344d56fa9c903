"""Logit regularization: the training objective on a batch of logits (section 2.1).

`none` is softmax cross-entropy (eq. 2 with one-hot targets), `logit_squeezing` adds
lambda/2 * ||z||_2^2 on the logits (eq. 3), `label_smoothing` uses the targets
p_t = 1 - alpha and p_k = alpha / (M - 1) for k != t (section 2.1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from blf import config as C


class Regularizer:
    """Objective J for one batch: the mean over examples of the per-example loss."""

    name = "none"

    def __call__(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y)

    def describe(self) -> dict:
        return {"regularizer": self.name, "lam": None, "alpha": None}


class LogitSqueezing(Regularizer):
    """Eq. (3): J = mean_i [ L_CE(z_i, p_i) + lambda/2 * ||z_i||_2^2 ], z the logits."""

    name = "logit_squeezing"

    def __init__(self, lam: float):
        self.lam = C.number("regularizer.lam", lam, ge=0)

    def __call__(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        squeeze = 0.5 * self.lam * logits.pow(2).sum(dim=1).mean()
        return F.cross_entropy(logits, y) + squeeze

    def describe(self) -> dict:
        return {"regularizer": self.name, "lam": self.lam, "alpha": None}


class LabelSmoothing(Regularizer):
    """Cross-entropy against p_t = 1 - alpha, p_k = alpha / (M - 1) (section 2.1).

    Not torch's `label_smoothing=` argument, which spreads alpha over all M classes
    (p_t = 1 - alpha + alpha/M).
    """

    name = "label_smoothing"

    def __init__(self, alpha: float):
        # alpha = 1 would put no mass on the true class.
        self.alpha = C.number("regularizer.alpha", alpha, ge=0, lt=1)

    def targets(self, y: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
        off = self.alpha / (num_classes - 1)
        p = torch.full((y.shape[0], num_classes), off, dtype=dtype, device=y.device)
        return p.scatter_(1, y[:, None], 1.0 - self.alpha)

    def __call__(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits, dim=1)  # M, the number of classes, is the logits' width
        return -(self.targets(y, logits.shape[1], log_p.dtype) * log_p).sum(dim=1).mean()

    def describe(self) -> dict:
        return {"regularizer": self.name, "lam": None, "alpha": self.alpha}


def build(cfg: DictConfig) -> Regularizer:
    """The objective `cfg._target_` names (conf/regularizer/<option>.yaml)."""
    return C.instantiate("regularizer", cfg, Regularizer)

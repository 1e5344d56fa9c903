"""Training modes (the `training` config group): what one optimisation step minimises.

`standard` minimises the objective on clean inputs; `pgd_at` is Madry et al.'s adversarial
training, minimising it on PGD examples crafted against the current model (section 5.1).
Examples are crafted with the model in eval mode and its parameters frozen; the update then
runs in train mode.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from . import config as C
from .attacks import pgd
from .models import Classifier, frozen
from .regularizers import Regularizer


class Standard:
    name = "standard"

    def describe(self) -> dict:
        return {"training": self.name, "beta": None}

    def loss(self, classifier: Classifier, x: torch.Tensor, y: torch.Tensor, regularizer: Regularizer):
        """(loss, logits of the inputs the loss was computed on)."""
        logits = classifier(x)
        return regularizer(logits, y), logits


class PGDAdversarial(Standard):
    """min_theta E[ max_{||d||_inf <= eps} J(x + d, y) ], the inner max by PGD with random start."""

    name = "pgd_at"

    def __init__(self, eps: float, nb_iter: int, eps_iter: float):
        self.eps = C.number("training.eps", eps, ge=0)
        self.nb_iter = C.integer("training.nb_iter", nb_iter, ge=1)
        self.eps_iter = C.number("training.eps_iter", eps_iter, gt=0)

    def adversarial(self, classifier: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with frozen(classifier):
            return pgd(classifier, x, y, eps=self.eps, nb_iter=self.nb_iter, eps_iter=self.eps_iter)

    def loss(self, classifier, x, y, regularizer):
        return super().loss(classifier, self.adversarial(classifier, x, y), y, regularizer)


TRAINING_NAMES = ("standard", "pgd_at")


def build(cfg: DictConfig):
    name = C.choice("training", cfg.name, TRAINING_NAMES)
    if name == "pgd_at":
        return PGDAdversarial(cfg.eps, cfg.nb_iter, cfg.eps_iter)
    return Standard()

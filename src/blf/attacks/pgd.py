"""Projected gradient descent under an L-infinity budget (Madry et al. 2018).

`pgd` is our own implementation with advertorch's `LinfPGDAttack` semantics (uniform random
start in the eps-ball, signed-gradient steps, projection onto the ball and onto [0, 1], summed
cross-entropy), differentiating only with respect to the input. The `PGD` attack runs either
it or advertorch's, as the paper did (section 5.1: "we used advertorch").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from .. import config as C
from ..compat import advertorch_attacks
from ..input_gradient import fast_input_gradients
from .base import Attack


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    nb_iter: int,
    eps_iter: float,
    rand_init: bool = True,
    targeted: bool = False,
) -> torch.Tensor:
    """L-infinity PGD. Call it with the model in eval mode and parameters frozen."""
    delta = torch.zeros_like(x)
    if rand_init:
        # Same draw as advertorch's rand_init_delta, so both start from the same point.
        delta.uniform_(-1.0, 1.0).mul_(eps)
        delta = (x + delta).clamp_(0.0, 1.0) - x
    for _ in range(nb_iter):
        delta.requires_grad_(True)
        with fast_input_gradients():
            loss = F.cross_entropy(model(x + delta), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            step = grad.sign_().mul_(eps_iter)
            delta = delta - step if targeted else delta + step
            delta = delta.clamp_(-eps, eps)
            delta = (x + delta).clamp_(0.0, 1.0) - x
    return (x + delta).clamp_(0.0, 1.0).detach()


IMPLEMENTATIONS = ("advertorch", "native")


class PGD(Attack):
    """Untargeted L-infinity PGD with a random start (MNIST: 40 x 0.01; CIFAR-10: 100 x 2/255)."""

    name = "pgd"

    def __init__(self, eps, nb_iter: int, eps_iter: float, rand_init: bool = True, implementation: str = "advertorch"):
        super().__init__(eps)
        self.nb_iter = C.integer("attack.pgd.nb_iter", nb_iter, ge=1)
        self.eps_iter = C.number("attack.pgd.eps_iter", eps_iter, gt=0)
        self.rand_init = bool(rand_init)
        self.implementation = C.choice("attack.pgd.implementation", implementation, IMPLEMENTATIONS)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> PGD:
        return cls(cfg.eps, cfg.nb_iter, cfg.eps_iter, cfg.get("rand_init", True), cfg.get("implementation", "advertorch"))

    def settings(self) -> dict:
        return {
            "nb_iter": self.nb_iter,
            "eps_iter": self.eps_iter,
            "rand_init": self.rand_init,
            "implementation": self.implementation,
        }

    def perturb(self, model, x, y, eps):
        if self.implementation == "native":
            return pgd(model, x, y, eps=eps, nb_iter=self.nb_iter, eps_iter=self.eps_iter, rand_init=self.rand_init)
        adversary = advertorch_attacks().LinfPGDAttack(
            model, eps=eps, nb_iter=self.nb_iter, eps_iter=self.eps_iter, rand_init=self.rand_init, clip_min=0.0, clip_max=1.0
        )
        return adversary.perturb(x, y)

"""Projected gradient descent under an L-infinity budget (Madry et al. 2018).

`pgd` is our own implementation with advertorch's `LinfPGDAttack` semantics (uniform random
start in the eps-ball, signed-gradient steps, projection onto the ball and onto [0, 1], summed
cross-entropy). It differentiates with respect to the input only (parameters frozen) and
takes the fast input gradient of input_gradient.py. The `PGD` attack runs it or advertorch's
(`implementation=advertorch`, as the paper did), untargeted or targeted, with restarts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from blf import config as C
from blf.compat import advertorch_attacks
from blf.eval.attacks.base import Attack
from blf.nn.input_gradient import fast_input_gradients


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
    """L-infinity PGD; `y` is the target class when `targeted`. Call it with the model in eval
    mode and its parameters frozen (models.frozen)."""
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


IMPLEMENTATIONS = ("native", "advertorch")
TARGETS = ("random", "least_likely")


def choose_targets(model: nn.Module, x: torch.Tensor, y: torch.Tensor, how: str, num_classes: int) -> torch.Tensor:
    """A wrong class per example: uniformly at random (global RNG, seeded by the evaluation)
    or the wrong class the model finds least likely on the clean input."""
    if how == "least_likely":
        with torch.no_grad():
            logits = model(x).scatter(1, y[:, None], float("inf"))  # never the true class
            return logits.argmin(dim=1)
    offset = torch.randint(1, num_classes, y.shape, device="cpu").to(y.device)
    return (y + offset) % num_classes


class PGD(Attack):
    """L-infinity PGD with random start (MNIST: 40 x 0.01; CIFAR-10: 100 x 2/255).

    With `restarts` > 1 an example counts as broken if any restart breaks it. Targeted PGD
    drives each example towards a wrong class (`target`); accuracy is still measured against
    the true label.
    """

    name = "pgd"

    def __init__(self, eps, nb_iter: int, eps_iter: float, rand_init: bool = True, restarts: int = 1,
                 targeted: bool = False, target: str = "random", implementation: str = "native"):
        super().__init__(eps)
        self.nb_iter = C.integer(f"attack.{self.name}.nb_iter", nb_iter, ge=1)
        self.eps_iter = C.number(f"attack.{self.name}.eps_iter", eps_iter, gt=0)
        self.rand_init = bool(rand_init)
        self.restarts = C.integer(f"attack.{self.name}.restarts", restarts, ge=1)
        self.targeted = bool(targeted)
        self.target = C.choice(f"attack.{self.name}.target", target, TARGETS)
        self.implementation = C.choice(f"attack.{self.name}.implementation", implementation, IMPLEMENTATIONS)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> PGD:
        return cls(cfg.eps, cfg.nb_iter, cfg.eps_iter, C.boolean(f"attack.{cls.name}.rand_init", cfg.rand_init),
                   cfg.restarts, C.boolean(f"attack.{cls.name}.targeted", cfg.targeted), cfg.target, cfg.implementation)

    def settings(self) -> dict:
        return {
            "nb_iter": self.nb_iter,
            "eps_iter": self.eps_iter,
            "rand_init": self.rand_init,
            "restarts": self.restarts,
            "targeted": self.targeted,
            "target": self.target if self.targeted else None,
            "implementation": self.implementation,
        }

    def once(self, model, x, labels, eps):
        """One PGD run; `labels` are targets when targeted."""
        if self.implementation == "native":
            return pgd(model, x, labels, eps=eps, nb_iter=self.nb_iter, eps_iter=self.eps_iter,
                       rand_init=self.rand_init, targeted=self.targeted)
        adversary = advertorch_attacks().LinfPGDAttack(
            model, eps=eps, nb_iter=self.nb_iter, eps_iter=self.eps_iter, rand_init=self.rand_init,
            clip_min=0.0, clip_max=1.0, targeted=self.targeted,
        )
        return adversary.perturb(x, labels)

    def crafting_model(self, model: nn.Module) -> nn.Module:
        """The model whose gradients craft the examples (the attacked model itself here)."""
        return model

    def perturb(self, model, x, y, eps):
        crafter = self.crafting_model(model)
        labels = y
        if self.targeted:
            with torch.no_grad():
                num_classes = model(x[:1]).shape[1]
            labels = choose_targets(model, x, y, self.target, num_classes)
        best = self.once(crafter, x, labels, eps)
        for _ in range(self.restarts - 1):
            # Examples already broken keep their adversarial example; the others try again.
            with torch.no_grad():
                survivors = model(best).argmax(1) == y
            if not survivors.any():
                break
            best[survivors] = self.once(crafter, x[survivors], labels[survivors], eps)
        return best

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


def cross_entropy(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PGD's loss (advertorch's default, cross-entropy of the logits) per example, with the
    logits; `pgd` ascends its sum."""
    logits = model(x)
    return F.cross_entropy(logits, labels, reduction="none"), logits


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
    loss=cross_entropy,
    keep_broken: torch.Tensor | None = None,
    observe=None,
) -> torch.Tensor:
    """L-infinity PGD; `y` is the target class when `targeted` (the loss is then descended).
    Call it with the model in eval mode and its parameters frozen (models.frozen).

    `loss(model, x, labels)` gives (the loss to ascend per example, the logits the model
    predicts with); PGD ascends its sum. Adaptive attacks pass their own (margin losses,
    pre-logit losses, surrogate heads).
    With `keep_broken` (the true labels), an example keeps the first iterate that the model
    misclassifies: where the loss is not monotone in the logits (a bounded head), a later step
    can undo a success that an earlier one found.
    `observe(x, losses, logits)`, if given, sees every iterate (detached) and, last, the point
    returned: the audit's indicators of attack failure read the optimisation from it (blf.audit)."""
    delta = torch.zeros_like(x)
    if rand_init:
        # Same draw as advertorch's rand_init_delta, so both start from the same point.
        delta.uniform_(-1.0, 1.0).mul_(eps)
        delta = (x + delta).clamp_(0.0, 1.0) - x
    found = None if keep_broken is None else torch.zeros(len(x), dtype=torch.bool, device=x.device)
    best = None if keep_broken is None else x.clone()
    for _ in range(nb_iter):
        delta.requires_grad_(True)
        with fast_input_gradients():
            value, logits = loss(model, x + delta, y)
        (grad,) = torch.autograd.grad(value.sum(), delta)
        with torch.no_grad():
            if observe is not None:
                observe((x + delta).detach(), value.detach(), logits.detach())
            if found is not None:
                new = (logits.argmax(1) != keep_broken) & ~found
                best[new] = (x + delta)[new]
                found |= new
            step = grad.sign_().mul_(eps_iter)
            delta = delta - step if targeted else delta + step
            delta = delta.clamp_(-eps, eps)
            delta = (x + delta).clamp_(0.0, 1.0) - x
    last = (x + delta).clamp_(0.0, 1.0).detach()
    returned = last if found is None else torch.where(found.view(-1, *[1] * (x.dim() - 1)), best, last)
    if observe is not None:
        with torch.no_grad():
            value, logits = loss(model, returned, y)
            observe(returned, value.detach(), logits.detach())
    return returned


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
    the true label. The adaptive attacks (surrogate.py, margin.py, transfer.py) are PGD with
    another loss (`objective`) or another crafting model (`crafting_model`).
    """

    name = "pgd"
    # Whether an example keeps the first iterate that breaks it (pgd's keep_broken): for losses
    # that are not monotone in the prediction; plain PGD keeps advertorch's last iterate.
    keep_broken = False
    # An optional hook that sees every iterate (pgd's `observe`): the audit's indicators read it.
    observe = None

    def __init__(self, eps, nb_iter: int, eps_iter: float, rand_init: bool = True, restarts: int = 1,
                 targeted: bool = False, target: str = "random", implementation: str = "native", *, name: str | None = None):
        super().__init__(eps, name=name)
        self.nb_iter = C.integer(f"attack.{self.name}.nb_iter", nb_iter, ge=1)
        self.eps_iter = C.number(f"attack.{self.name}.eps_iter", eps_iter, gt=0)
        self.rand_init = bool(rand_init)
        self.restarts = C.integer(f"attack.{self.name}.restarts", restarts, ge=1)
        self.targeted = bool(targeted)
        self.target = C.choice(f"attack.{self.name}.target", target, TARGETS)
        self.implementation = C.choice(f"attack.{self.name}.implementation", implementation, IMPLEMENTATIONS)

    @classmethod
    def pgd_arguments(cls, cfg: DictConfig, name: str | None = None) -> dict:
        """The PGD settings every option of this family has (its conf/attack/*.yaml keys)."""
        key = f"attack.{name or cls.name}"
        return {"eps": cfg.eps, "nb_iter": cfg.nb_iter, "eps_iter": cfg.eps_iter,
                "rand_init": C.boolean(f"{key}.rand_init", cfg.rand_init), "restarts": cfg.restarts,
                "targeted": C.boolean(f"{key}.targeted", cfg.get("targeted", False)), "target": cfg.get("target", "random"),
                "implementation": cfg.get("implementation", "native")}

    @classmethod
    def from_config(cls, cfg: DictConfig, name: str | None = None) -> PGD:
        return cls(**cls.pgd_arguments(cfg, name), name=name)

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

    def objective(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the loss PGD ascends, per example, and the logits) at x; `labels` are targets when targeted."""
        return cross_entropy(model, x, labels)

    def once(self, model, x, labels, eps, y):
        """One PGD run; `labels` are targets when targeted, `y` the true labels."""
        if self.implementation == "native":
            return pgd(model, x, labels, eps=eps, nb_iter=self.nb_iter, eps_iter=self.eps_iter,
                       rand_init=self.rand_init, targeted=self.targeted, loss=self.objective,
                       keep_broken=y if self.keep_broken else None, observe=self.observe)
        adversary = advertorch_attacks().LinfPGDAttack(
            model, eps=eps, nb_iter=self.nb_iter, eps_iter=self.eps_iter, rand_init=self.rand_init,
            clip_min=0.0, clip_max=1.0, targeted=self.targeted,
        )
        return adversary.perturb(x, labels)

    def crafting_model(self, model: nn.Module) -> nn.Module:
        """The model whose gradients craft the examples (the attacked model itself here)."""
        return model

    def labels(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """What the loss is taken against: the true labels, or a target class when targeted."""
        if not self.targeted:
            return y
        with torch.no_grad():
            num_classes = model(x[:1]).shape[1]
        return choose_targets(model, x, y, self.target, num_classes)

    def perturb(self, model, x, y, eps):
        return self.restarted(model, self.crafting_model(model), x, y, self.labels(model, x, y), eps)

    def restarted(self, model, crafter, x, y, labels, eps, best=None):
        """`restarts` runs on `crafter`; an example broken on `model` (by `best`, or by an earlier
        restart) keeps its adversarial example, the others try again."""
        for _ in range(self.restarts):
            if best is None:
                best = self.once(crafter, x, labels, eps, y)
                continue
            with torch.no_grad():
                survivors = model(best).argmax(1) == y
            if not survivors.any():
                break
            best[survivors] = self.once(crafter, x[survivors], labels[survivors], eps, y[survivors])
        return best

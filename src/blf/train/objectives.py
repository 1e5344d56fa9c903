"""Training modes (the `training` config group): what one optimisation step minimises.

`standard` minimises the objective on clean inputs; `pgd_at` is Madry et al.'s adversarial
training, minimising it on PGD examples crafted against the current model (section 5.1);
`trades` is Zhang et al.'s TRADES. Examples are crafted with the model in eval mode and its
parameters frozen; the update then runs in train mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from blf import config as C
from blf.eval.attacks import pgd
from blf.nn.input_gradient import fast_input_gradients
from blf.nn.models import Classifier, frozen
from blf.nn.regularizers import Regularizer


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


def kl_to_clean(adv_logits: torch.Tensor, clean_probs: torch.Tensor) -> torch.Tensor:
    """Summed KL(f(x) || f(x')) between clean and adversarial softmax outputs, as the TRADES
    code computes it: KLDivLoss(log_softmax(adv), softmax(clean), reduction='sum')."""
    return F.kl_div(F.log_softmax(adv_logits, dim=1), clean_probs, reduction="sum")


class TRADES(PGDAdversarial):
    """TRADES (Zhang et al. 2019): J(x, y) + beta * KL(f(x) || f(x')) / batch, where x' maximises
    the KL in the eps-ball by signed-gradient steps from x + 0.001 N(0, I); J is the
    regularizer's objective on clean inputs (cross-entropy for `regularizer=none`)."""

    name = "trades"

    def __init__(self, beta: float, eps: float, nb_iter: int, eps_iter: float, init_std: float = 0.001):
        super().__init__(eps, nb_iter, eps_iter)
        self.beta = C.number("training.beta", beta, ge=0)
        self.init_std = C.number("training.init_std", init_std, ge=0)

    def describe(self) -> dict:
        return {"training": self.name, "beta": self.beta}

    def adversarial(self, classifier: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with frozen(classifier):
            with torch.no_grad():
                clean_probs = F.softmax(classifier(x), dim=1)
            x_adv = x + self.init_std * torch.randn_like(x)
            for _ in range(self.nb_iter):
                x_adv.requires_grad_(True)
                with fast_input_gradients():
                    loss = kl_to_clean(classifier(x_adv), clean_probs)
                (grad,) = torch.autograd.grad(loss, x_adv)
                with torch.no_grad():
                    x_adv = x_adv + self.eps_iter * grad.sign()
                    x_adv = torch.min(torch.max(x_adv, x - self.eps), x + self.eps).clamp_(0.0, 1.0)
            return x_adv.detach()

    def loss(self, classifier, x, y, regularizer):
        x_adv = self.adversarial(classifier, x, y)
        logits = classifier(x)
        robust = kl_to_clean(classifier(x_adv), F.softmax(logits, dim=1)) / x.shape[0]
        return regularizer(logits, y) + self.beta * robust, logits


def build(cfg: DictConfig) -> Standard:
    """The training mode `cfg._target_` names (conf/training/<option>.yaml); `regime` picks the
    model's recipe, it is not an argument."""
    return C.instantiate("training", cfg, Standard, skip=("name", "regime"))

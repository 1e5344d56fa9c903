"""SPSA (Uesato et al. 2018) through advertorch's LinfSPSAAttack (section 5.3, Table 1).

A gradient-free attack: each iteration estimates the gradient of the margin loss from
`nb_sample` random +-delta probes (two forward passes each) and takes an Adam step. Very
expensive (MNIST, 40 iterations x 2048 samples: ~160k forward passes per image), so evaluate it
on a subset (`eval.n`); the subset is the same for every model.
"""

from __future__ import annotations

from omegaconf import DictConfig

from blf import config as C
from blf.compat import advertorch_attacks
from blf.eval.attacks.base import Attack


class SPSA(Attack):
    name = "spsa"

    def __init__(self, eps, delta: float, lr: float, nb_iter: int, nb_sample: int, max_batch_size: int, batch_size: int | None):
        super().__init__(eps)
        self.delta = C.number("attack.spsa.delta", delta, gt=0)
        self.lr = C.number("attack.spsa.lr", lr, gt=0)
        self.nb_iter = C.integer("attack.spsa.nb_iter", nb_iter, ge=1)
        self.nb_sample = C.integer("attack.spsa.nb_sample", nb_sample, ge=1)
        self.max_batch_size = C.integer("attack.spsa.max_batch_size", max_batch_size, ge=1)
        self.batch_size = None if batch_size is None else C.integer("attack.spsa.batch_size", batch_size, ge=1)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> SPSA:
        return cls(cfg.eps, cfg.delta, cfg.lr, cfg.nb_iter, cfg.nb_sample, cfg.max_batch_size, cfg.batch_size)

    def settings(self) -> dict:
        # max_batch_size and batch_size change speed, not the attack.
        return {"delta": self.delta, "lr": self.lr, "nb_iter": self.nb_iter, "nb_sample": self.nb_sample}

    def perturb(self, model, x, y, eps):
        adversary = advertorch_attacks().LinfSPSAAttack(
            model, eps=eps, delta=self.delta, lr=self.lr, nb_iter=self.nb_iter, nb_sample=self.nb_sample,
            max_batch_size=self.max_batch_size, clip_min=0.0, clip_max=1.0,
        )
        return adversary.perturb(x, y).detach()

"""Attacks from the AutoAttack code (Croce & Hein 2020; PyPI package `pyautoattack`).

- `square`: Square Attack, a query-based random search on the margin loss (section 5.3,
  Table 2: 5000 queries), which no gradient masking can fool;
- `apgd_ce`: APGD on cross-entropy; `apgd_t`: targeted APGD on the DLR loss over the top
  `n_target_classes` wrong classes (appendix C, Table 4: five restarts each);
- `autoattack`: the standard AutoAttack ensemble (APGD-CE, APGD-T, FAB-T, Square), for numbers
  comparable with RobustBench.

The sub-attacks are seeded with `eval.seed`, so reruns give the same examples.
"""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from blf import config as C
from blf.eval.attacks.base import Attack


class Float32Logits(nn.Module):
    """The model with float32 logits. The AutoAttack code keeps float32 buffers beside the
    model's output and index-puts one into the other: under bf16 autocast (trainer.amp=bf16)
    Square failed with "Index put requires the source and destination dtypes match" once 32 or
    more points were attacked. The model itself still computes under the run's autocast."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).float()


def _module():
    import pyautoattack

    return pyautoattack


class Square(Attack):
    name = "square"

    def __init__(self, eps, n_queries: int, p_init: float, n_restarts: int, loss: str, seed: int, batch_size=None):
        super().__init__(eps)
        self.n_queries = C.integer("attack.square.n_queries", n_queries, ge=1)
        self.p_init = C.number("attack.square.p_init", p_init, gt=0, le=1)
        self.n_restarts = C.integer("attack.square.n_restarts", n_restarts, ge=1)
        self.loss = C.choice("attack.square.loss", loss, ("margin", "ce"))
        self.seed = int(seed)
        self.batch_size = batch_size

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Square:
        return cls(cfg.eps, cfg.n_queries, cfg.p_init, cfg.n_restarts, cfg.loss, cfg.seed)

    def settings(self) -> dict:
        return {"n_queries": self.n_queries, "p_init": self.p_init, "n_restarts": self.n_restarts, "loss": self.loss, "seed": self.seed}

    def perturb(self, model, x, y, eps):
        from pyautoattack.square import SquareAttack

        # resc_schedule=False: AutoAttack's own setting for a fixed query budget.
        attack = SquareAttack(Float32Logits(model), norm="Linf", n_queries=self.n_queries, eps=eps, p_init=self.p_init,
                              n_restarts=self.n_restarts, seed=self.seed, loss=self.loss, resc_schedule=False,
                              device=x.device)
        return attack.perturb(x, y).detach()


class APGDCE(Attack):
    name = "apgd_ce"

    def __init__(self, eps, n_iter: int, n_restarts: int, rho: float, seed: int, batch_size=None):
        super().__init__(eps)
        self.n_iter = C.integer(f"attack.{self.name}.n_iter", n_iter, ge=1)
        self.n_restarts = C.integer(f"attack.{self.name}.n_restarts", n_restarts, ge=1)
        self.rho = C.number(f"attack.{self.name}.rho", rho, gt=0, lt=1)
        self.seed = int(seed)
        self.batch_size = batch_size

    @classmethod
    def from_config(cls, cfg: DictConfig):
        return cls(cfg.eps, cfg.n_iter, cfg.n_restarts, cfg.rho, cfg.seed)

    def settings(self) -> dict:
        return {"n_iter": self.n_iter, "n_restarts": self.n_restarts, "rho": self.rho, "seed": self.seed}

    def perturb(self, model, x, y, eps):
        from pyautoattack.autopgd_base import APGDAttack

        attack = APGDAttack(Float32Logits(model), n_iter=self.n_iter, norm="Linf", n_restarts=self.n_restarts, eps=eps,
                            seed=self.seed, loss="ce", rho=self.rho, device=x.device)
        return attack.perturb(x, y).detach()


class APGDTargeted(APGDCE):
    name = "apgd_t"

    def __init__(self, eps, n_iter: int, n_restarts: int, rho: float, seed: int, n_target_classes: int, batch_size=None):
        super().__init__(eps, n_iter, n_restarts, rho, seed, batch_size)
        self.n_target_classes = C.integer("attack.apgd_t.n_target_classes", n_target_classes, ge=1)

    @classmethod
    def from_config(cls, cfg: DictConfig):
        return cls(cfg.eps, cfg.n_iter, cfg.n_restarts, cfg.rho, cfg.seed, cfg.n_target_classes)

    def settings(self) -> dict:
        return {**super().settings(), "n_target_classes": self.n_target_classes}

    def check(self, classifier, num_classes: int) -> None:
        if self.n_target_classes > num_classes - 1:
            raise C.ConfigError(
                f"attack.apgd_t.n_target_classes={self.n_target_classes} exceeds the {num_classes - 1} wrong classes; "
                f"allowed: 1..{num_classes - 1}"
            )

    def perturb(self, model, x, y, eps):
        from pyautoattack.autopgd_base import APGDAttack_targeted

        attack = APGDAttack_targeted(Float32Logits(model), n_iter=self.n_iter, norm="Linf", n_restarts=self.n_restarts, eps=eps,
                                     seed=self.seed, rho=self.rho, n_target_classes=self.n_target_classes, device=x.device)
        return attack.perturb(x, y).detach()


class AutoAttackStandard(Attack):
    name = "autoattack"

    def __init__(self, eps, version: str, seed: int, batch_size=None):
        super().__init__(eps)
        self.version = C.choice("attack.autoattack.version", version, ("standard", "plus", "rand"))
        self.seed = int(seed)
        self.batch_size = batch_size

    @classmethod
    def from_config(cls, cfg: DictConfig):
        return cls(cfg.eps, cfg.version, cfg.seed)

    def settings(self) -> dict:
        return {"version": self.version, "seed": self.seed}

    def perturb(self, model, x, y, eps):
        adversary = _module().AutoAttack(Float32Logits(model), norm="Linf", eps=eps, version=self.version, seed=self.seed, device=x.device)
        adversary.verbose = False
        x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=x.shape[0])
        return x_adv.detach()

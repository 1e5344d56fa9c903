"""PGD through a tanh surrogate (section 5.2, Fig. 5).

BLF's output changes little where |z| exceeds its extrema, which could mislead gradient-based
attacks. The paper checks this by crafting PGD on a copy of the model whose BLF is replaced by
tanh (the same network and gamma; tanh is monotonic) and measuring the BLF model on those
examples.
"""

from __future__ import annotations

from torch import nn

from blf import config as C
from blf.eval.attacks.pgd import PGD
from blf.nn.heads import Tanh


class TanhSurrogatePGD(PGD):
    name = "pgd_tanh_surrogate"

    def check(self, classifier: nn.Module, num_classes: int) -> None:
        head = classifier.head.name
        if head not in ("blf", "lblf"):
            raise C.ConfigError(f"attack pgd_tanh_surrogate replaces a BLF head, but this run has head={head}; allowed: blf, lblf")

    def crafting_model(self, model: nn.Module) -> nn.Module:
        return model.with_head(Tanh(model.head.scale()))

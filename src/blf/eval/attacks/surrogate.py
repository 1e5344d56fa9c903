"""PGD through a surrogate head: the paper's tanh surrogate (section 5.2, Fig. 5) and BPDA.

BLF's output changes little where |z| exceeds its extrema, which could mislead gradient-based
attacks. The paper checks this by crafting PGD on a copy of the model whose BLF is replaced by
tanh (the same network and gamma; tanh is monotonic) and measuring the BLF model on those
examples (`pgd_tanh_surrogate`).

BPDA (Athalye et al. 2018, "Obfuscated gradients give a false sense of security") goes further:
the forward pass is the real model, so the loss and the success test see the real logits, and
only the backward pass goes through a surrogate of the head (`bpda_identity`, `bpda_tanh`,
`bpda_envelope`). The envelope is the head itself up to its extremum (or, for tanh and
sigmoid, its saturation point) and a straight line beyond, increasing: where BLF's gradient
vanishes or points back (|z| > z*, Theorem 3), the envelope's still says which way the logit
should move. For a head without a bounded function
(the Baseline's identity) every surrogate is the head itself: BPDA is plain PGD.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import nn

from blf import config as C
from blf.eval.attacks.pgd import PGD
from blf.nn.heads import BoundedHead, Head, LearnableBLF, Tanh, blf


class TanhSurrogatePGD(PGD):
    name = "pgd_tanh_surrogate"

    def check(self, classifier: nn.Module, num_classes: int) -> None:
        head = classifier.head.name
        if head not in ("blf", "lblf"):
            raise C.ConfigError(f"attack pgd_tanh_surrogate replaces a BLF head, but this run has head={head}; allowed: blf, lblf")

    def crafting_model(self, model: nn.Module) -> nn.Module:
        return model.with_head(Tanh(model.head.scale()))


@functools.cache
def extremum(function: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """The first pre-logit z > 0 where `function` starts to decrease (its first maximum), or inf for
    a function increasing on (0, 50] (tanh, sigmoid). Found on a fine grid in float64: BLF's is
    Theorem 3's z* = 2.3994 to the grid's 1e-4."""
    z = torch.arange(0.0, 50.0, 1e-4, dtype=torch.float64)
    steps = torch.diff(function(z))
    falling = torch.nonzero(steps < 0)
    return math.inf if len(falling) == 0 else float(z[int(falling[0])])


@functools.cache
def saturation_point(function: Callable[[torch.Tensor], torch.Tensor], fraction: float = 0.01) -> float:
    """Where a head's gradient stops guiding an attack: its extremum where it has one (BLF's z*,
    Theorem 3), else the first z > 0 where its slope falls below `fraction` of its slope at 0
    (tanh: 2.99, sigmoid: 5.99); inf for a function that never flattens."""
    z_e = extremum(function)
    if not math.isinf(z_e):
        return z_e
    z = torch.arange(0.0, 50.0, 1e-4, dtype=torch.float64)
    slope = torch.diff(function(z))
    flat = torch.nonzero(slope <= fraction * slope[0])
    return math.inf if len(flat) == 0 else float(z[int(flat[0])])


def bounded_function(head: Head) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The bounded function g of a head (logits = gamma * g(z)); None for the identity."""
    if isinstance(head, LearnableBLF):
        return blf
    if isinstance(head, BoundedHead):
        return head.function
    return None


def envelope(function: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """g up to its saturation point z_e (BLF: its extremum z*) and beyond it g(z_e) + (g(z_e) /
    z_e)(z - z_e), which keeps increasing (and likewise below -z_e); g itself where it never
    flattens. Its gradient never vanishes or turns where the head's does."""
    z_e = saturation_point(function)
    if math.isinf(z_e):
        return function(z)
    inside = z.clamp(-z_e, z_e)
    peak = float(function(torch.tensor(z_e, dtype=torch.float64)))
    return function(inside) + (peak / z_e) * (z - inside)


SURROGATES = ("identity", "tanh", "envelope")


class StraightThrough(Head):
    """The real head's value with a surrogate's gradient (BPDA): surrogate(z) + (head(z) -
    surrogate(z)) detached."""

    def __init__(self, head: Head, surrogate: str):
        super().__init__()
        self.real, self.surrogate, self.name = head, surrogate, head.name

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        logits = self.real(z)
        function = bounded_function(self.real)
        if function is None:  # the identity: nothing to replace
            return logits
        gamma = self.real.gamma
        smooth = {"identity": lambda v: v, "tanh": torch.tanh,
                  "envelope": lambda v: envelope(function, v)}[self.surrogate](z)
        smooth = gamma * smooth
        return smooth + (logits - smooth).detach()


class BPDA(PGD):
    """PGD whose backward pass goes through `surrogate` in place of the head (module docstring).
    Keeps the first iterate that breaks an example: the real loss is not monotone in the
    surrogate's direction."""

    name = None  # the option's: bpda_identity, bpda_tanh, bpda_envelope
    keep_broken = True

    def __init__(self, eps, nb_iter: int, eps_iter: float, rand_init: bool = True, restarts: int = 1,
                 surrogate: str = "envelope", *, name: str | None = None):
        super().__init__(eps, nb_iter, eps_iter, rand_init, restarts, name=name)
        self.surrogate = C.choice(f"attack.{self.name}.surrogate", surrogate, SURROGATES)

    @classmethod
    def from_config(cls, cfg, name: str | None = None) -> BPDA:
        arguments = cls.pgd_arguments(cfg, name)
        return cls(arguments["eps"], arguments["nb_iter"], arguments["eps_iter"], arguments["rand_init"],
                   arguments["restarts"], cfg.surrogate, name=name)

    def settings(self) -> dict:
        return {**super().settings(), "surrogate": self.surrogate}

    def crafting_model(self, model: nn.Module) -> nn.Module:
        return model.with_head(StraightThrough(model.head, self.surrogate))

"""Heads: the function applied to the pre-logits z just before softmax.

A head maps the pre-logit vector z (the last linear layer's output) to the logits that enter
softmax. The baseline is the identity; the paper's rivals are gamma*tanh(z) and
gamma*sigmoid(z) (Theorem 2), its proposal is gamma*g(z) with the Bounded Logit Function g
(eq. 5, Theorem 3), L-BLF learns gamma = softplus(gamma_tilde) (section 4), and appendix D adds
the sine and single-wave bounded functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from blf import config as C


def blf(z: torch.Tensor) -> torch.Tensor:
    """Bounded Logit Function, eq. (5): g(z) = 2{z s(z) + s(z) - z s(z)^2} - 1, s = sigmoid.

    Written as 2 s(z) + 2 z s(z) s(-z) - 1 because s(z)(1 - s(z)) = s(z) s(-z), and s(-z) keeps
    its precision where 1 - s(z) would round to 0 for large z.
    """
    s = torch.sigmoid(z)
    return 2.0 * s + 2.0 * z * s * torch.sigmoid(-z) - 1.0


def single_wave(z: torch.Tensor) -> torch.Tensor:
    """Appendix D (Fig. 6b): sin(z) / (e^z + e^-z)^2 = sin(z) sech(z)^2 / 4.

    sech^2 = 1 - tanh^2 never overflows, unlike (e^z + e^-z)^2 whose gradient is inf/inf
    for |z| > 44 in float32.
    """
    return torch.sin(z) * (1.0 - torch.tanh(z) ** 2) / 4.0


def blf_extremum(tol: float = 1e-12) -> tuple[float, float]:
    """The maximiser z* of BLF and g(z*), solved numerically (Theorem 3, footnote 2).

    g'(z) = 2 s(z)(1 - s(z)) f(z) with f(z) = 2 - z tanh(z/2) (eq. 17); f is decreasing for
    z > 0, positive at 2 and negative at sqrt(5) + 1, so bisection on f finds z*. By oddness,
    the minimiser is -z* with g(-z*) = -g(z*).
    """
    lo, hi = 2.0, math.sqrt(5.0) + 1.0
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if 2.0 - mid * math.tanh(mid / 2.0) > 0:
            lo = mid
        else:
            hi = mid
    z_star = 0.5 * (lo + hi)
    g_star = float(blf(torch.tensor(z_star, dtype=torch.float64)))
    return z_star, g_star


BOUNDED_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "blf": blf,
    "sine": torch.sin,
    "single_wave": single_wave,
}


class Head(nn.Module):
    """Maps pre-logits z to logits. Heads with a scale hold it as `gamma` (a buffer or a
    learned value); `scale()` reads it as a number, None for heads without one."""

    name = "head"

    def scale(self) -> float | None:
        gamma = getattr(self, "gamma", None)
        return None if gamma is None else float(torch.as_tensor(gamma).detach())

    def describe(self) -> dict:
        """The values that identify this head in records."""
        return {"head": self.name, "gamma": self.scale()}


class Identity(Head):
    """The baseline: logits are the pre-logits."""

    name = "identity"

    def __init__(self):  # no arguments: an option's stray keys are refused, not swallowed
        super().__init__()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z


class BoundedHead(Head):
    """gamma * g(z) for a fixed scale gamma > 0 and a bounded g: one of BOUNDED_FUNCTIONS by
    name, or any callable (then named after it).

    gamma is a buffer, so a state_dict says which head it belongs to. It is kept in float64:
    records read it back as the number the config gave (0.1, not 0.10000000149), and a 0-dim
    float64 tensor does not change the dtype of the float32 or bf16 logits it scales.
    """

    name = None  # the function's, set per object
    gamma: torch.Tensor

    def __init__(self, function: str | Callable[[torch.Tensor], torch.Tensor], gamma: float = 1.0):
        super().__init__()
        if callable(function):
            self.name, self.function = getattr(function, "__name__", type(function).__name__), function
        else:
            self.name = C.choice("head.name", function, BOUNDED_FUNCTIONS)
            self.function = BOUNDED_FUNCTIONS[function]
        # Theorems 2 and 3 assume 0 < gamma < infinity.
        self.register_buffer("gamma", torch.tensor(C.number("head.gamma", gamma, gt=0), dtype=torch.float64))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.gamma * self.function(z)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before gamma was a buffer lack it: their config's gamma stands.
        state_dict.setdefault(prefix + "gamma", self.gamma)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"{self.name}, gamma={self.scale():g}"


# Theorem 3: g has its maximum at z* (2 < z* < sqrt(5) + 1) and its minimum at -z*, where
# g(+-z*) = +-g(z*) with 1 < g(z*) < (sqrt(5) + 1)/2. Solved once, at import (microseconds).
Z_STAR, G_STAR = blf_extremum()


class _Extrema:
    """Theorem 3's extrema of gamma * g for the heads built on BLF."""

    z_star: float = Z_STAR  # the pre-logit where the logit is largest (its negative: smallest)

    @property
    def logit_max(self) -> float:
        """gamma * g(z*): no logit of this head exceeds it."""
        return self.scale() * G_STAR

    @property
    def logit_min(self) -> float:
        """-gamma * g(z*): no logit of this head is below it."""
        return -self.logit_max


class LearnableBLF(_Extrema, Head):
    """L-BLF (section 4): gamma = softplus(gamma_tilde) keeps gamma > 0 while it is learned."""

    name = "lblf"

    def __init__(self, gamma_tilde_init: float = -1.0):
        super().__init__()
        init = C.number("head.gamma_tilde_init", gamma_tilde_init)
        self.gamma_tilde = nn.Parameter(torch.tensor(init))

    @property
    def gamma(self) -> torch.Tensor:
        return F.softplus(self.gamma_tilde)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.gamma * blf(z)


def _with_function(class_name: str, function: str, doc: str, *bases: type) -> type[BoundedHead]:
    """A BoundedHead with its function fixed, built from gamma alone: what an option's
    `_target_` names (conf/head/<function>.yaml), and what `BLF(gamma=1.0)` means in code."""

    def __init__(self, gamma: float = 1.0):
        BoundedHead.__init__(self, function, gamma)

    return type(class_name, (*bases, BoundedHead), {"name": function, "__init__": __init__, "__doc__": doc,
                                                    "__module__": __name__, "__qualname__": class_name})


BLF = _with_function("BLF", "blf", "The paper's head: gamma * g(z), g the Bounded Logit Function (eq. 5); "
                     "`z_star`, `logit_max` and `logit_min` are Theorem 3's extrema.", _Extrema)
Tanh = _with_function("Tanh", "tanh", "gamma * tanh(z), Theorem 2's rival.")
Sigmoid = _with_function("Sigmoid", "sigmoid", "gamma * sigmoid(z), Theorem 2's rival.")
Sine = _with_function("Sine", "sine", "gamma * sin(z) (appendix D).")
SingleWave = _with_function("SingleWave", "single_wave", "gamma * sin(z) / (e^z + e^-z)^2 (appendix D, Fig. 6b).")


def build(cfg: DictConfig) -> Head:
    """The head `cfg._target_` names (conf/head/<option>.yaml), from the option's values."""
    return C.instantiate("head", cfg, Head)

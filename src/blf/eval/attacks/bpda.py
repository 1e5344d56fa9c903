"""BPDA for modules (Athalye et al. ICML 2018 sec. 4.1.1): a module's forward pass kept, the
identity's gradient in its backward pass, so that an attack crosses a module that passes no
gradient (a quantizer) or a misleading one (a shattered transform); and the smooth surrogate, the
model with those modules removed. Heads have their own surrogates (surrogate.py)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class IdentityBackward(nn.Module):
    """BPDA for one module: its output forward, the identity's gradient backward (where its output
    is shaped like its input; else the module as it is)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x)
        return x + (out - x).detach() if out.shape == x.shape else out


def substituted(model: nn.Module, names: list[str], make) -> nn.Module:
    """A copy of `model` with each module of `names` (dotted) replaced by `make(module)`."""
    model = copy.deepcopy(model)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, make(getattr(parent, child)))
    return model


def with_straight_through(model: nn.Module, names: list[str]) -> nn.Module:
    """A copy of `model` whose modules `names` pass the identity's gradient (BPDA)."""
    return substituted(model, names, IdentityBackward)


def replaced(model: nn.Module, names: list[str]) -> nn.Module:
    """The smooth surrogate: a copy of `model` with the modules `names` replaced by the identity,
    forward and backward."""
    return substituted(model, names, lambda module: nn.Identity())

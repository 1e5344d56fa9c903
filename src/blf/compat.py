"""Import shims for third-party packages that lag behind torch.

advertorch 0.2.3 (its last release) imports `zero_gradients` from
`torch.autograd.gradcheck` at package import time (for its FAB attack); torch removed that
helper long ago, so `import advertorch.attacks` fails on a modern torch. We put a
behaviour-equivalent helper back on the *module object* before advertorch is imported.
(`import torch.autograd.gradcheck as m` binds the function of the same name, not the module,
so the module must be taken from sys.modules.)
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable

import torch


def _zero_gradients(x) -> None:
    if isinstance(x, torch.Tensor):
        if x.grad is not None:
            x.grad.detach_()
            x.grad.zero_()
    elif isinstance(x, Iterable):
        for element in x:
            _zero_gradients(element)


def advertorch_attacks():
    """Return the `advertorch.attacks` module, importable on current torch."""
    importlib.import_module("torch.autograd.gradcheck")
    gradcheck_module = sys.modules["torch.autograd.gradcheck"]
    if not hasattr(gradcheck_module, "zero_gradients"):
        gradcheck_module.zero_gradients = _zero_gradients
    return importlib.import_module("advertorch.attacks")


def advertorch_context():
    advertorch_attacks()
    return importlib.import_module("advertorch.context")

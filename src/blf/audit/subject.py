"""The audited model as the attacks see it: any `nn.Module` from images in [0, 1] to logits.

What the audit may do depends on what it knows of the model:
- pre-logits (our `Classifier`, anything from `blf.with_head`, or a `prelogits=` callable): the
  margin losses on the pre-logits and the pre-logit targeted attack run;
- a bounded head (`Classifier` with BLF, tanh, ...): BPDA through the head's smooth envelope and
  the tanh and identity surrogates run (eval/attacks/surrogate.py);
- modules that pass no gradient (a rounding or quantizing layer, found by backward hooks): BPDA
  replaces each with the identity on the backward pass (Athalye et al. 2018);
- a randomized forward pass (found by repeated forwards): EOT averages over draws.
Anything the audit cannot do for lack of knowledge is skipped, and the card says so.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import nn

from blf.eval.attacks.bpda import with_straight_through
from blf.eval.attacks.surrogate import bounded_function, saturation_point
from blf.nn.models import Classifier


class View(nn.Module):
    """A model with what our attacks call: `forward` (logits) and `prelogits_and_logits`. Where
    the pre-logits are unknown they are the logits (the margin attacks then read logits)."""

    def __init__(self, model: nn.Module, prelogits: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        self.model, self.prelogits = model, prelogits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def prelogits_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(self.model, Classifier):
            return self.model.prelogits_and_logits(x)
        logits = self.model(x)
        return (logits if self.prelogits is None else self.prelogits(x)), logits


class Expectation(nn.Module):
    """EOT (Athalye et al. 2018): the mean of `draws` forward passes of a randomized model, so
    that an attack follows the expected gradient rather than one draw's."""

    def __init__(self, model: nn.Module, draws: int):
        super().__init__()
        self.model, self.draws = model, draws

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.model(x) for _ in range(self.draws)]).mean(0)

    def prelogits_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.model.prelogits_and_logits(x) for _ in range(self.draws)]
        return torch.stack([z for z, _ in pairs]).mean(0), torch.stack([v for _, v in pairs]).mean(0)


def gradient_blockers(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[str]:
    """Names of the submodules that receive a gradient and pass on none (zero or non-finite for
    every example) with an output shaped like their input: where BPDA's identity can stand in."""
    found, hooks = [], []

    def hook(name):
        def check(module, grad_input, grad_output):
            given, passed = grad_output[0], grad_input[0] if grad_input else None
            if passed is None or given is None or passed.shape != given.shape:
                return
            receives = given.flatten(1).abs().sum(1) > 0
            passes = torch.isfinite(passed).flatten(1).all(1) & (passed.flatten(1).abs().sum(1) > 0)
            if receives.any() and not (passes & receives).any():
                found.append(name)
        return check

    try:
        for name, module in model.named_modules():
            if name and not list(module.children()):
                hooks.append(module.register_full_backward_hook(hook(name)))
    except RuntimeError:  # a TorchScript module takes no hooks: its modules cannot be told apart
        for h in hooks:
            h.remove()
        return []
    try:
        x = x.clone().requires_grad_(True)
        with torch.enable_grad(), warnings.catch_warnings():
            # Modules returning no tensor (a program's bookkeeping) warn that their hooks will not run: fine.
            warnings.simplefilter("ignore", UserWarning)
            torch.nn.functional.cross_entropy(model(x).float(), y, reduction="sum").backward()
    except RuntimeError:  # a module whose backward hooks torch cannot attach (in-place views): none found
        found = []
    finally:
        for h in hooks:
            h.remove()
    return found


class Subject:
    """The audited model and what the audit knows of it (module docstring)."""

    def __init__(self, model: nn.Module, prelogits: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.model = model
        self.classifier = model if isinstance(model, Classifier) else None
        self.has_prelogits = self.classifier is not None or prelogits is not None
        self.view = View(model, prelogits)
        self.function = None if self.classifier is None else bounded_function(self.classifier.head)
        self.blockers: list[str] = []
        self.randomized = False
        self.draws = 1

    @property
    def bounded(self) -> bool:
        """Whether the head is a bounded function the BPDA surrogates know."""
        return self.function is not None

    @property
    def saturation(self) -> float:
        """The pre-logit beyond which the head's gradient vanishes or turns (BLF: z*); inf if none."""
        return math.inf if self.function is None else saturation_point(self.function)

    def describe(self) -> dict:
        head = None if self.classifier is None else self.classifier.head
        return {"model": type(self.model).__name__, "head": None if head is None else head.name,
                "gamma": None if head is None else head.scale(), "prelogits": self.has_prelogits,
                "bounded_head": self.bounded, "gradient_blockers": list(self.blockers),
                "randomized": self.randomized}

    def crafter(self) -> nn.Module:
        """The model attacks differentiate: BPDA through gradient blockers, EOT over draws."""
        model = with_straight_through(self.view, [f"model.{n}" for n in self.blockers]) if self.blockers else self.view
        return Expectation(model, self.draws) if self.randomized and self.draws > 1 else model

    def classifier_crafter(self) -> Classifier | None:
        """The classifier for BPDA through the head (needs `with_head`), gradient blockers bridged."""
        if self.classifier is None:
            return None
        return with_straight_through(self.classifier, self.blockers) if self.blockers else self.classifier


def model_error(error: BaseException, model: nn.Module) -> str | None:
    """One line for an exception raised inside `model`'s own code: the innermost of its modules on
    the traceback, and the error; None where no module of `model` was running (not the model's)."""
    import traceback

    names = {id(m): name for name, m in model.named_modules()}
    found = None
    for frame, _ in traceback.walk_tb(error.__traceback__):
        owner = frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and id(owner) in names:
            found = owner
    if found is None:
        return None
    where = names[id(found)] or "(the top module)"
    first = (str(error).strip().splitlines() or [""])[0][:200]
    return f"the model raised {type(error).__name__} in module {where} ({type(found).__name__}): {first}"

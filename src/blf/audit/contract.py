"""The model's contract: what every number of the audit assumes of the model, checked before
any number is trusted. A model may break it by design or by accident; either way the card says
so, and the verdicts follow:

- finite logits: a model whose logits are all NaN or infinite is refused (there is nothing to
  audit); where only some are, accuracy at those images is ill-defined, and (a) cannot be
  `reliable`;
- an image's logits do not depend on the other images of its batch: BatchNorm left in training
  mode (or a program exported in it), a batch-wise normalisation, a cache. Then every accuracy
  depends on `--batch-size`, and (a) is `reliable` only when audited one image at a time or when
  the user accepts it as it is (`batch_dependence_ok`);
- determinism, looked for at clean images and at perturbed ones (off the 1/255 grid of the test
  images): a model noisy only at perturbed points is as randomized as one noisy everywhere, and
  randomness found anywhere turns on EOT and expectations;
- the mode the model came in: one left in training mode is audited in eval mode (how attacks see
  a deployed model), and the card says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from blf.errors import ConfigError
from blf.eval.signals.unstable_predictions import unstable_predictions


@dataclass
class Contract:
    randomized: bool = False
    unstable: int = 0  # clean predictions that changed over the stability draws
    batch_change: float | None = None  # the largest relative change of a logit with the batch; None: not tested
    nonfinite: int = 0  # images whose logits are not all finite
    notes: list[str] = field(default_factory=list)  # for the card
    caveats: list[str] = field(default_factory=list)  # what keeps (a) from being `reliable`


@torch.no_grad()
def check(view: nn.Module, x: torch.Tensor, *, batch_size: int, draws: int, eps: float, given_training: bool | None,
          cfg, batch_dependence_ok: bool = False) -> Contract:
    """Check the contract of `view` (eval mode already set) on the images `x` (module docstring).
    `eps`: the largest budget audited (the perturbed points lie within it); `given_training`: the
    mode the model came in (None: it refuses eval(), as a torch.export program does)."""
    found = Contract()
    parts = x.split(batch_size)
    logits = torch.cat([view(part) for part in parts])
    bad = ~torch.isfinite(logits).all(1)
    found.nonfinite = int(bad.sum())
    if found.nonfinite == len(x):
        raise ConfigError(f"the model returned non-finite logits (NaN or infinite) for all {len(x)} images; allowed: a "
                          "model whose logits are finite numbers")
    if found.nonfinite:
        found.notes.append(f"the model returned non-finite logits for {found.nonfinite} of {len(x)} clean images")
        found.caveats.append(f"non-finite logits on {found.nonfinite} clean images make accuracy there ill-defined")

    # Randomness: at the clean images (predictions over draws, logits over two passes), then at
    # perturbed points within the budget, where a model may draw noise that the 1/255 grid hides.
    found.unstable = int(torch.cat([unstable_predictions(view, part, draws) for part in parts]).sum())
    probe = x[: min(len(x), batch_size)]
    repeat = [view(probe) for _ in range(2)]
    generator = torch.Generator().manual_seed(0)
    noise = (torch.rand(probe.shape, generator=generator) * 2 - 1).to(probe.device, probe.dtype)
    perturbed = (probe + max(eps, 0.5 / 255) * noise).clamp(0, 1)
    at_perturbed = [view(perturbed) for _ in range(2)]
    clean_noise = not same(*repeat, 1e-5)
    perturbed_noise = not same(*at_perturbed, 1e-5)
    found.randomized = bool(found.unstable) or clean_noise or perturbed_noise
    if perturbed_noise and not (found.unstable or clean_noise):
        found.notes.append("the model's forward pass is deterministic at the clean images but randomized at perturbed "
                           "points (within the budget, off the images' 1/255 grid): it is treated as randomized")

    if not found.randomized:  # a randomized model's passes differ anyway: its batch dependence cannot be told
        probe = x[: min(len(x), cfg.contract.probe)]
        together = view(probe)
        alone = torch.cat([view(probe[i: i + 1]) for i in range(len(probe))])
        reversed_order = view(probe.flip(0)).flip(0)
        scale = max(1.0, float(together[torch.isfinite(together)].abs().max())) if torch.isfinite(together).any() else 1.0
        change = max(difference(together, alone), difference(together, reversed_order)) / scale
        found.batch_change = change
        if change > cfg.contract.batch_tolerance:
            found.notes.append(f"the model's outputs depend on the other images of its batch: passed one at a time or in "
                               f"reverse order, {len(probe)} images' logits moved by up to {change:.3g} of the largest "
                               f"(tolerance {cfg.contract.batch_tolerance:g}); every number depends on the batch size "
                               f"({batch_size} here)")
            if batch_size > 1 and not batch_dependence_ok:
                found.caveats.append("the model's outputs depend on its batch (BatchNorm in training mode?); audit with "
                                     "--batch-size 1, or accept it as it is with --batch-dependence-ok")
    if given_training:
        found.notes.append("the model was given in training mode; it was audited in eval mode (dropout off, batch-norm "
                           "statistics fixed), as a deployed model runs")
    elif given_training is None:
        found.notes.append("the model refuses eval() (a torch.export program): it was audited in the mode it was "
                           "exported in")
    return found


def same(a: torch.Tensor, b: torch.Tensor, rtol: float) -> bool:
    """Whether two passes' logits agree (NaN where both are NaN counts as agreeing)."""
    return bool(torch.allclose(a, b, rtol=rtol, atol=1e-6, equal_nan=True))


def difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest absolute difference of two logit tensors, over the entries finite in both; a
    finite entry against a non-finite one counts as infinite."""
    both = torch.isfinite(a) & torch.isfinite(b)
    if (torch.isfinite(a) != torch.isfinite(b)).any():
        return float("inf")
    return float((a - b)[both].abs().max()) if both.any() else 0.0

"""The signals of attack failure: each one a way a robustness number can be overstated, defined
once here with how it is detected per example, its fix (attacks that need no knowledge of the
defense) and its re-check after every fix has run. The audit's procedure loops over `SIGNALS`;
adding a signal is one module here and one entry under `indicators:` in conf/audit.yaml.

- unstable predictions: repeated forward passes disagree. Fix: EOT; accuracy as an expectation.
- silent success: an iterate was adversarial, the point returned is not. Fix: keep the best iterate.
- unavailable gradients: the input gradient is non-finite, zero, vanishing or reversed. Fix: BPDA,
  margin losses, Square.
- disagreeing gradients: the gradient disagrees with the loss's finite differences at the attack's
  scale. Fix: smoothed gradients, BPDA across the modules that disagree, transfer from a smooth
  surrogate.
- incomplete optimization: the loss still rose over the last steps. Fix: more steps, then APGD.
- non-converging restarts: restarts end at different outcomes or losses. Fix: more restarts.
- transfer failure: adversarial on the surrogate that crafted it, not on the model. Fix: margin
  losses on the pre-logits.
- another family wins: a gradient-free or transfer attack breaks it, no gradient attack does.
  Fix: full-budget Square, then every gradient repair.

The first six are the indicators of Pintor et al. (NeurIPS 2022); the last two catch what they
do not: gradients that exist and mislead (shattered gradients, Athalye et al. ICML 2018 sec. 4.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from blf.audit.procedure import Ledger, Procedure


@dataclass
class Fix:
    """One signal at one eps: what it flagged, the attacks its fix ran, the worst-case accuracy
    before and after them, and what it still flags after every fix."""

    signal: str
    flagged: int = 0
    attacks: list[str] = field(default_factory=list)
    before: float | None = None
    after: float | None = None
    still: int = 0
    note: str = ""


@dataclass
class Attempt:
    """The audit at one eps as the signals see it: the reported attack's runs, the worst case so
    far (`ledger`), each signal's flags and fix, and what fixes left for later signals (`found`:
    surrogate points, traces of longer attacks, the modules whose gradients disagree)."""

    procedure: Procedure
    eps: float
    ledger: Ledger
    traces: list                    # the reported attack's restarts, traced
    runs: list[torch.Tensor]        # their survival per example
    points: torch.Tensor            # the first run's points (the number a user would report)
    standing: torch.Tensor          # survived the first run
    flags: dict[str, torch.Tensor] = field(default_factory=dict)
    fixes: dict[str, Fix] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    found: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.standing)

    def none(self) -> torch.Tensor:
        return torch.zeros(self.n, dtype=torch.bool)

    def standing_among(self, index: torch.Tensor) -> torch.Tensor:
        """Of the examples `index`, those no attack has broken yet."""
        return self.ledger.standing(torch.isin(torch.arange(self.n), index))


class Signal:
    """One signal (module docstring). `cfg` is its entry under `indicators:` in conf/audit.yaml
    (`max_share`: the percent of the audited examples above which it fires)."""

    name: str
    title: str
    remedy: str
    after_standard_set = False  # detected on the reported attack (False) or after the standard set

    def __init__(self, cfg):
        self.cfg = cfg

    def detect(self, at: Attempt) -> torch.Tensor:
        """Per example, among those the reported attack left standing: whether it fires."""
        raise NotImplementedError

    def targets(self, at: Attempt, flags: torch.Tensor) -> torch.Tensor:
        """The examples its fix runs on: the flagged ones still standing."""
        return at.ledger.standing(flags)

    def repair(self, at: Attempt, index: torch.Tensor, fix: Fix) -> None:
        """Run the fix on the flagged examples still standing (`index`), naming its attacks in `fix`."""

    def recheck(self, at: Attempt) -> int:
        """How many examples it still flags after every fix (0: it cannot recur)."""
        return 0


def registry() -> list[type[Signal]]:
    """Every signal, in the order their fixes run: unstable predictions first (EOT changes how every
    later attack sees the model), transfer failure after the fixes that craft on surrogates."""
    from blf.audit.signals import (
        another_family,
        disagreeing_gradients,
        incomplete_optimization,
        non_converging_restarts,
        silent_success,
        transfer_failure,
        unavailable_gradients,
        unstable_predictions,
    )

    return [unstable_predictions.UnstablePredictions, silent_success.SilentSuccess,
            unavailable_gradients.UnavailableGradients, disagreeing_gradients.DisagreeingGradients,
            incomplete_optimization.IncompleteOptimization, non_converging_restarts.NonConvergingRestarts,
            transfer_failure.TransferFailure, another_family.AnotherFamilyWins]


SIGNALS: tuple[type[Signal], ...] = ()
NAMES: tuple[str, ...] = ()
TITLES: dict[str, str] = {}
REMEDIES: dict[str, str] = {}


def _index() -> None:
    global SIGNALS, NAMES, TITLES, REMEDIES
    SIGNALS = tuple(registry())
    NAMES = tuple(s.name for s in SIGNALS)
    TITLES = {s.name: s.title for s in SIGNALS}
    REMEDIES = {s.name: s.remedy for s in SIGNALS}


_index()

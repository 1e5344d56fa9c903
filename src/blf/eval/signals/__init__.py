"""The signals of attack failure: each one a way a robustness number can be overstated, defined
once here with how it is detected per example, its fix (attacks that need no knowledge of the
defense) and its re-check after every fix has run. The audit's procedure loops over `SIGNALS`;
adding a signal is one module here and one entry in conf/signals.yaml.

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

from blf.eval.signals import (
    another_family,
    disagreeing_gradients,
    incomplete_optimization,
    non_converging_restarts,
    silent_success,
    transfer_failure,
    unavailable_gradients,
    unstable_predictions,
)
from blf.eval.signals.base import Attempt, Fix, Signal


def settings():
    """conf/signals.yaml: every signal's settings and threshold (module docstring)."""
    from omegaconf import OmegaConf

    from blf import config as C

    found = OmegaConf.load(C.CONF / "signals.yaml")
    missing = sorted(set(NAMES) - set(found))
    if missing:
        raise C.ConfigError(f"conf/signals.yaml has no entry for {', '.join(missing)}; allowed: one entry per signal "
                            f"({', '.join(NAMES)})")
    return found


# Every signal, in the order their fixes run: unstable predictions first (EOT changes how every
# later attack sees the model), transfer failure after the fixes that craft on surrogates, another
# family after the standard set.
SIGNALS: tuple[type[Signal], ...] = (
    unstable_predictions.UnstablePredictions, silent_success.SilentSuccess, unavailable_gradients.UnavailableGradients,
    disagreeing_gradients.DisagreeingGradients, incomplete_optimization.IncompleteOptimization,
    non_converging_restarts.NonConvergingRestarts, transfer_failure.TransferFailure, another_family.AnotherFamilyWins)
NAMES = tuple(s.name for s in SIGNALS)
TITLES = {s.name: s.title for s in SIGNALS}
REMEDIES = {s.name: s.remedy for s in SIGNALS}

__all__ = ["Attempt", "Fix", "Signal", "SIGNALS", "NAMES", "TITLES", "REMEDIES", "settings"]

"""The audit's two answers at one eps, each three-valued like the report's claims.

(a) The audited number (the worst case per example after the fixes):
    - `reliable`: enough examples and budget, no signal of attack failure (signals/) above its threshold any more, and
      doubling the final attack's steps and restarts lowers it by at most `budget_tolerance`;
    - `unreliable`, naming what still fires;
    - `inconclusive`: too few examples, or the `quick` budget, to tell, or the model breaks its
      contract (contract.py: outputs that depend on the batch, non-finite logits).
(b) The number a user would have reported (the reported attack's first run) against it:
    - `matches`: the gap's 95% interval lies below `tolerance` points;
    - `overstated by D points [95% CI]`, with the indicators that explain the gap: the share of
      the examples behind it (robust to the reported attack, broken by the audit) that each
      indicator had flagged on the reported attack;
    - `inconclusive`: the interval straddles the tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import DictConfig

from blf.eval import signals as S
from blf.report import statistics


@dataclass(frozen=True)
class Answer:
    verdict: str
    reason: str


def interval(survival: torch.Tensor) -> statistics.Interval:
    """Accuracy (%) with its 95% interval: Wilson where every example is robust or broken, a
    t-interval over examples where a randomized model survives a share of draws."""
    values = survival.double().numpy()
    if np.all((values == 0) | (values == 1)):
        return statistics.wilson(int(values.sum()), len(values))
    return statistics.mean_interval(100.0 * values)


def gap(reported: torch.Tensor, audited: torch.Tensor) -> statistics.Interval:
    """Reported minus audited accuracy, in points, paired by example."""
    a, b = reported.double().numpy(), audited.double().numpy()
    if np.all((a == 0) | (a == 1)) and np.all((b == 0) | (b == 1)):
        return statistics.paired(a.astype(bool), b.astype(bool))
    return statistics.mean_interval(100.0 * (a - b))


def audited(result, cfg: DictConfig, budget_name: str, caveats: list[str] = ()) -> Answer:
    """(a) at one eps; `caveats`: the model's contract broken (contract.py), which no attack can
    make up for: then at best `inconclusive`."""
    n = len(result.audited)
    firing = []
    for name, fix in result.fixes.items():
        share = 100.0 * fix.still / n
        if share > cfg.signals[name].max_share:
            firing.append(f"{S.TITLES[name]} on {share:.1f}% (threshold {cfg.signals[name].max_share:g}%)")
    if result.budget and result.budget.get("drop", 0.0) > cfg.verdict.budget_tolerance:
        firing.append(f"doubling steps and restarts broke {result.budget['broken']} more examples "
                      f"(-{result.budget['drop']:.1f} points; tolerance {cfg.verdict.budget_tolerance:g})")
    if firing:
        return Answer("unreliable", "; ".join([*firing, *caveats]))
    if caveats:
        return Answer("inconclusive", "; ".join(caveats))
    if n < cfg.verdict.min_examples:
        return Answer("inconclusive", f"{n} examples; at least {cfg.verdict.min_examples} are needed to tell")
    if budget_name == "quick":
        return Answer("inconclusive", "the quick budget is too small to tell; use --budget standard or thorough")
    if result.eps == 0:
        return Answer("reliable", "clean accuracy: no attack")
    return Answer("reliable", "no signal above its threshold after the fixes; doubling steps and restarts "
                              f"changed {result.budget.get('drop', 0.0):.2f} points")


def explanation(result) -> list[tuple[str, int, int]]:
    """(indicator, examples behind the gap it flagged on the reported attack, examples behind the
    gap), largest first."""
    behind = (result.reported > 0) & (result.audited < result.reported)
    total = int(behind.sum())
    counted = [(name, int((result.flags[name] & behind).sum())) for name in S.NAMES]
    return [(name, k, total) for name, k in sorted(counted, key=lambda item: -item[1]) if k]


def reported(result, cfg: DictConfig) -> Answer:
    difference = gap(result.reported, result.audited)
    tolerance = cfg.verdict.tolerance
    text = f"{difference.estimate:.1f} points [{difference.low:.1f}, {difference.high:.1f}]"
    if difference.high <= tolerance:
        return Answer("matches", f"gap {text}, below {tolerance:g} points")
    if difference.low > tolerance:
        why = explanation(result)
        if why:
            reasons = ", ".join(f"{S.TITLES[name]} {k} of {total}" for name, k, total in why)
            because = f"; of the examples behind it, flagged on the reported attack: {reasons}"
        else:
            because = "; no indicator flagged the examples behind it (the ensemble of attacks, not one failure)"
        return Answer(f"overstated by {difference.estimate:.1f} points", f"[{difference.low:.1f}, {difference.high:.1f}]{because}")
    return Answer("inconclusive", f"gap {text} straddles the {tolerance:g}-point tolerance")


def finite(value: float) -> bool:
    return value is not None and math.isfinite(value)

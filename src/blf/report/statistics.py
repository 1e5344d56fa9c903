"""95% intervals and tests for accuracies measured on a test subset, and for their differences.

An accuracy is measured on `n` test images (a binomial proportion) of one trained run (one
seed); both the images and the training add error, and a number in a table or a claim carries
an interval that counts them:
- one run: the Wilson score interval over the images (Wilson 1927; it keeps its coverage near
  0% and 100%, where robust accuracies live);
- several seeds: the mean over the seeds, their standard deviation, and an interval from a
  two-level bootstrap (Davison and Hinkley 1997, section 3.8): resample the seeds, then the
  images within each resampled seed. The interval is the mean +- Student's t for k - 1 degrees
  of freedom x the bootstrap's standard error (Efron and Tibshirani 1993, chapters 6 and 12),
  not the bootstrap's percentiles: with the 3 or 5 seeds a study has, resampling the seeds sees
  (k - 1)/k of their variance and its percentiles are z's, not t's: far narrower than the
  t-interval over the seeds. Resampling the images as well counts their error a second time (each seed's value
  already carries it); for a few seeds the two roughly offset, and where the seeds happen to
  agree the images' error remains in the interval, where the t-interval over the seeds would
  shrink to nothing. Resampling a seed's n images with replacement draws its number of correct
  examples as Binomial(n, its accuracy), so the bootstrap needs the counts, not the outcomes.
  Values that are not accuracies over images (norms, losses) take the t-interval over seeds.
Two runs evaluated on the same images (the subset is fixed by dataset, n and eval_seed,
records.py) are compared example by example, from the per-example outcomes records carry since
schema 3: the effect is the difference of accuracies in points, its interval Bonett and Price's
adjusted Wald interval for paired proportions (2012; it behaves where no example is discordant),
and the p-value McNemar's exact test on the discordant examples. Where outcomes are missing
(records of schema 2) or the subsets differ, the comparison is unpaired: Newcombe's hybrid score
interval for two independent proportions (1998, method 10) and a two-proportion z-test. Across
seeds the i-th run of one side (by seed) is set against the i-th of the other; where every pair
has its outcomes on the same images, the two-level bootstrap resamples these seed pairs and then
the images of each pair, the same images for both sides (each image falls in one of four kinds:
right for both, for one side only, for the other only, for neither; the resampled counts of the
kinds are multinomial), and the interval is taken as above. Where a pair lacks outcomes the
interval is the t-interval over the per-seed differences. Runs beyond the shorter side are left
out of the difference (they still count in each side's mean). Every interval names the method
behind it.

A value that is not an accuracy over images (operator norms, loss differences, logit norms) or
a published number has no sampling model: one run is a point, an interval of zero width.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

from blf.run.records import decode_outcome

LEVEL = 0.95
_Z = NormalDist().inv_cdf(0.5 + LEVEL / 2)
# How tables say what their brackets mean (caption or foot).
CAPTION = ("mean +- standard deviation over the seeds where there are several; 95% intervals in brackets: Wilson "
           "over the test images for one seed, for more a bootstrap over the seeds and their test images (Student t "
           "over the seeds for a value without images); a value without one has no sampling model (one run of a "
           "norm or a loss)")
# The two-level bootstrap: resamples, and a fixed seed so that the same records give the same intervals.
RESAMPLES = 2000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Sample:
    """One run's number in a cell: `value` (an accuracy in %, or another metric) and, for an
    accuracy, the test subset it was measured on (n, eval_seed) and its per-example `outcome`
    (records.encode_outcome's hex; None before schema 3)."""

    value: float
    seed: int | None = None
    n: int | None = None
    eval_seed: int | None = None
    outcome: str | None = None
    run: str | None = None

    @property
    def correct(self) -> int:
        return round(self.value * self.n / 100)

    def outcomes(self) -> np.ndarray | None:
        """The per-example correctness, None where it was not recorded or cannot be read."""
        if not self.outcome or not self.n:
            return None
        try:
            return decode_outcome(self.outcome, self.n)
        except ValueError:
            return None


@dataclass(frozen=True)
class Interval:
    """An estimate with its 95% interval (points for accuracies), the method behind it, and for
    a difference the p-value of the test of no difference."""

    estimate: float
    low: float
    high: float
    method: str
    p_value: float | None = None
    std: float | None = None  # over seeds, where there are several

    def text(self, decimals: int = 1, signed: bool = False) -> str:
        """`74.4 [71.6, 77.0]`, with the standard deviation over seeds where there are several
        (`74.4 ± 1.2 [70.1, 78.7]`); a point alone where the interval has no width."""
        spell = f"{{:{'+' if signed else ''}.{decimals}f}}".format
        if self.low == self.high == self.estimate:
            return spell(self.estimate)
        spread = f" ± {self.std:.{decimals}f}" if self.std is not None and not math.isnan(self.std) else ""
        return f"{spell(self.estimate)}{spread} [{spell(self.low)}, {spell(self.high)}]"

    def described(self, decimals: int = 1) -> str:
        """A difference with its method and p-value: `+1.7 [-1.1, 4.5] (paired (McNemar), p=0.24)`."""
        p = f", p={self.p_value:.2g}" if self.p_value is not None else ""
        return f"{self.text(decimals, signed=True)} ({self.method}{p})"


def point(value: float, method: str = "point") -> Interval:
    return Interval(value, value, value, method)


def samples(rows: pd.DataFrame, column: str, accuracy: bool) -> tuple[Sample, ...]:
    """The samples of a frame's rows (records, or observations of a cell): `column`'s value per
    row, with the test subset and outcome only where the value is an accuracy over images."""
    def get(row, name):
        value = row.get(name)
        return None if value is None or (not isinstance(value, str) and pd.isna(value)) else value

    found = []
    for row in rows.to_dict("records"):
        if get(row, column) is None:
            continue
        n = get(row, "n") if accuracy else None
        found.append(Sample(float(row[column]), seed=get(row, "seed"), n=int(n) if n else None,
                            eval_seed=get(row, "eval_seed"), outcome=get(row, "outcome") if accuracy else None,
                            run=get(row, "run_dir")))
    return tuple(found)


def wilson(correct: int, n: int) -> Interval:
    """The Wilson score interval of one accuracy (`correct` of `n`), in points."""
    p = correct / n
    centre = (p + _Z**2 / (2 * n)) / (1 + _Z**2 / n)
    half = _Z * math.sqrt(p * (1 - p) / n + _Z**2 / (4 * n**2)) / (1 + _Z**2 / n)
    return Interval(100 * correct / n, 100 * max(centre - half, 0.0), 100 * min(centre + half, 1.0), "Wilson")


def seed_spread(values: Sequence[float]) -> Interval:
    """Mean, standard deviation and Student t-interval over seeds (at least 2 values)."""
    values = np.asarray(values, dtype=float)
    k = len(values)
    mean, std = float(values.mean()), float(values.std(ddof=1))
    half = t_quantile(k - 1) * std / math.sqrt(k)
    t = mean / (std / math.sqrt(k)) if std > 0 else (math.inf if mean else 0.0)
    return Interval(mean, mean - half, mean + half, f"t over {k} seeds", p_value=t_two_sided_p(t, k - 1), std=std)


def mean_interval(values: Sequence[float]) -> Interval:
    """The mean of per-example values (a randomized model's share of draws survived, in %, or
    their paired differences) with a Student t-interval over the examples."""
    values = np.asarray(values, dtype=float)
    k = len(values)
    mean = float(values.mean())
    if k < 2:
        return point(mean, "mean of one example")
    std = float(values.std(ddof=1))
    half = t_quantile(k - 1) * std / math.sqrt(k)
    return Interval(mean, mean - half, mean + half, f"t over {k} examples")  # `std` is the seeds' spread


def estimate(found: Sequence[Sample]) -> Interval:
    """A cell's value with its interval: for several seeds of an accuracy the bootstrap over
    seeds and images, of another value the t-interval over seeds; Wilson for one run of an
    accuracy, else a point."""
    if len(found) >= 2:
        if all(s.n for s in found):
            return seeds_and_images(found)
        return seed_spread([s.value for s in found])
    (one,) = found
    return wilson(one.correct, one.n) if one.n else point(one.value)


def _rng() -> np.random.Generator:
    return np.random.default_rng(BOOTSTRAP_SEED)


def _from_bootstrap(values: np.ndarray, resampled: np.ndarray, method: str) -> Interval:
    """The mean of the per-seed `values` +- t for k - 1 degrees of freedom x the standard error
    of the `resampled` means (module docstring), its t-test p-value and the seeds' spread."""
    k = len(values)
    mean, std = float(values.mean()), float(values.std(ddof=1))
    error = float(resampled.std(ddof=1))
    half = t_quantile(k - 1) * error
    t = mean / error if error > 0 else (math.inf if mean else 0.0)
    return Interval(mean, mean - half, mean + half, method, p_value=t_two_sided_p(t, k - 1), std=std)


def seeds_and_images(found: Sequence[Sample]) -> Interval:
    """The mean accuracy over k >= 2 seeds with the two-level bootstrap's interval: k seeds drawn
    with replacement, then each drawn seed's n images with replacement (its correct count is
    Binomial(n, its accuracy))."""
    k = len(found)
    n = np.array([s.n for s in found])
    accuracy = np.array([s.correct for s in found]) / n
    rng = _rng()
    drawn = rng.integers(k, size=(RESAMPLES, k))
    means = 100 * (rng.binomial(n[drawn], accuracy[drawn]) / n[drawn]).mean(axis=1)
    found = _from_bootstrap(np.array([s.value for s in found]), means, f"bootstrap over {k} seeds and their images")
    # An accuracy lies in [0, 100]: the t-quantile's reach beyond it (two seeds: t = 12.7) is none of its range.
    return dataclasses.replace(found, low=max(found.low, 0.0), high=min(found.high, 100.0))


def paired_seeds_and_images(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> Interval:
    """a - b over k >= 2 seed pairs (the boolean outcomes of each pair on the same images) with
    the two-level bootstrap's interval: k pairs drawn with replacement, then each drawn pair's n
    images with replacement, the same images for both sides: the counts of the images right for
    a only and for b only are the multinomial of the pair's four kinds, drawn as a binomial and
    a binomial of the rest."""
    k = len(pairs)
    n = np.array([len(a) for a, _ in pairs])
    a_only = np.array([np.sum(a & ~b) for a, b in pairs]) / n
    b_only = np.array([np.sum(~a & b) for a, b in pairs]) / n
    rng = _rng()
    drawn = rng.integers(k, size=(RESAMPLES, k))
    size, first = n[drawn], a_only[drawn]
    ahead = rng.binomial(size, first)
    # Of the images not right for a only, the share right for b only (none left where every image is).
    rest = np.divide(b_only[drawn], 1 - first, out=np.zeros_like(first), where=first < 1)
    behind = rng.binomial(size - ahead, np.clip(rest, 0.0, 1.0))
    means = 100 * ((ahead - behind) / size).mean(axis=1)
    return _from_bootstrap(100 * (a_only - b_only), means, f"bootstrap over {k} seeds and their images, paired")


def paired(a: np.ndarray, b: np.ndarray) -> Interval:
    """a - b on the same examples (boolean outcomes, in order): Bonett-Price interval, McNemar's
    exact p-value."""
    n = len(a)
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    p12, p21 = (a_only + 1) / (n + 2), (b_only + 1) / (n + 2)
    centre = p12 - p21
    half = _Z * math.sqrt((p12 + p21 - centre**2) / (n + 2))
    return Interval(100 * (a_only - b_only) / n, 100 * max(centre - half, -1.0), 100 * min(centre + half, 1.0),
                    "paired (McNemar)", p_value=mcnemar_p(a_only, b_only))


def mcnemar_p(a_only: int, b_only: int) -> float:
    """McNemar's exact two-sided p-value: the discordant examples as a fair coin."""
    m = a_only + b_only
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(min(a_only, b_only) + 1))
    return min(1.0, 2 * tail / 2**m)


def unpaired(a: Sample, b: Sample) -> Interval:
    """a - b from two binomials (different or unknown images): Newcombe's hybrid score interval,
    two-proportion z-test."""
    wa, wb = wilson(a.correct, a.n), wilson(b.correct, b.n)
    d = wa.estimate - wb.estimate
    low = d - math.hypot(wa.estimate - wa.low, wb.high - wb.estimate)
    high = d + math.hypot(wa.high - wa.estimate, wb.estimate - wb.low)
    pooled = (a.correct + b.correct) / (a.n + b.n)
    se = 100 * math.sqrt(pooled * (1 - pooled) * (1 / a.n + 1 / b.n))
    p = 2 * (1 - NormalDist().cdf(abs(d) / se)) if se > 0 else float(d == 0)
    return Interval(d, low, high, "unpaired (binomial)", p_value=p)


def outcome_pair(a: Sample, b: Sample) -> tuple[np.ndarray, np.ndarray] | None:
    """The per-example outcomes of two runs measured on the same images, None where either is
    missing or the subsets differ."""
    if not (a.n and b.n) or a.n != b.n or a.eval_seed != b.eval_seed:
        return None
    ours, theirs = a.outcomes(), b.outcomes()
    return None if ours is None or theirs is None else (ours, theirs)


def run_difference(a: Sample, b: Sample) -> Interval:
    """a - b for one run of each: paired where both were measured on the same images with their
    outcomes, unpaired binomials where not, a point difference for values without images."""
    if not (a.n and b.n):
        return point(a.value - b.value)
    pair = outcome_pair(a, b)
    return paired(*pair) if pair is not None else unpaired(a, b)


def difference(a: Sequence[Sample], b: Sequence[Sample]) -> Interval:
    """a - b for two cells: within a seed the run difference (paired where it can be); across
    seeds the two-level bootstrap over seed pairs and their images where every pair has its
    outcomes on the same images, else a t-interval over the per-seed differences."""
    def by_seed(found):
        return sorted(found, key=lambda s: (s.seed is None, s.seed if s.seed is not None else 0))

    runs = list(zip(by_seed(a), by_seed(b)))
    if len(runs) == 1:
        return run_difference(*runs[0])
    pairs = [outcome_pair(x, y) for x, y in runs]
    if all(pair is not None for pair in pairs):
        return paired_seeds_and_images(pairs)
    per_seed = [run_difference(x, y) for x, y in runs]
    spread = seed_spread([d.estimate for d in per_seed])
    kinds = "/".join(sorted({d.method for d in per_seed}))
    return Interval(spread.estimate, spread.low, spread.high, f"t over {len(per_seed)} seeds of {kinds} differences",
                    p_value=spread.p_value, std=spread.std)


def t_central(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with `df` degrees of freedom (Abramowitz and Stegun 26.7.3-4)."""
    if math.isinf(t):
        return 1.0
    theta = math.atan(abs(t) / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2:
        term, total = math.cos(theta), 0.0
        for j in range(1, (df - 1) // 2 + 1):
            total += term
            term *= 2 * j / (2 * j + 1) * c2
        return 2 / math.pi * (theta + math.sin(theta) * total)
    term, total = 1.0, 0.0
    for j in range(1, df // 2 + 1):
        total += term
        term *= (2 * j - 1) / (2 * j) * c2
    return math.sin(theta) * total


def t_two_sided_p(t: float, df: int) -> float:
    return 1.0 - t_central(t, df)


def t_quantile(df: int, level: float = LEVEL) -> float:
    """The t with P(|T| < t) = level (bisection on t_central)."""
    low, high = 0.0, 1e4
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if t_central(middle, df) < level else (low, middle)
    return (low + high) / 2

"""The paper's claims as checks: each sentence of sections 3-5 and appendices C-E that a table
or figure can test, written as a named predicate over our cells (comparison.cells).

A claim reads one of VERDICTS. Each predicate compares numbers through blf.report.statistics:
a difference between two methods (or attacks) in one situation (dataset, model, setting,
attack, eps, and the evaluation's variant, so that like is set against like) is, for one seed,
the paired test on the per-example outcomes (unpaired binomials where outcomes are missing or
the images differ), and across seeds the bootstrap over the seeds and their images (a t-interval
over the per-seed differences where outcomes are missing); a value against a fixed number is
the cell's own interval (Wilson for one run, the bootstrap over seeds and images for several).
The claim's words put a boundary on that effect, and one comparison
- holds when its 95% interval lies on the claimed side of the boundary (strictly for "more",
  "less", "outperform"; the boundary included for "no more than", "at least", "within", and for
  a rank, where ties count as first),
- fails when the interval lies on the other side,
- is inconclusive when the interval contains the boundary: not separable at 95%.
A claim over several comparisons needs a quorum of them to hold (all; a majority; all but one):
it holds when enough hold, fails when enough cannot hold even if every inconclusive one did, and
is inconclusive between. It is `not measured` when the records hold none of its situations, when
a part of it, a subject it names or a rival it requires is missing (unless what was measured
already fails it), or when it speaks of several situations and fewer than `minimum` (2 unless
said) were measured: one situation never makes a claim about several hold. `effect`, `ci_low`,
`ci_high` are those of the deciding comparison: the one at the quorum's edge (for "all", the
weakest), in points for accuracies; a value read against a fixed number (a zero accuracy, z*,
the paper's clean accuracy) gives the value less that number.

A claim speaks of methods, and a method is more than one trained model: where a method behind
any comparison of a claim has fewer than MIN_SEEDS seeds, a claim that would hold, fail or be
inconclusive reads `inconclusive: one seed` (`inconclusive: 2 seeds`), followed, for a hold or a
failure, by what the intervals say of the models trained (`inconclusive: one seed (holds for the
models trained)`). The verdict's first word stays one of VERDICTS (`verdict_kind` reads it), and
`seeds` gives the fewest seeds behind the claim. Fig. 1's claims speak of each run ("every run
whose norm exceeds 7"), and the paper's own numbers have no seeds: neither counts seeds.

Where the paper's words are loose, the predicate picks one reading and says it in its text:
"most robust" is the first rank among the methods measured in the same situation, ties counting
as first; "comparable" and "no more than" allow TOLERANCE points; "almost zero" is at most
ALMOST_ZERO percent; "near z*" is within Z_STAR_BAND of it. Table 3 and 5 speak of ResNet-18 on
CIFAR-10 only, and so do their predicates.

The paper's own numbers (published_cells) have no outcomes, no seeds and no test subset: they
are read as points, intervals of zero width, so that each comparison holds or fails by the
published values alone (a tie holds a "ranks first" or "no more than" and fails a "more than").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from blf.nn.heads import Z_STAR
from blf.report import labels, statistics
from blf.report.statistics import Interval, Sample
from blf.run.records import EPS_TOLERANCE

VERDICTS = ("holds", "fails", "inconclusive", "not measured")
# Seeds a method needs behind a claim's comparisons for the claim to hold or fail: with fewer, the
# seeds' spread rests on one degree of freedom or none (the paper trains 5 seeds on MNIST, 3 on CIFAR-10).
MIN_SEEDS = 3
# The foot of claims.md: how to read a verdict.
NOTE = ("holds / fails: the deciding comparison's 95% interval lies on the claimed / the other side of the claim's "
        "boundary; inconclusive: it contains the boundary, or a method behind the claim has fewer than "
        f"{MIN_SEEDS} seeds (`inconclusive: one seed`, with what the intervals say of the models trained); seeds: "
        "the fewest seeds of a method behind the claim; effect: the deciding comparison, in points for accuracies "
        "(blf/report/claims.py says each reading).")
# Points of accuracy within which "comparable" holds (and a "no worse" may fall short).
TOLERANCE = 2.0
# "Almost zero" accuracy, in percent.
ALMOST_ZERO = 1.0
# Fig. 1: "the robust accuracies become almost zero when norms exceed about seven".
NORM_THRESHOLD = 7.0
# "Near z*" (Theorem 3; Fig. 1: "the L-inf norms are vertically aligned on about 2.4"): within 10%.
Z_STAR_BAND = 0.1 * Z_STAR
# Section 5.2: clean accuracies of RN18 + BLF (the models Fig. 5 attacks), standard and adversarial training.
FIG5_CLEAN = {"ST": 94.58, "AT": 82.42}
# The methods a "most robust" ranks among: the paper's rivals (Figs. 3, 4; Tables 1-5).
RIVALS = ("Baseline", "LSQ", "LSM", "BLF", "L-BLF", "TRADES")
SITUATION = ["dataset", "model", "setting", "attack", "eps", "variant"]
REGULARIZERS = ("LSQ", "LSM", "BLF")
APGD = ("apgd_ce", "apgd_t")
# The paper's CIFAR-10 setting of Tables 3 and 5, Figs. 1 and 5.
RN18 = {"dataset": "cifar10", "model": "resnet18"}


@dataclass(frozen=True)
class Reading:
    """One comparison read against its claim: `strength` is how far its interval clears the
    claim's boundary (negative: it does not), `effect` the compared quantity with its interval."""

    verdict: str
    strength: float
    effect: Interval
    text: str
    seeds: int | None = None  # the fewest seeds of the two sides; None: none counted (module docstring)


def _fewest(*seeds: int | None) -> int | None:
    counted = [s for s in seeds if s is not None]
    return min(counted) if counted else None


def stated(reading: str, seeds: int | None) -> str:
    """The verdict of a claim whose intervals read `reading` (one of VERDICTS) with `seeds` behind
    its fewest-seeded method: the reading itself from MIN_SEEDS seeds on, else inconclusive."""
    if seeds is None or seeds >= MIN_SEEDS or reading not in ("holds", "fails", "inconclusive"):
        return reading
    count = "one seed" if seeds == 1 else f"{seeds} seeds"
    return f"inconclusive: {count}" + ("" if reading == "inconclusive" else f" ({reading} for the models trained)")


def verdict_kind(verdict: str) -> str:
    """The one of VERDICTS a verdict is (`inconclusive: one seed (...)` is inconclusive)."""
    return next((v for v in VERDICTS if verdict == v or verdict.startswith(f"{v}:")), verdict)


@dataclass(frozen=True)
class Finding:
    """`reading`: what the intervals say (one of VERDICTS); `verdict`: the claim's verdict, which
    also counts the seeds behind it (`stated`)."""

    reading: str
    numbers: str = ""
    deciding: Reading | None = None
    seeds: int | None = None

    @property
    def verdict(self) -> str:
        return stated(self.reading, self.seeds)

    @property
    def effect(self) -> float | None:
        return self.deciding.effect.estimate if self.deciding else None

    @property
    def ci_low(self) -> float | None:
        return self.deciding.effect.low if self.deciding else None

    @property
    def ci_high(self) -> float | None:
        return self.deciding.effect.high if self.deciding else None


NOT_MEASURED = Finding("not measured")


@dataclass(frozen=True)
class Claim:
    """`robust`: a claim about robust accuracy, also read with each accuracy replaced by the
    worst case over every attack run on the same checkpoints (a claim that holds only under
    the attacks the paper ran may rest on masked gradients)."""

    name: str
    section: str
    text: str
    test: Callable[[pd.DataFrame], Finding]
    robust: bool = True


# effect = subject - other against the claim's boundary: per condition (side, strict, sign of the
# boundary): side +1 claims effect > boundary (>= where not strict), -1 effect < boundary; the
# boundary is sign x margin. "within" is two conditions.
RELATIONS = {
    "above": ((+1, True, +1),),
    "below": ((-1, True, -1),),
    "not_above": ((-1, False, +1),),
    "not_below": ((+1, False, -1),),
    "within": ((+1, False, -1), (-1, False, +1)),
}
QUORUMS = {"all": lambda n: n, "majority": lambda n: n // 2 + 1, "all_but_one": lambda n: max(n - 1, 1)}


def judge(effect: Interval, relation: str, margin: float = 0.0) -> tuple[str, float]:
    """(verdict, strength) of one comparison (module docstring)."""
    verdicts, strengths = [], []
    for side, strict, sign in RELATIONS[relation]:
        boundary = sign * margin
        near, far = (effect.low, effect.high) if side > 0 else (effect.high, effect.low)
        strength, beyond = side * (near - boundary), side * (far - boundary)
        clears = strength > 0 if strict else strength >= 0
        wrong = beyond <= 0 if strict else beyond < 0
        verdicts.append("holds" if clears else "fails" if wrong else "inconclusive")
        strengths.append(strength)
    return next(v for v in ("fails", "inconclusive", "holds") if v in verdicts), min(strengths)


def _quorum(readings: Sequence[Reading], needed: int) -> tuple[str, Reading]:
    """The verdict of `needed` of `readings` holding, and the reading at the quorum's edge."""
    held = sum(r.verdict == "holds" for r in readings)
    possible = held + sum(r.verdict == "inconclusive" for r in readings)
    if possible < needed:
        # A failure is shown by a reading that fails: of the failures that decide it (one more
        # than may miss), the least clear. Ordered by strength alone, an inconclusive reading
        # with a wider interval would stand for it.
        failing = sorted((r for r in readings if r.verdict == "fails"), key=lambda r: r.strength, reverse=True)
        return "fails", failing[len(readings) - needed]
    deciding = sorted(readings, key=lambda r: r.strength, reverse=True)[needed - 1]
    return ("holds" if held >= needed else "inconclusive"), deciding


def _finding(readings: Sequence[Reading], quorum: str, minimum: int, situations: int,
             missing: Sequence[str] = ()) -> Finding:
    if not readings:
        return NOT_MEASURED
    verdict, deciding = _quorum(readings, QUORUMS[quorum](len(readings)))
    numbers = "; ".join(r.text for r in readings)
    seeds = _fewest(*(r.seeds for r in readings))
    if situations < minimum:
        return Finding("not measured", f"{numbers} (only {situations} measured; the claim needs {minimum})", deciding, seeds)
    if missing and verdict != "fails":
        return Finding("not measured", f"{numbers} ({', '.join(missing)} not measured)", deciding, seeds)
    return Finding(verdict, numbers, deciding, seeds)


def _select(cells: pd.DataFrame, metric: str, eps: tuple[float | None, float | None] | None,
            where: Mapping[str, object]) -> pd.DataFrame:
    rows = cells[(cells["metric"] == metric) & cells["ours"].notna()]
    rows = rows if "variant" in rows else rows.assign(variant="")
    for column, allowed in where.items():
        allowed = allowed if isinstance(allowed, (list, tuple)) else [allowed]
        rows = rows[rows[column].isin(allowed)]
    if eps is not None:
        low, high = eps
        rows = rows[(rows["eps"] > low if low is not None else True) & (rows["eps"] < high if high is not None else True)]
    return rows.assign(eps=rows["eps"].fillna(-1), variant=rows["variant"].fillna(""))  # no budget: one situation


def _situation(key: Sequence, columns: Sequence[str]) -> str:
    parts = []
    for column, value in zip(columns, key):
        if column == "eps":
            parts.append(f"eps={value:.4g}" if pd.notna(value) and value >= 0 else "")
        elif column == "model":
            parts.append(labels.facet_label("model", value))
        elif column == "variant" and isinstance(value, str) and value:
            parts.append(f"({value})")
        elif isinstance(value, str) and value:
            parts.append(value)
    return " ".join(p for p in parts if p)


def _who(row: pd.Series) -> str:
    return f"{row['method']} ({row['hp']}={row['hp_value']:g})" if pd.notna(row.get("hp_value")) else row["method"]


def _samples(row: pd.Series) -> tuple[Sample, ...]:
    """A cell's samples; a cell without them (a published number) is its value as a point."""
    given = row.get("samples")
    return given if isinstance(given, tuple) and given else (Sample(float(row["ours"])),)


def _seeds(row: pd.Series) -> int | None:
    """The seeds behind a cell: one run each (a cell never mixes evaluations); None for a
    published number, which has no runs."""
    given = row.get("samples")
    return len(given) if isinstance(given, tuple) and given else None


def _decimals(metric: str) -> int:
    return 1 if metric == "accuracy" else 3


def _compare(a: pd.Series, b: pd.Series, relation: str, margin: float, what: str) -> Reading:
    """a - b (statistics.difference) against the claim's boundary."""
    effect = statistics.difference(_samples(a), _samples(b))
    verdict, strength = judge(effect, relation, margin)
    text = f"{what}: {a['ours']:.3g} vs {b['ours']:.3g}, {effect.described(_decimals(a['metric']))} {verdict}"
    return Reading(verdict, strength, effect, text, _fewest(_seeds(a), _seeds(b)))


def ranked(method: str, *, rank: int = 1, quorum: str = "all", minimum: int = 2, metric: str = "accuracy",
           lower: bool = False, eps: tuple[float | None, float | None] | None = None, among: Sequence[str] = RIVALS,
           rivals: Sequence[str] = (), **where) -> Callable[[pd.DataFrame], Finding]:
    """`method` is among the best `rank` of the measured methods in every (or a `quorum` of the)
    situations with at least `rank` others (and every one of `rivals`); `lower`: smaller is
    better (operator norms, loss differences). In one situation it holds when at most rank - 1
    others are not clearly behind it, fails when `rank` others are clearly ahead; where a method
    has several hyper-parameters (a study without selection), its best stands for it."""

    def test(cells: pd.DataFrame) -> Finding:
        rows = _select(cells, metric, eps, {**where, "method": list(among)})
        readings = []
        for key, group in rows.groupby(SITUATION, sort=False, dropna=False):
            others = group[group["method"] != method]
            if method not in set(group["method"]) or others["method"].nunique() < rank or not set(rivals) <= set(group["method"]):
                continue
            mine = group[group["method"] == method].sort_values("ours", ascending=lower).iloc[0]
            against = [_compare(mine, other, "not_above" if lower else "not_below", 0.0, f"vs {_who(other)}")
                       for _, other in others.iterrows()]
            verdict, deciding = _quorum(against, len(against) - rank + 1)
            place = 1 + int(((others["ours"] < mine["ours"]) if lower else (others["ours"] > mine["ours"])).sum())
            readings.append(replace(deciding, verdict=verdict, seeds=_fewest(*(r.seeds for r in against)),
                                    text=f"{_situation(key, SITUATION)}: {_who(mine)} #{place}, {deciding.text}"))
        return _finding(readings, quorum, minimum, len(readings))

    return test


def versus(subjects: Mapping[str, object], other: Mapping[str, object], relation: str, *, margin: float = 0.0,
           relative: bool = False, quorum: str = "all", minimum: int = 2, metric: str = "accuracy",
           eps: tuple[float | None, float | None] | None = None, **where) -> Callable[[pd.DataFrame], Finding]:
    """Each subject (rows matching `subjects`, e.g. {"method": ["LSQ", "LSM"]}) stands in
    `relation` to `other` (e.g. {"method": "Baseline"}) in the same situation, within `margin`
    points (or `margin` x the other's value when `relative`). Every subject named must be
    measured for the claim to hold."""
    split = set(subjects) | set(other)
    named = [(c, v) for c, values in subjects.items() for v in (values if isinstance(values, (list, tuple)) else [values])]

    def test(cells: pd.DataFrame) -> Finding:
        rows = _select(cells, metric, eps, where)
        columns = [c for c in [*SITUATION, "method"] if c not in split]
        pairs = _select(rows, metric, None, subjects).merge(_select(rows, metric, None, other), on=columns,
                                                            suffixes=("", "_other"))
        readings = []
        for _, pair in pairs.iterrows():
            m = margin * abs(pair["ours_other"]) if relative else margin
            who = " ".join(str(pair[c]) for c in split)
            whom = " ".join(str(pair[f"{c}_other"]) for c in split)
            readings.append(_compare(pair, _other(pair), relation, m,
                                     f"{_situation([pair[c] for c in columns], columns)}: {who} vs {whom}"))
        missing = [f"{c}={v}" for c, v in named if not (pairs[c] == v).any()] if readings else []
        return _finding(readings, quorum, minimum, len(pairs.drop_duplicates(columns)) if readings else 0, missing)

    return test


def _other(pair: pd.Series) -> pd.Series:
    """The `_other` half of a merged pair as a cell of its own."""
    return pd.Series({c.removesuffix("_other"): v for c, v in pair.items() if c.endswith("_other")} | {"metric": pair["metric"]})


def _minus(interval: Interval, target: float) -> Interval:
    return replace(interval, estimate=interval.estimate - target, low=interval.low - target, high=interval.high - target)


def against(target: float, relation: str, *, margin: float = 0.0, minimum: int = 2, metric: str = "accuracy",
            eps: tuple[float | None, float | None] | None = None, **where) -> Callable[[pd.DataFrame], Finding]:
    """Every matching cell's value (its interval: statistics.estimate) stands in `relation` to
    the number `target`, within `margin`."""

    def test(cells: pd.DataFrame) -> Finding:
        readings = []
        for _, row in _select(cells, metric, eps, where).iterrows():
            value = statistics.estimate(_samples(row))
            verdict, strength = judge(_minus(value, target), relation, margin)
            text = f"{_situation([row[c] for c in SITUATION], SITUATION)} {_who(row)}: {value.text(_decimals(metric))} {verdict}"
            readings.append(Reading(verdict, strength, _minus(value, target), text, _seeds(row)))
        return _finding(readings, "all", minimum, len(readings))

    return test


def at_most(limit: float, **kwargs) -> Callable[[pd.DataFrame], Finding]:
    """Every matching cell is at most `limit` (its interval below it)."""
    return against(limit, "not_above", **kwargs)


def once_norm_exceeds(norm: str, methods: Sequence[str], *, eps: float, attack: str = "pgd", minimum: int = 2,
                      **where) -> Callable[[pd.DataFrame], Finding]:
    """Fig. 1: every run of `methods` whose mean `norm` (comparison.NORM_METRICS) on clean data
    exceeds NORM_THRESHOLD has almost zero accuracy (its Wilson interval at most ALMOST_ZERO)
    under `attack` at `eps`. Each run is a point of the figure, so each is read on its own."""

    def test(cells: pd.DataFrame) -> Finding:
        chosen = {**where, "method": list(methods)}
        norms = {s.run: s.value for _, row in _select(cells, norm, None, chosen).iterrows() for s in _samples(row)}
        robust = _select(cells, "accuracy", (eps - EPS_TOLERANCE, eps + EPS_TOLERANCE), {**chosen, "attack": attack})
        readings = []
        for _, row in robust.iterrows():
            for sample in _samples(row):
                if sample.run is None or norms.get(sample.run, 0.0) <= NORM_THRESHOLD:
                    continue
                value = statistics.estimate([sample])
                verdict, strength = judge(_minus(value, ALMOST_ZERO), "not_above")
                readings.append(Reading(verdict, strength, _minus(value, ALMOST_ZERO),
                                        f"{_who(row)} ({Path(sample.run).name}): {norm} {norms[sample.run]:.3g}, "
                                        f"{attack} accuracy {value.text()} {verdict}"))
        return _finding(readings, "all", minimum, len(readings))

    return test


def _both(*parts: Finding) -> Finding:
    """Parts of one sentence: it fails when any part fails; else it is not measured when a part
    is; else inconclusive when a part is; else it holds (as the parts' intervals read). The
    deciding reading is the weakest of the parts that decide; the seeds, the fewest of any part."""
    verdict = next(v for v in ("fails", "not measured", "inconclusive", "holds") if v in {p.reading for p in parts})
    deciding = [p.deciding for p in parts if p.reading == verdict and p.deciding] or [p.deciding for p in parts if p.deciding]
    return Finding(verdict, "; ".join(p.numbers for p in parts if p.numbers),
                   min(deciding, key=lambda r: r.strength) if deciding else None, _fewest(*(p.seeds for p in parts)))


CIFAR_10_OVER_255 = 10 / 255
POSITIVE = (0.0, None)  # eps > 0: attacked, not clean
CLEAN = (-EPS_TOLERANCE, EPS_TOLERANCE)  # eps = 0

CLAIMS: tuple[Claim, ...] = (
    Claim("large_logit_norms_not_robust", "3.3, Fig. 1",
          f"RN18, standard training: every Baseline, LSQ or LSM run whose mean logit L2 norm exceeds {NORM_THRESHOLD:g} "
          f"is almost not robust under PGD at eps = 4/255 (at most {ALMOST_ZERO:g}%)",
          once_norm_exceeds("logit_l2", ["Baseline", "LSQ", "LSM"], eps=4 / 255, setting="ST", **RN18)),
    Claim("tanh_not_robust", "3.3, Fig. 1",
          f"RN18, standard training: small logits do not make tanh robust: every tanh run whose mean pre-logit L2 norm "
          f"exceeds {NORM_THRESHOLD:g} is almost not robust under PGD at eps = 4/255 (at most {ALMOST_ZERO:g}%)",
          once_norm_exceeds("prelogit_l2", ["tanh"], eps=4 / 255, setting="ST", **RN18)),
    Claim("blf_prelogits_near_z_star", "4, Fig. 1, Theorem 3",
          f"RN18, standard training: BLF's mean pre-logit L-inf norm settles near z* = {Z_STAR:.4f} whatever gamma "
          f"(within {Z_STAR_BAND:.2f}, 10%)",
          against(Z_STAR, "within", margin=Z_STAR_BAND, metric="prelogit_linf", method="BLF", setting="ST", **RN18),
          robust=False),
    Claim("lsm_most_robust_2c2f_st_small_eps", "5.2, Fig. 3(a)",
          "2C2F, standard training: LSM is the most robust under PGD for 0 < eps < 0.2",
          ranked("LSM", dataset="mnist", model="2c2f", setting="ST", attack="pgd", eps=(0.0, 0.2 - 1e-9))),
    Claim("blf_most_robust_mnist_st_large_eps", "5.2, Fig. 3(a), (c)",
          "2C2F and 4C3F, standard training: BLF is the most robust under PGD for eps > 0.15",
          ranked("BLF", dataset="mnist", model=["2c2f", "4c3f"], setting="ST", attack="pgd", eps=(0.15 + 1e-9, None))),
    Claim("lblf_no_gain", "5.2, Fig. 3",
          f"L-BLF does not improve robustness under PGD: no more than {TOLERANCE:g} points above Baseline (MNIST, eps > 0)",
          versus({"method": "L-BLF"}, {"method": "Baseline"}, "not_above", margin=TOLERANCE, dataset="mnist",
                 attack="pgd", eps=POSITIVE)),
    Claim("lblf_gamma_grows", "4, 5.2",
          "L-BLF's learned gamma grows during training: above its initial softplus(gamma_tilde_init) (0.3133 for the "
          "paper's -1)",
          against(0.0, "above", metric="gamma_growth", minimum=1, method="L-BLF"), robust=False),
    Claim("blf_most_robust_2c2f_at", "5.2, Fig. 3(b)",
          "2C2F, adversarial training: BLF is the most robust under PGD (eps > 0)",
          ranked("BLF", dataset="mnist", model="2c2f", setting="AT", attack="pgd", eps=POSITIVE)),
    Claim("blf_comparable_trades_4c3f_at", "5.2, Fig. 3(d)",
          f"4C3F, adversarial training: BLF is comparable to TRADES under PGD (within {TOLERANCE:g} points, eps > 0)",
          versus({"method": "BLF"}, {"method": "TRADES"}, "within", margin=TOLERANCE, dataset="mnist", model="4c3f",
                 setting="AT", attack="pgd", eps=POSITIVE)),
    Claim("trades_not_above_baseline_2c2f", "5.2, Fig. 3(b)",
          "2C2F, adversarial training: TRADES is not more robust than Baseline under PGD (eps > 0)",
          versus({"method": "TRADES"}, {"method": "Baseline"}, "not_above", dataset="mnist", model="2c2f", setting="AT",
                 attack="pgd", eps=POSITIVE)),
    Claim("lsm_most_robust_rn18_st", "5.2, Fig. 4",
          "RN18, standard training: LSM is the most robust under PGD (eps > 0)",
          ranked("LSM", dataset="cifar10", model="resnet18", setting="ST", attack="pgd", eps=POSITIVE)),
    Claim("blf_most_robust_wrn_st", "5.2, Fig. 4",
          "WRN, standard training: BLF is the most robust under PGD (eps > 0)",
          ranked("BLF", dataset="cifar10", model="wrn34_10", setting="ST", attack="pgd", eps=POSITIVE)),
    Claim("blf_most_robust_cifar_at", "5.2, Fig. 4",
          "CIFAR-10, adversarial training: BLF is the most robust under PGD, TRADES included (eps > 0)",
          ranked("BLF", rivals=["TRADES"], dataset="cifar10", setting="AT", attack="pgd", eps=POSITIVE)),
    Claim("fig5_clean_accuracy", "5.2, Fig. 5",
          f"RN18 + BLF, clean accuracy (eps = 0): {FIG5_CLEAN['ST']}% under standard training and {FIG5_CLEAN['AT']}% "
          f"under adversarial training (within {TOLERANCE:g} points; the tanh-replaced models' own clean accuracies, "
          "94.58 and 83.38, are not recorded: the surrogate only crafts the examples)",
          lambda cells: _both(*(against(value, "within", margin=TOLERANCE, minimum=1, method="BLF", setting=setting,
                                        attack="pgd", eps=CLEAN, **RN18)(cells) for setting, value in FIG5_CLEAN.items())),
          robust=False),
    Claim("surrogate_stronger_st_large_eps", "5.2, Fig. 5",
          "RN18 + BLF, standard training, eps > 10/255: PGD through the tanh surrogate breaks more than PGD",
          versus({"attack": "pgd_tanh_surrogate"}, {"attack": "pgd"}, "below", method="BLF", setting="ST",
                 eps=(CIFAR_10_OVER_255 + 1e-9, None), **RN18), robust=False),
    Claim("surrogate_weak_elsewhere", "5.2, Fig. 5",
          f"RN18 + BLF, adversarial training (any eps > 0) and standard training (eps < 10/255): PGD through the tanh "
          f"surrogate is no stronger than PGD (within {TOLERANCE:g} points)",
          lambda cells: _both(
              versus({"attack": "pgd_tanh_surrogate"}, {"attack": "pgd"}, "not_below", margin=TOLERANCE, method="BLF",
                     setting="AT", eps=POSITIVE, **RN18)(cells),
              versus({"attack": "pgd_tanh_surrogate"}, {"attack": "pgd"}, "not_below", margin=TOLERANCE, method="BLF",
                     setting="ST", eps=(0.0, CIFAR_10_OVER_255 - 1e-9), **RN18)(cells)), robust=False),
    Claim("blf_most_robust_spsa_mnist_st", "5.3, Table 1",
          "MNIST, standard training: BLF is the most robust under SPSA",
          ranked("BLF", dataset="mnist", setting="ST", attack="spsa")),
    Claim("lsq_lsm_above_blf_spsa_cifar_st", "5.3, Table 1",
          "CIFAR-10, standard training: LSM and LSQ are more robust than BLF under SPSA",
          versus({"method": ["LSQ", "LSM"]}, {"method": "BLF"}, "above", dataset="cifar10", setting="ST", attack="spsa")),
    Claim("blf_most_robust_spsa_at_majority", "5.3, Table 1",
          "Adversarial training: BLF is the most robust under SPSA in a majority of settings",
          ranked("BLF", quorum="majority", setting="AT", attack="spsa")),
    Claim("blf_top_two_square", "5.3, Table 2",
          "BLF has the highest or second-highest accuracy under Square in almost all settings (all but one)",
          ranked("BLF", rank=2, quorum="all_but_one", attack="square")),
    Claim("regularizers_above_baseline_square_st", "5.3, Table 2",
          "Standard training: every logit regularisation (LSQ, LSM, BLF) is more robust than Baseline under Square",
          versus({"method": list(REGULARIZERS)}, {"method": "Baseline"}, "above", setting="ST", attack="square")),
    Claim("regularizers_smaller_operator_norms", "5.4, Table 3",
          "RN18: logit regularisation (LSQ, LSM, BLF) gives smaller mean L-inf operator norms of the convolutions than "
          "Baseline",
          versus({"method": list(REGULARIZERS)}, {"method": "Baseline"}, "below", metric="mean_conv", **RN18), robust=False),
    Claim("lblf_operator_norm_like_baseline", "5.4, Table 3",
          "RN18: L-BLF's mean operator norm is almost that of Baseline (within 20%)",
          versus({"method": "L-BLF"}, {"method": "Baseline"}, "within", margin=0.2, relative=True, metric="mean_conv",
                 **RN18), robust=False),
    Claim("blf_smallest_operator_norm_at", "5.4, Table 3",
          "RN18, adversarial training: BLF has the smallest mean operator norm",
          ranked("BLF", lower=True, metric="mean_conv", minimum=1, setting="AT", **RN18), robust=False),
    Claim("regularizers_not_below_baseline_apgd", "C, Table 4",
          f"Logit regularisation (LSQ, LSM, BLF) is superior or comparable to Baseline under APGD-CE and APGD-T "
          f"(at most {TOLERANCE:g} points below)",
          versus({"method": list(REGULARIZERS)}, {"method": "Baseline"}, "not_below", margin=TOLERANCE, attack=list(APGD))),
    Claim("regularizers_above_trades_mnist_apgd", "C, Table 4",
          "MNIST, adversarial training: logit regularisation (LSQ, LSM, BLF) outperforms TRADES under APGD: strictly more "
          "robust in a majority of the (method, model, attack) comparisons (the paper's 4C3F numbers tie)",
          versus({"method": list(REGULARIZERS)}, {"method": "TRADES"}, "above", quorum="majority", dataset="mnist",
                 setting="AT", attack=list(APGD))),
    Claim("apgd_t_zero_cifar_st", "C, Table 4",
          f"CIFAR-10, standard training: accuracy under APGD-T is zero (at most {ALMOST_ZERO:g}%) for every method",
          at_most(ALMOST_ZERO, dataset="cifar10", setting="ST", attack="apgd_t")),
    Claim("blf_most_robust_apgd_ce_majority", "C, Table 4",
          "BLF has the highest accuracy under APGD-CE in a majority of settings",
          ranked("BLF", quorum="majority", attack="apgd_ce")),
    Claim("sine_comparable_single_wave_below", "D, Fig. 7",
          f"Under PGD (eps > 0) the sine head is comparable to BLF (within {TOLERANCE:g} points) and the single wave "
          "is less robust than BLF",
          lambda cells: _both(
              versus({"method": "sine"}, {"method": "BLF"}, "within", margin=TOLERANCE, attack="pgd", eps=POSITIVE)(cells),
              versus({"method": "single wave"}, {"method": "BLF"}, "below", attack="pgd", eps=POSITIVE)(cells))),
    Claim("blf_smallest_loss_difference", "E, Table 5",
          "RN18: BLF makes the max - min input loss over random noise the smallest",
          ranked("BLF", lower=True, metric="max_minus_min", **RN18), robust=False),
    Claim("regularizers_smaller_loss_difference", "E, Table 5",
          "RN18: every logit regularisation (LSQ, LSM, BLF) makes the max - min input loss over random noise smaller "
          "than Baseline's",
          versus({"method": list(REGULARIZERS)}, {"method": "Baseline"}, "below", metric="max_minus_min", **RN18),
          robust=False),
)


def under_worst_case(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells with each accuracy (and its samples) replaced by the worst case of the same runs."""
    if "worst" not in cells:
        return cells
    use = (cells["metric"] == "accuracy") & cells["worst"].notna()
    samples = cells["worst_samples"].where(use, cells["samples"]) if "samples" in cells else None
    return cells.assign(ours=cells["worst"].where(use, cells["ours"]), **({"samples": samples} if samples is not None else {}))


def evaluate(cells: pd.DataFrame, claims: Sequence[Claim] = CLAIMS) -> pd.DataFrame:
    """One row per claim: claim, section, text, verdict (its first word one of VERDICTS; `stated`),
    the fewest seeds of a method behind it (empty where none are counted), effect, ci_low and
    ci_high of the deciding comparison, the numbers behind it, and for claims about robust
    accuracy the same under the worst case (`verdict_worst_case` ... `numbers_worst_case`; `-`
    for others)."""
    worst = under_worst_case(cells)
    rows = []
    for claim in claims:
        finding = claim.test(cells)
        under_worst = claim.test(worst) if claim.robust else Finding("-")
        rows.append({"claim": claim.name, "section": claim.section, "text": claim.text,
                     **_columns(finding, ""), **_columns(under_worst, "_worst_case")})
    frame = pd.DataFrame(rows)
    for column in ("seeds", "seeds_worst_case"):
        if column in frame:
            frame[column] = frame[column].astype("Int64")  # a count, empty where none is counted
    return frame


def _columns(finding: Finding, suffix: str) -> dict:
    def rounded(value):
        return None if value is None else round(value, 4)

    return {f"verdict{suffix}": finding.verdict, f"seeds{suffix}": finding.seeds, f"effect{suffix}": rounded(finding.effect),
            f"ci_low{suffix}": rounded(finding.ci_low), f"ci_high{suffix}": rounded(finding.ci_high),
            f"numbers{suffix}": finding.numbers}


def published_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """The paper's own numbers as cells (ours = the published value, read as a point), to read
    the claims against the paper itself."""
    return frame[frame["value"].notna()].assign(ours=frame["value"], attack=frame["attack"].fillna(""), variant="")

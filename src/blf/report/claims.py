"""The paper's claims as checks: each sentence of sections 5.2-5.4 and appendices C-E that a
table or figure can test, written as a named predicate over our cells (comparison.cells).

A claim holds, fails, or is not measured (the records hold no situation it speaks of). The
numbers behind each verdict are printed beside it, so a reader can disagree with the reading.
Where the paper's words are loose, the predicate picks one reading and says it in its text:
"most robust" is the largest mean accuracy among the methods measured in the same situation
(dataset, model, setting, attack, eps; ties count as first); "comparable" and "no more than"
allow TOLERANCE points.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from blf.report import labels

# Points of accuracy within which "comparable" holds (and a "no worse" may fall short).
TOLERANCE = 2.0
# The methods a "most robust" ranks among: the paper's rivals (Figs. 3, 4; Tables 1-5).
RIVALS = ("Baseline", "LSQ", "LSM", "BLF", "L-BLF", "TRADES")
SITUATION = ["dataset", "model", "setting", "attack", "eps"]
REGULARIZERS = ("LSQ", "LSM", "BLF")
APGD = ("apgd_ce", "apgd_t")


@dataclass(frozen=True)
class Finding:
    holds: bool | None  # None: not measured
    numbers: str

    @property
    def verdict(self) -> str:
        return {True: "yes", False: "no", None: "not measured"}[self.holds]


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


def _select(cells: pd.DataFrame, metric: str, eps: tuple[float | None, float | None] | None,
            where: Mapping[str, object]) -> pd.DataFrame:
    rows = cells[(cells["metric"] == metric) & cells["ours"].notna()]
    for column, allowed in where.items():
        allowed = allowed if isinstance(allowed, (list, tuple)) else [allowed]
        rows = rows[rows[column].isin(allowed)]
    if eps is not None:
        low, high = eps
        rows = rows[(rows["eps"] > low if low is not None else True) & (rows["eps"] < high if high is not None else True)]
    return rows


def _situation(key: Sequence, columns: Sequence[str]) -> str:
    parts = []
    for column, value in zip(columns, key):
        if column == "eps":
            parts.append(f"eps={value:.4g}" if pd.notna(value) and value >= 0 else "")
        elif column == "model":
            parts.append(labels.facet_label("model", value))
        elif isinstance(value, str) and value:
            parts.append(value)
    return " ".join(p for p in parts if p)


def _quorum(passed: list[bool], quorum: str) -> bool:
    failures = passed.count(False)
    return {"all": failures == 0, "majority": passed.count(True) > len(passed) / 2, "all_but_one": failures <= 1}[quorum]


def ranked(method: str, *, rank: int = 1, quorum: str = "all", metric: str = "accuracy", lower: bool = False,
           eps: tuple[float | None, float | None] | None = None, among: Sequence[str] = RIVALS,
           **where) -> Callable[[pd.DataFrame], Finding]:
    """`method` is among the best `rank` of the measured methods in every (or a `quorum` of the)
    situations; `lower`: smaller is better (operator norms, loss differences)."""

    def test(cells: pd.DataFrame) -> Finding:
        rows = _select(cells, metric, eps, {**where, "method": list(among)})
        passed, numbers = [], []
        for key, group in rows.assign(eps=rows["eps"].fillna(-1)).groupby(SITUATION, sort=False):
            if method not in set(group["method"]) or group["method"].nunique() < 2:
                continue
            value = group.loc[group["method"] == method, "ours"].iloc[0]
            others = group[group["method"] != method]
            better = others[others["ours"] < value] if lower else others[others["ours"] > value]
            place = 1 + len(better)
            best = others.sort_values("ours", ascending=lower).iloc[0]
            passed.append(place <= rank)
            numbers.append(f"{_situation(key, SITUATION)}: {method} {value:.3g} (#{place}), best other "
                           f"{best['method']} {best['ours']:.3g}")
        if not passed:
            return Finding(None, "")
        return Finding(_quorum(passed, quorum), "; ".join(numbers))

    return test


RELATIONS = {
    "above": lambda a, b, m: a > b + m,
    "below": lambda a, b, m: a < b - m,
    "not_above": lambda a, b, m: a <= b + m,
    "not_below": lambda a, b, m: a >= b - m,
    "within": lambda a, b, m: abs(a - b) <= m,
}


def versus(subjects: Mapping[str, object], other: Mapping[str, object], relation: str, *, margin: float = 0.0,
           relative: bool = False, quorum: str = "all", metric: str = "accuracy",
           eps: tuple[float | None, float | None] | None = None, **where) -> Callable[[pd.DataFrame], Finding]:
    """Each subject (rows matching `subjects`, e.g. {"method": ["LSQ", "LSM"]}) stands in
    `relation` to `other` (e.g. {"method": "Baseline"}) in the same situation, within `margin`
    points (or `margin` x the other's value when `relative`)."""
    compare = RELATIONS[relation]
    split = set(subjects) | set(other)

    def test(cells: pd.DataFrame) -> Finding:
        rows = _select(cells, metric, eps, where)
        rows = rows.assign(eps=rows["eps"].fillna(-1))  # no budget (operator norms): one situation
        columns = [c for c in [*SITUATION, "method"] if c not in split]
        pairs = _select(rows, metric, None, subjects).merge(_select(rows, metric, None, other), on=columns,
                                                            suffixes=("", "_other"))
        if pairs.empty:
            return Finding(None, "")
        passed, numbers = [], []
        for _, pair in pairs.iterrows():
            m = margin * abs(pair["ours_other"]) if relative else margin
            passed.append(bool(compare(pair["ours"], pair["ours_other"], m)))
            who = " ".join(str(pair[c]) for c in split)
            whom = " ".join(str(pair[f"{c}_other"]) for c in split)
            numbers.append(f"{_situation([pair[c] for c in columns], columns)}: {who} {pair['ours']:.3g} vs {whom} "
                           f"{pair['ours_other']:.3g}")
        return Finding(_quorum(passed, quorum), "; ".join(numbers))

    return test


def at_most(limit: float, *, metric: str = "accuracy", **where) -> Callable[[pd.DataFrame], Finding]:
    """Every matching cell is at most `limit`."""

    def test(cells: pd.DataFrame) -> Finding:
        rows = _select(cells, metric, None, where)
        if rows.empty:
            return Finding(None, "")
        numbers = [f"{_situation([r[c] for c in SITUATION], SITUATION)} {r['method']}: {r['ours']:.3g}"
                   for _, r in rows.iterrows()]
        return Finding(bool((rows["ours"] <= limit).all()), "; ".join(numbers))

    return test


CIFAR_10_OVER_255 = 10 / 255
POSITIVE = (0.0, None)  # eps > 0: attacked, not clean

CLAIMS: tuple[Claim, ...] = (
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
          ranked("BLF", dataset="cifar10", setting="AT", attack="pgd", eps=POSITIVE)),
    Claim("surrogate_stronger_st_large_eps", "5.2, Fig. 5",
          "RN18 + BLF, standard training, eps > 10/255: PGD through the tanh surrogate breaks more than PGD",
          versus({"attack": "pgd_tanh_surrogate"}, {"attack": "pgd"}, "below", dataset="cifar10", method="BLF",
                 setting="ST", eps=(CIFAR_10_OVER_255 + 1e-9, None)), robust=False),
    Claim("surrogate_weak_elsewhere", "5.2, Fig. 5",
          f"RN18 + BLF, adversarial training (any eps > 0) and standard training (eps < 10/255): PGD through the tanh "
          f"surrogate is no stronger than PGD (within {TOLERANCE:g} points)",
          lambda cells: _both(
              versus({"attack": "pgd_tanh_surrogate"}, {"attack": "pgd"}, "not_below", margin=TOLERANCE, dataset="cifar10",
                     method="BLF", setting="AT", eps=POSITIVE)(cells),
              versus({"attack": "pgd_tanh_surrogate"}, {"attack": "pgd"}, "not_below", margin=TOLERANCE, dataset="cifar10",
                     method="BLF", setting="ST", eps=(0.0, CIFAR_10_OVER_255 - 1e-9))(cells)), robust=False),
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
          "Logit regularisation (LSQ, LSM, BLF) gives smaller mean L-inf operator norms of the convolutions than Baseline",
          versus({"method": list(REGULARIZERS)}, {"method": "Baseline"}, "below", metric="mean_conv"), robust=False),
    Claim("lblf_operator_norm_like_baseline", "5.4, Table 3",
          "L-BLF's mean operator norm is almost that of Baseline (within 20%)",
          versus({"method": "L-BLF"}, {"method": "Baseline"}, "within", margin=0.2, relative=True, metric="mean_conv"), robust=False),
    Claim("blf_smallest_operator_norm_at", "5.4, Table 3",
          "Adversarial training: BLF has the smallest mean operator norm",
          ranked("BLF", lower=True, metric="mean_conv", setting="AT"), robust=False),
    Claim("regularizers_not_below_baseline_apgd", "C, Table 4",
          f"Logit regularisation (LSQ, LSM, BLF) is superior or comparable to Baseline under APGD-CE and APGD-T "
          f"(at most {TOLERANCE:g} points below)",
          versus({"method": list(REGULARIZERS)}, {"method": "Baseline"}, "not_below", margin=TOLERANCE, attack=list(APGD))),
    Claim("regularizers_not_below_trades_mnist_apgd", "C, Table 4",
          "MNIST, adversarial training: logit regularisation (LSQ, LSM, BLF) is at least as robust as TRADES under APGD",
          versus({"method": list(REGULARIZERS)}, {"method": "TRADES"}, "not_below", dataset="mnist", setting="AT",
                 attack=list(APGD))),
    Claim("apgd_t_zero_cifar_st", "C, Table 4",
          "CIFAR-10, standard training: accuracy under APGD-T is zero (at most 1%) for every method",
          at_most(1.0, dataset="cifar10", setting="ST", attack="apgd_t")),
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
          "BLF makes the max - min input loss over random noise the smallest",
          ranked("BLF", lower=True, metric="max_minus_min"), robust=False),
)


def _both(first: Finding, second: Finding) -> Finding:
    """Two parts of one sentence: it holds if every measured part holds."""
    measured = [f for f in (first, second) if f.holds is not None]
    if not measured:
        return Finding(None, "")
    return Finding(all(f.holds for f in measured), "; ".join(f.numbers for f in measured))


def evaluate(cells: pd.DataFrame, claims: Sequence[Claim] = CLAIMS) -> pd.DataFrame:
    """One row per claim: name, section, text, holds (yes / no / not measured), the numbers
    behind it, and for claims about robust accuracy the same reading under the worst case
    (`-` for the others)."""
    worst = cells
    if "worst" in cells:
        worst = cells.assign(ours=cells["worst"].where((cells["metric"] == "accuracy") & cells["worst"].notna(), cells["ours"]))
    rows = []
    for claim in claims:
        finding = claim.test(cells)
        under_worst = claim.test(worst) if claim.robust else None
        rows.append({"claim": claim.name, "section": claim.section, "text": claim.text, "holds": finding.verdict,
                     "holds_worst_case": under_worst.verdict if under_worst else "-", "numbers": finding.numbers,
                     "numbers_worst_case": under_worst.numbers if under_worst else ""})
    return pd.DataFrame(rows)


def published_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """The paper's own numbers as cells (ours = the published value), to read the claims
    against the paper itself."""
    return frame[frame["value"].notna()].assign(ours=frame["value"], attack=frame["attack"].fillna(""))

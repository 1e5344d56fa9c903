"""Ours beside the paper: our records as cells in the shape of the published tables
(published.csv), joined cell by cell into `ours | paper | delta`, with a one-line summary.

A cell is one (dataset, model, setting, method, attack, eps, metric), for one hyper-parameter
value and one evaluation (evaluations.variants: the same attack run twice with other settings
is two cells, never their mean): our mean, standard deviation and 95% interval over the seeds of
the selected runs (blf.report.statistics), each run's sample for the claims' paired tests, the
worst case over every attack run on the same checkpoints and images at that eps (with the
attacks it is made of), and the integrity checks those evaluations failed. A comparison
is only meaningful at the paper's scale: `not_comparable` says why the records are not (smoke
profile, synthetic data, a training subset), and every comparison written from such records
says so first, loudly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from blf import config as C
from blf.report import evaluations, labels, provenance, published, statistics, tables
from blf.run.records import Kind

CELL = ["dataset", "model", "setting", "method", "attack", "eps", "metric"]
# What tells two cells of one CELL apart: the tuned hyper-parameter (a study without selection,
# Fig. 1, has every grid point) and the evaluation (evaluations.variants); neither is averaged.
_APART = ["hp_value", "variant"]
# Budgets as join keys: 0.15 and 8/255 as the configs resolve them and as published.csv has them.
_EPS_DIGITS = 6
# What "close" means per metric, for the summary line: accuracy in points; the operator norms
# (Table 3) and loss differences (Table 5) have no common unit, so relative to the paper's value.
CLOSE = {"accuracy": ("points", 2.0), "mean_conv": ("relative", 0.10), "max_minus_min": ("relative", 0.10)}
# Columns an observation keeps besides its cell: which run, seed, test subset (and its per-example
# outcome) and hyper-parameter, and which evaluation.
_CARRIED = ["run_dir", "seed", "n", "eval_seed", "outcome", "subset", "hp", "hp_value", "variant"]
# Mean logit and pre-logit norms on clean test data (Fig. 1), one observation each per run.
NORM_METRICS = ("logit_l2", "logit_linf", "prelogit_l2", "prelogit_linf")
# L-BLF starts from gamma = softplus(gamma_tilde_init) (conf/head/lblf.yaml: -1, appendix B).
GAMMA_TILDE_INIT = -1.0
# The paper's test sets (MNIST and CIFAR-10 both have 10,000 test images): a subset adds sampling error.
TEST_SET = 10_000


def observations(final: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, observation) in the published shape: `value` of `metric` (accuracy of a
    robustness row; mean_conv of the operator-norm summary; max - min of the loss surface,
    averaged over the data points as Table 5 does; the norms of Fig. 1; L-BLF's `gamma_growth`,
    its learned gamma less its initial one). `final` must be annotated."""
    if final.empty or "kind" not in final:
        return pd.DataFrame(columns=[*CELL, *_CARRIED, "value"])
    parts = []
    robust = final[final["kind"] == Kind.ROBUSTNESS]
    if not robust.empty:
        parts.append(robust.assign(metric="accuracy", value=robust["accuracy"]))
    summary = final[final["kind"] == Kind.OPERATOR_NORM_SUMMARY]
    if not summary.empty:
        parts.append(summary.assign(metric="mean_conv", value=summary["mean_conv"], attack=None, eps=math.nan))
    surfaces = final[final["kind"] == Kind.LOSS_SURFACE]
    if not surfaces.empty:
        keys = ["run_dir", "dataset", "model", "setting", "method", "seed", "hp", "hp_value"]
        per_run = surfaces.groupby(keys, as_index=False, dropna=False)["max_minus_min"].mean()
        parts.append(per_run.assign(metric="max_minus_min", value=per_run["max_minus_min"], attack=None, eps=math.nan))
    norms = final[final["kind"] == Kind.NORMS]
    parts += [norms.assign(metric=m, value=norms[m], attack=None, eps=math.nan) for m in NORM_METRICS if m in norms]
    lblf = norms[norms["head"] == "lblf"] if "head" in norms else norms.iloc[:0]
    if not lblf.empty:
        start = lblf.get("head.gamma_tilde_init", pd.Series(GAMMA_TILDE_INIT, index=lblf.index)).fillna(GAMMA_TILDE_INIT)
        initial = np.log1p(np.exp(start.astype(float)))  # softplus (section 4)
        parts.append(lblf.assign(metric="gamma_growth", value=lblf["gamma"] - initial, attack=None, eps=math.nan))
    rows = pd.concat(parts or [pd.DataFrame(columns=CELL)], ignore_index=True)
    rows["attack"] = rows["attack"].fillna("")
    rows["variant"] = evaluations.variants(rows, [c for c in CELL if c != "eps"] + ["hp_value"])
    rows["subset"] = evaluations.per_row(rows, evaluations.subset)
    for column in _CARRIED:
        if column not in rows:
            rows[column] = None
    return rows[[*CELL, *_CARRIED, "value"]]


def _eps_key(eps: pd.Series) -> pd.Series:
    return eps.astype(float).round(_EPS_DIGITS).fillna(-1.0)


def worst_cases(final: pd.DataFrame) -> pd.DataFrame:
    """(run_dir, eps key, subset) -> worst-case accuracy over every attack run on that checkpoint
    and subset, its per-example outcome and the attacks it is made of. `final` holds records
    (`cells` returns before calling this on a frame without them)."""
    worst = final[final["kind"] == Kind.WORST_CASE]
    return pd.DataFrame({"run_dir": worst["run_dir"], "eps_key": _eps_key(worst["eps"]),
                         "subset": evaluations.per_row(worst, evaluations.subset), "worst": worst.get("accuracy"),
                         "worst_outcome": worst.get("outcome"), "worst_attacks": worst.get("attacks")})


CELL_COLUMNS = [*CELL, "hp", *_APART, "ours", "ours_std", "ours_low", "ours_high", "seeds", "samples", "worst",
                "worst_low", "worst_high", "worst_attacks", "worst_samples", "failed_checks", "n"]


def cells(final: pd.DataFrame) -> pd.DataFrame:
    """Our cells: mean, std, 95% interval (statistics.estimate) and count over seeds, each run's
    sample (for the paired tests of claims), the worst case beside an accuracy (the same runs'
    worst-case rows on the same subset, with the attacks they are made of), the failed integrity
    checks of those runs, and the test images evaluated. A cell never mixes two evaluations or two
    hyper-parameters (`_APART`)."""
    obs = observations(final)
    if obs.empty:
        return pd.DataFrame(columns=CELL_COLUMNS)
    obs = obs.assign(eps_key=_eps_key(obs["eps"])).merge(worst_cases(final), on=["run_dir", "eps_key", "subset"],
                                                         how="left")
    failed = tables.failed_checks(final)
    keys = [c for c in CELL if c != "eps"] + ["eps_key", *_APART]
    out = []
    for _, group in obs.groupby(keys, dropna=False, sort=True):
        first = group.iloc[0]
        accuracy = first["metric"] == "accuracy"
        ours = statistics.samples(group, "value", accuracy)
        worst = statistics.samples(group.assign(outcome=group["worst_outcome"]), "worst", accuracy)
        spread, worst_spread = statistics.estimate(ours), statistics.estimate(worst) if worst else None
        out.append({**{c: first[c] for c in [*CELL, "hp", *_APART]}, "ours": spread.estimate,
                    "ours_std": spread.std if spread.std is not None else math.nan, "ours_low": spread.low,
                    "ours_high": spread.high, "seeds": group["seed"].nunique(), "samples": ours,
                    "worst": worst_spread.estimate if worst else math.nan,
                    "worst_low": worst_spread.low if worst else math.nan, "worst_high": worst_spread.high if worst else math.nan,
                    "worst_attacks": ", ".join(sorted(set(group["worst_attacks"].dropna()))), "worst_samples": worst,
                    "failed_checks": ", ".join(sorted({c for run in group["run_dir"] for c in failed.get(run, ())})),
                    "n": group["n"].min()})
    return pd.DataFrame(out, columns=CELL_COLUMNS)


def study_cells(final: pd.DataFrame, tuned: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The cells of a study's records, where the cells of a table's attacks come from that
    table's own selection (`tuned`: published table -> its final records)."""
    parts = [cells(final)]
    for table, frame in tuned.items():
        ours = cells(frame)
        parts = [p[~p["attack"].isin(published.attacks(table))] for p in parts]
        parts.append(ours[ours["attack"].isin(published.attacks(table))])
    return pd.concat(parts, ignore_index=True)


def side_by_side(final: pd.DataFrame, table: int | str) -> pd.DataFrame:
    """Every cell of the published `table` with ours beside it (NaN where we did not measure
    it; a row per evaluation and hyper-parameter where we have several) and delta = ours -
    paper, with the interval of ours (the paper's number is a point)."""
    paper = published.table(table)
    paper = paper.assign(eps_key=_eps_key(paper["eps"]), attack=paper["attack"].fillna(""))
    ours = cells(final)
    ours = ours.assign(eps_key=_eps_key(ours["eps"])).drop(columns=["eps", "samples", "worst_samples"])
    joined = paper.merge(ours, on=[c for c in CELL if c != "eps"] + ["eps_key"], how="left")
    joined = joined.rename(columns={"value": "paper"}).drop(columns=["eps_key"])
    return joined.assign(delta=joined["ours"] - joined["paper"])


def close(row: pd.Series) -> bool:
    unit, tolerance = CLOSE.get(row["metric"], ("points", 2.0))
    gap = abs(row["delta"])
    return gap <= tolerance if unit == "points" else gap <= tolerance * abs(row["paper"])


def summary(joined: pd.DataFrame) -> str:
    """One line: cells within tolerance, median and largest |delta| (with where), coverage."""
    table = joined["table"].iloc[0] if len(joined) else "?"
    measured = joined[joined["ours"].notna()]
    both = measured[measured["paper"].notna()]
    coverage = f"{len(measured)} of {len(joined)} cells of Table {table} measured"
    if both.empty:
        return f"{coverage}; nothing to compare."
    within = int(both.apply(close, axis=1).sum())
    largest = both.loc[both["delta"].abs().idxmax()]
    metrics = sorted(both["metric"].unique())
    tolerance = "; ".join(f"{m}: {v:g} {u}" if u == "points" else f"{m}: {v:.0%} of the paper's value"
                          for m, (u, v) in CLOSE.items() if m in metrics)
    return (f"{coverage}; {within} of {len(both)} within tolerance ({tolerance}); median |delta| "
            f"{both['delta'].abs().median():.2f}; largest |delta| {abs(largest['delta']):.2f} ({row_name(largest)}).")


def row_name(row: pd.Series) -> str:
    parts = [labels.facet_label("model", row["model"]), row["setting"], row["method"]]
    if isinstance(row.get("attack"), str) and row["attack"]:
        parts.append(f"{row['attack']} eps={row['eps_text']}")
    return " ".join(str(p) for p in parts if isinstance(p, str) and p)


def _number(value: float, decimals: int) -> str:
    return "" if pd.isna(value) else f"{value:.{decimals}f}"


def _interval(estimate: float, low: float, high: float, decimals: int, signed: bool = False,
              std: float | None = None) -> str:
    std = None if std is None or pd.isna(std) else float(std)
    return statistics.Interval(estimate, low, high, "", std=std).text(decimals, signed)


# The foot of a displayed side-by-side: what its brackets are.
DISPLAY_NOTE = (f"ours: the mean over seeds; {statistics.CAPTION}. delta: ours - paper, the same interval shifted. "
                "worst case: per example, over the attacks named.")


def display(joined: pd.DataFrame) -> pd.DataFrame:
    """The side-by-side as a table for people: one row per cell in the paper's order, for the
    (dataset, model, setting, attack) rows of the paper's table where we measured a cell (the
    summary line counts the rest); ours (with the standard deviation over seeds where there are
    several), delta and the worst case with their 95% intervals (DISPLAY_NOTE), an attack
    evaluated twice as two rows (`pgd (restarts=5)`)."""
    measured = joined.groupby(["dataset", "model", "setting", "attack"], dropna=False)["ours"].transform(
        lambda v: v.notna().any())
    joined = joined[measured]
    decimals = 3 if set(joined["metric"]) & {"max_minus_min"} else 1
    order = joined.assign(
        _model=joined["model"].map(lambda v: labels.facet_key("model", v)),
        _setting=joined["setting"].map(lambda v: labels.facet_key("setting", v)),
        _method=joined["method"].map(labels.method_key))
    order = order.sort_values(["_model", "_setting", "attack", "_method"], kind="stable")
    rows = []
    for _, r in order.iterrows():
        # The seeds' spread beside the mean, as the paper reports its numbers over seeds.
        ours = _interval(r["ours"], r["ours_low"], r["ours_high"], decimals, std=r.get("ours_std")) \
            if pd.notna(r["ours"]) else "not measured"
        delta = _interval(r["delta"], r["ours_low"] - r["paper"], r["ours_high"] - r["paper"], decimals, signed=True) \
            if pd.notna(r["delta"]) else ""
        worst = ""
        if r["metric"] == "accuracy" and pd.notna(r.get("worst")):
            worst = f"{_interval(r['worst'], r['worst_low'], r['worst_high'], decimals)} ({r['worst_attacks'] or 'its attacks'})"
        variant = r.get("variant") if isinstance(r.get("variant"), str) else ""
        rows.append({"model": labels.facet_label("model", r["model"]), "setting": r["setting"],
                     "attack": evaluations.shown(r["attack"] or "", variant),
                     "eps": r["eps_text"] if isinstance(r["eps_text"], str) else "",
                     "method": f"{r['method']} ({r['hp']}={r['hp_value']:g})" if pd.notna(r.get("hp_value")) else r["method"],
                     "ours": ours, "paper": _number(r["paper"], decimals) or "N/A", "delta": delta,
                     "worst case": worst, "failed checks": r["failed_checks"] if isinstance(r["failed_checks"], str) else ""})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    return out.set_index(out.apply(lambda r: f"{r['model']} {r['setting']}", axis=1)).drop(columns=["model", "setting"])


def not_comparable(final: pd.DataFrame) -> list[str]:
    """Why these records cannot be compared with the paper's numbers (empty: they can)."""
    reasons = []
    profiles = sorted(set(final["profile"].dropna())) if "profile" in final else []
    if any(p != "paper" for p in profiles):
        reasons.append(f"profile {', '.join(p for p in profiles if p != 'paper')} (shortened training, attacks and grids)")
    if synthetic := provenance.synthetic_datasets(final):
        reasons.append(f"synthetic data in place of {', '.join(synthetic)}")
    if "n_train" in final and final["n_train"].notna().any():
        reasons.append(f"trained on the first {int(final['n_train'].dropna().min()):,} training images only")
    if {"epochs", "model", "training"} <= set(final):
        short = [(model, training, int(group["epochs"].min()), paper_epochs(model, training))
                 for (model, training), group in final.groupby(["model", "training"])]
        short = [s for s in short if s[3] and s[2] < s[3]]
        if len(short) == 1:
            model, training, trained, wanted = short[0]
            reasons.append(f"{labels.facet_label('model', model)} {training} trained {trained} epochs, the paper's recipe {wanted}")
        elif short:
            trained, wanted = sorted({s[2] for s in short}), sorted({s[3] for s in short})
            reasons.append(f"{len(short)} model/training pairs trained {_span(trained)} epochs, the paper's recipes "
                           f"{_span(wanted)}")
    return reasons


def _span(values: list[int]) -> str:
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


def paper_epochs(model: str, training: str) -> int | None:
    """The epochs of the paper's recipe (appendix B.2, conf/model/<model>.yaml) for a training
    option; None for a model or training the paper has no recipe for."""
    model_file, training_file = C.CONF / "model" / f"{model}.yaml", C.CONF / "training" / f"{training}.yaml"
    if not (model_file.is_file() and training_file.is_file()):
        return None
    regime = OmegaConf.load(training_file).get("regime")
    recipe = OmegaConf.load(model_file).get("recipe") or {}
    epochs = (recipe.get(regime) or {}).get("epochs")
    return epochs if isinstance(epochs, int) else None


def caveats(final: pd.DataFrame) -> list[str]:
    """What a reader of a comparable side-by-side must still weigh: a test subset's sampling error."""
    if "n" not in final or final["n"].dropna().empty:
        return []
    n = int(final["n"].dropna().min())
    if n >= TEST_SET:
        return []
    # The binomial standard error at 50% accuracy, the largest it gets.
    return [f"evaluated on {n:,} of the {TEST_SET:,} test images (the paper: all): sampling std up to "
            f"{100 * math.sqrt(0.25 / n):.1f} points per cell"]


def reading(final: pd.DataFrame, name: str) -> str:
    """Two lines on how to read a study's table, printed under it when the study ends."""
    first = ("How to read it: accuracy (%) on the test images evaluated, with 95% intervals; \"worst case (a+b)\" is "
             "what survives every attack named, per example; † marks a number whose evaluation failed an integrity "
             "check (listed above, docs/evaluation.md): there, trust the worst case, not the paper's attack.")
    reasons = not_comparable(final)
    second = (f"Not comparable with the paper ({'; '.join(reasons)}): these numbers test the pipeline, not the "
              "paper's claims." if reasons else
              f"At the paper's settings: {name}_vs_paper.md sets them beside the paper, claims.md reads its claims.")
    return f"{first}\n{second}"


def banner(final: pd.DataFrame) -> str:
    """The loud first line of a side-by-side from records that cannot be compared."""
    reasons = not_comparable(final)
    if not reasons:
        return ""
    return ("NOT COMPARABLE WITH THE PAPER: " + "; ".join(reasons) + ". These numbers test the pipeline; "
            "the deltas below say nothing about the paper.")

"""Ours beside the paper: our records as cells in the shape of the published tables
(published.csv), joined cell by cell into `ours | paper | delta`, with a one-line summary.

A cell is one (dataset, model, setting, method, attack, eps, metric): our mean and standard
deviation over the seeds of the selected runs, the worst case over every attack run on the
same checkpoints at that eps, and the integrity checks those evaluations failed. A comparison
is only meaningful at the paper's scale: `not_comparable` says why the records are not (smoke
profile, synthetic data, a training subset), and every comparison written from such records
says so first, loudly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd
from omegaconf import OmegaConf

from blf import config as C
from blf.report import labels, provenance, published, tables
from blf.run.records import Kind

CELL = ["dataset", "model", "setting", "method", "attack", "eps", "metric"]
# Budgets as join keys: 0.15 and 8/255 as the configs resolve them and as published.csv has them.
_EPS_DIGITS = 6
# What "close" means per metric, for the summary line: accuracy in points; the operator norms
# (Table 3) and loss differences (Table 5) have no common unit, so relative to the paper's value.
CLOSE = {"accuracy": ("points", 2.0), "mean_conv": ("relative", 0.10), "max_minus_min": ("relative", 0.10)}
# Columns an observation keeps besides its cell: which run, seed, test subset and hyper-parameter.
_CARRIED = ["run_dir", "seed", "n", "hp", "hp_value"]
# The paper's test sets (MNIST and CIFAR-10 both have 10,000 test images): a subset adds sampling error.
TEST_SET = 10_000


def observations(final: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, observation) in the published shape: `value` of `metric` (accuracy of a
    robustness row; mean_conv of the operator-norm summary; max - min of the loss surface,
    averaged over the data points as Table 5 does). `final` must be annotated."""
    if final.empty or "kind" not in final:
        return pd.DataFrame(columns=[*CELL, *_CARRIED, "value"])
    parts = []
    robust = final[final["kind"] == Kind.ROBUSTNESS]
    if not robust.empty:
        parts.append(robust.assign(metric="accuracy", value=robust["accuracy"]))
    norms = final[final["kind"] == Kind.OPERATOR_NORM_SUMMARY]
    if not norms.empty:
        parts.append(norms.assign(metric="mean_conv", value=norms["mean_conv"], attack=None, eps=math.nan))
    surfaces = final[final["kind"] == Kind.LOSS_SURFACE]
    if not surfaces.empty:
        keys = ["run_dir", "dataset", "model", "setting", "method", "seed"]
        per_run = surfaces.groupby(keys, as_index=False)["max_minus_min"].mean()
        parts.append(per_run.assign(metric="max_minus_min", value=per_run["max_minus_min"], attack=None, eps=math.nan))
    rows = pd.concat(parts or [pd.DataFrame(columns=CELL)], ignore_index=True)
    for column in _CARRIED:
        if column not in rows:
            rows[column] = None
    return rows[[*CELL, *_CARRIED, "value"]]


def _eps_key(eps: pd.Series) -> pd.Series:
    return eps.astype(float).round(_EPS_DIGITS).fillna(-1.0)


def worst_cases(final: pd.DataFrame) -> pd.DataFrame:
    """(run_dir, eps key) -> worst-case accuracy over every attack run on that checkpoint.
    `final` holds records (`cells` returns before calling this on a frame without them)."""
    worst = final[final["kind"] == Kind.WORST_CASE]
    return pd.DataFrame({"run_dir": worst["run_dir"], "eps_key": _eps_key(worst["eps"]), "worst": worst["accuracy"]})


def cells(final: pd.DataFrame) -> pd.DataFrame:
    """Our cells: mean, std and count over seeds, the worst case beside an accuracy (mean over
    the same runs), the failed integrity checks of those runs, and the test images evaluated."""
    obs = observations(final)
    if obs.empty:
        return pd.DataFrame(columns=[*CELL, "ours", "ours_std", "seeds", "worst", "failed_checks", "n"])
    obs = obs.assign(eps_key=_eps_key(obs["eps"]), attack=obs["attack"].fillna(""))
    obs = obs.merge(worst_cases(final), on=["run_dir", "eps_key"], how="left")
    failed = tables.failed_checks(final)
    obs = obs.assign(failed=obs["run_dir"].map(lambda run: failed.get(run, ())))
    keys = [c for c in CELL if c != "eps"] + ["eps_key"]
    grouped = obs.groupby(keys, dropna=False)
    out = grouped.agg(eps=("eps", "first"), ours=("value", "mean"), ours_std=("value", "std"), seeds=("seed", "nunique"),
                      worst=("worst", "mean"), n=("n", "min"), hp=("hp", "first"), hp_value=("hp_value", "first"),
                      failed_checks=("failed", lambda runs: ", ".join(sorted({c for checks in runs for c in checks}))))
    return out.reset_index()


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
    it) and delta = ours - paper."""
    paper = published.table(table)
    paper = paper.assign(eps_key=_eps_key(paper["eps"]), attack=paper["attack"].fillna(""))
    ours = cells(final).drop(columns=["eps"], errors="ignore")
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


def display(joined: pd.DataFrame) -> pd.DataFrame:
    """The side-by-side as a table for people: one row per cell in the paper's order, for the
    (dataset, model, setting, attack) rows of the paper's table where we measured a cell (the
    summary line counts the rest)."""
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
        if pd.isna(r["ours"]):
            ours = "not measured"
        elif r.get("seeds", 1) and r["seeds"] > 1:
            ours = f"{r['ours']:.{decimals}f} ± {r['ours_std']:.{decimals}f}"
        else:
            ours = _number(r["ours"], decimals)
        worst = _number(r.get("worst"), decimals) if r["metric"] == "accuracy" else ""
        rows.append({"model": labels.facet_label("model", r["model"]), "setting": r["setting"],
                     "attack": r["attack"] or "", "eps": r["eps_text"] if isinstance(r["eps_text"], str) else "",
                     "method": f"{r['method']} ({r['hp']}={r['hp_value']:g})" if pd.notna(r.get("hp_value")) else r["method"],
                     "ours": ours, "paper": _number(r["paper"], decimals) or "N/A",
                     "delta": "" if pd.isna(r["delta"]) else f"{r['delta']:+.{decimals}f}",
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


def banner(final: pd.DataFrame) -> str:
    """The loud first line of a side-by-side from records that cannot be compared."""
    reasons = not_comparable(final)
    if not reasons:
        return ""
    return ("NOT COMPARABLE WITH THE PAPER: " + "; ".join(reasons) + ". These numbers test the pipeline; "
            "the deltas below say nothing about the paper.")

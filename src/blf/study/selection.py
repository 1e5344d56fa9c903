"""Hyper-parameter selection over records (section 5.1, appendix B).

The paper tunes one hyper-parameter per method on a grid with one training run each, then
reports the selected value over several seeds:
- `protocol` (Figs. 3, 4; Tables 3, 5): the largest clean accuracy for standard training, the
  largest PGD accuracy at the training budget (0.3 MNIST, 8/255 CIFAR-10) for adversarial
  training;
- `attack` (Tables 1, 2, 4: "we tuned hyperparameters for each attack"): the largest accuracy
  under the table's attack at its budget;
- `none` (Fig. 1): every grid point is a result.

The paper scores on the test images it then reports. A run trained with
`eval.selection_split=validation` is scored on training images it held out instead (its
`clean_validation_acc` and `validation` records), so the test set picks nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from blf import config as C
from blf.report import evaluations
from blf.report.labels import annotate
from blf.run.records import Kind, same_eps

CRITERIA = ("protocol", "attack", "none")
GROUP = ["dataset", "model", "setting", "method"]


def scores(df: pd.DataFrame, criterion: str, eps: Mapping[str, float], attack: str = "pgd") -> pd.DataFrame:
    """One row per run of the grid (first seed): its selection score under `criterion`. A run
    evaluated twice under the scoring attack (other settings, another eval.n) is scored by its
    newest evaluation (`evaluated_at`), and its basis says which others exist."""
    C.choice("study.select", criterion, CRITERIA)
    df = annotate(df)
    runs = []
    for run_dir, rows in df.groupby("run_dir"):
        first = rows.iloc[0]
        # A run trained beside a validation split (eval.selection_split) is scored on it alone.
        split = "validation" if "selection_split" in rows and (rows["selection_split"] == "validation").any() else "test"
        if criterion == "protocol" and first["setting"] == "ST":
            column = "clean_validation_acc" if split == "validation" else "clean_test_acc"
            values = rows[column].dropna() if column in rows else pd.Series(dtype=float)
            score, basis = (values.iloc[0] if len(values) else None), f"clean accuracy ({split} set)"
        else:
            name = attack if criterion == "attack" else "pgd"
            target = eps[first["dataset"]]
            kind = Kind.VALIDATION if split == "validation" else Kind.ROBUSTNESS
            hits = rows[(rows["kind"] == kind) & (rows["attack"] == name) & same_eps(rows["eps"], target)]
            # The reference of evaluations.variants: with one row per evaluation, the newest.
            older = evaluations.variants(hits, [])
            score = hits.loc[older == "", "accuracy"].iloc[0] if len(hits) else None
            basis = f"{name} accuracy at eps={target:.6g} ({split} set)"
            if len(hits) > 1:
                basis += (f" (the newest of {len(hits)} evaluations; not used: "
                          f"{'; '.join(f'{v}: {a:g}' for v, a in zip(older, hits['accuracy']) if v)})")
        runs.append({**{k: first[k] for k in [*GROUP, "training", "hp", "hp_value", "seed"]},
                     "run_dir": run_dir, "score": score, "basis": basis})
    return pd.DataFrame(runs)


def select(df: pd.DataFrame, criterion: str, eps: Mapping[str, float], attack: str = "pgd",
           seed: int | None = None) -> pd.DataFrame:
    """The chosen run per (dataset, model, setting, method): the largest score; ties go to the
    smallest hyper-parameter value. Runs without a score (unfinished) cannot be chosen."""
    table = scores(df, criterion, eps, attack)
    if table.empty:
        return table
    if seed is not None:
        table = table[table["seed"] == seed]
    table = table[table["score"].notna()]
    chosen = []
    for _, group in table.groupby(GROUP, sort=True):
        group = group.assign(order=group["hp_value"].fillna(-math.inf)).sort_values(["score", "order"], ascending=[False, True])
        chosen.append(group.iloc[0].drop(labels="order"))
    return pd.DataFrame(chosen).reset_index(drop=True)


def markdown(chosen: pd.DataFrame) -> str:
    """The selection, written beside the figure or table it produced."""
    if chosen.empty:
        return "No selection (no finished grid runs)."
    lines = ["| dataset | model | setting | method | hyper-parameter | score | basis |", "|---|---|---|---|---|---|---|"]
    for _, r in chosen.iterrows():
        hp = f"{r['hp']} = {r['hp_value']:g}" if isinstance(r["hp"], str) and pd.notna(r["hp_value"]) else "-"
        score = f"{r['score']:.2f}" if pd.notna(r["score"]) else "-"  # a transferred choice has no score of its own
        lines.append(f"| {r['dataset']} | {r['model']} | {r['setting']} | {r['method']} | {hp} | {score} | {r['basis']} |")
    return "\n".join(lines)

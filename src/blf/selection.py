"""Methods, settings and hyper-parameter selection over records (section 5.1, appendix B).

The paper tunes one hyper-parameter per method on a grid with one training run each, then
reports the selected value over several seeds:
- `protocol` (Figs. 3, 4; Tables 3, 5): the largest clean accuracy for standard training, the
  largest PGD accuracy at the training budget (0.3 MNIST, 8/255 CIFAR-10) for adversarial
  training;
- `attack` (Tables 1, 2, 4: "we tuned hyperparameters for each attack"): the largest accuracy
  under the table's attack at its budget;
- `none` (Fig. 1): every grid point is a result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from . import config as C

HEAD_METHODS = {"identity": "Baseline", "blf": "BLF", "lblf": "L-BLF", "tanh": "tanh", "sigmoid": "sigmoid",
                "sine": "sine", "single_wave": "single wave"}
REGULARIZER_METHODS = {"logit_squeezing": "LSQ", "label_smoothing": "LSM"}
# The paper's column order.
METHOD_ORDER = ["Baseline", "LSQ", "LSM", "BLF", "L-BLF", "TRADES", "tanh", "sigmoid", "sine", "single wave"]
CRITERIA = ("protocol", "attack", "none")
# The paper's panel order: 2C2F above 4C3F, RN18 above WRN; standard training left of adversarial.
FACET_ORDER = {"model": ["2c2f", "4c3f", "resnet18", "wrn34_10"], "setting": ["ST", "AT"], "dataset": ["mnist", "cifar10"]}


MODEL_LABELS = {"2c2f": "2C2F", "4c3f": "4C3F", "resnet18": "RN18", "wrn34_10": "WRN"}  # the paper's names


def facet_label(facet: str, value) -> str:
    """How the paper writes a facet value: RN18, WRN, ST, AT, ..."""
    return MODEL_LABELS.get(value, str(value)) if facet == "model" else str(value)


def facet_key(facet: str, value) -> tuple[int, str]:
    """Sort key of a facet value in the paper's order (unknown values last, alphabetically)."""
    order = FACET_ORDER.get(facet, [])
    return (order.index(value) if value in order else len(order), str(value))


def method_key(label: str) -> int:
    """Sort key of a method label ("BLF (gamma=1)") in the paper's column order."""
    base = label.split(" (")[0]
    return METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER)


def method(row: Mapping) -> str:
    """Baseline, LSQ, LSM, BLF, L-BLF, TRADES, ... (combinations joined by '+')."""
    parts = []
    if row.get("regularizer") in REGULARIZER_METHODS:
        parts.append(REGULARIZER_METHODS[row["regularizer"]])
    head = HEAD_METHODS.get(row.get("head"), str(row.get("head")))
    if head != "Baseline" or not parts:
        parts.append(head)
    if row.get("training") == "trades":
        parts = ["TRADES"] if parts == ["Baseline"] else [*parts, "TRADES"]
    return "+".join(parts)


def hyperparameter(row: Mapping) -> tuple[str | None, float | None]:
    """(name, value) of the method's tuned hyper-parameter: lam, alpha, beta or gamma."""
    if row.get("training") == "trades":
        return "beta", row.get("beta")
    if row.get("regularizer") == "logit_squeezing":
        return "lam", row.get("lam")
    if row.get("regularizer") == "label_smoothing":
        return "alpha", row.get("alpha")
    if row.get("head") not in (None, "identity", "lblf"):
        return "gamma", row.get("gamma")
    return None, None


def label(row: Mapping, symbols: Mapping[str, str] | None = None) -> str:
    """A legend entry or table row: the method with the value of its tuned hyper-parameter,
    e.g. `BLF (gamma=1)`; `symbols` spells the hyper-parameters (figures use LaTeX)."""
    name, value = hyperparameter(row)
    text = method(row)
    return f"{text} ({(symbols or {}).get(name, name)}={value:g})" if name and pd.notna(value) else text


def setting(training: str) -> str:
    """The paper's ST (standard training) / AT (adversarial training, PGD-AT or TRADES)."""
    return "ST" if training == "standard" else "AT"


def annotate(df: pd.DataFrame) -> pd.DataFrame:
    """Add method, setting, hyper-parameter name and value columns to a record frame."""
    if df.empty:
        return df.assign(method=[], setting=[], hp=[], hp_value=[])
    hp = df.apply(lambda r: hyperparameter(r), axis=1, result_type="expand")
    return df.assign(method=df.apply(method, axis=1), setting=df["training"].map(setting), hp=hp[0], hp_value=hp[1])


GROUP = ["dataset", "model", "setting", "method"]


def scores(df: pd.DataFrame, criterion: str, eps: Mapping[str, float], attack: str = "pgd") -> pd.DataFrame:
    """One row per run of the grid (first seed): its selection score under `criterion`."""
    C.choice("study.select", criterion, CRITERIA)
    df = annotate(df)
    runs = []
    for run_dir, rows in df.groupby("run_dir"):
        first = rows.iloc[0]
        if criterion == "protocol" and first["setting"] == "ST":
            score, basis = first.get("clean_test_acc"), "clean accuracy (test set)"
        else:
            name = attack if criterion == "attack" else "pgd"
            target = eps[first["dataset"]]
            hits = rows[(rows["kind"] == "robustness") & (rows["attack"] == name) & ((rows["eps"] - target).abs() < 1e-6)]
            score = hits["accuracy"].iloc[0] if len(hits) else None
            basis = f"{name} accuracy at eps={target:.6g}"
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

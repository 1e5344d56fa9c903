"""How the paper names and orders what records hold: methods (Baseline, LSQ, LSM, BLF, L-BLF,
TRADES, ...), their tuned hyper-parameter, the ST/AT setting, and the paper's column and panel
order. Tables and figures label rows, columns and legends only through this module."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

HEAD_METHODS = {"identity": "Baseline", "blf": "BLF", "lblf": "L-BLF", "tanh": "tanh", "sigmoid": "sigmoid",
                "sine": "sine", "single_wave": "single wave"}
REGULARIZER_METHODS = {"logit_squeezing": "LSQ", "label_smoothing": "LSM"}
# The paper's column order.
METHOD_ORDER = ["Baseline", "LSQ", "LSM", "BLF", "L-BLF", "TRADES", "tanh", "sigmoid", "sine", "single wave"]
# The paper's panel order: 2C2F above 4C3F, RN18 above WRN; standard training left of adversarial.
FACET_ORDER = {"model": ["2c2f", "4c3f", "resnet18", "wrn34_10"], "setting": ["ST", "AT"], "dataset": ["mnist", "cifar10"]}


MODEL_LABELS = {"2c2f": "2C2F", "4c3f": "4C3F", "resnet18": "RN18", "wrn34_10": "WRN"}  # the paper's names
# How the paper writes the hyper-parameters and the budget (figures and LaTeX tables); `lam` is
# the config's spelling of lambda.
LATEX_SYMBOLS = {"gamma": r"\gamma", "lam": r"\lambda", "lambda": r"\lambda", "alpha": r"\alpha", "beta": r"\beta",
                 "eps": r"\varepsilon"}


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

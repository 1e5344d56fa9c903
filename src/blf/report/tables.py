"""Tables computed from records (never typed by hand)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from blf.report import labels
from blf.run.records import EPS_DECIMALS, TABLE_COLUMNS, Kind


def frame(rows: Sequence[dict]) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def varying(df: pd.DataFrame, columns: Sequence[str] = TABLE_COLUMNS) -> list[str]:
    return [c for c in columns if c in df and df[c].astype(str).nunique() > 1]


def eps_label(eps: float, df: pd.DataFrame) -> str:
    """CIFAR-10 budgets read as multiples of 1/255 (the paper's notation), MNIST's as decimals."""
    if "dataset" in df and set(df["dataset"]) == {"cifar10"} and abs(eps * 255 - round(eps * 255)) < 1e-4:
        return f"eps={round(eps * 255)}/255"
    return f"eps={eps:g}"


def accuracy_table(rows: Sequence[dict] | pd.DataFrame, decimals: int = 1) -> str:
    """Accuracy (%) with one column per eps and one row per (varying identity, attack)."""
    df = rows if isinstance(rows, pd.DataFrame) else frame(rows)
    if df.empty or "kind" not in df:
        return "(no records)"
    df = df[df["kind"].isin([Kind.ROBUSTNESS, Kind.WORST_CASE])]
    if df.empty:
        return "(no robustness records)"
    index = [*varying(df), "attack"]
    # Missing values (gamma of the identity head, ...) would make pandas drop those rows.
    df = df.assign(**{c: df[c].astype(object).where(df[c].notna(), "-") for c in index})
    table = df.assign(eps=df["eps"].round(EPS_DECIMALS)).pivot_table(index=index, columns="eps", values="accuracy",
                                                                   aggfunc="mean", dropna=False)
    table = table.dropna(how="all")
    table.columns = [eps_label(c, df) for c in table.columns]
    return table.round(decimals).to_string(na_rep="")


def verdicts(rows: Sequence[dict]) -> str:
    """The integrity report of recorded verdicts (integrity.report's format)."""
    from blf.eval.integrity import Verdict, report

    found = [Verdict(r["check"], r["status"], r.get("value"), r.get("threshold"), r.get("detail", ""))
             for r in rows if r.get("kind") == Kind.INTEGRITY]
    return report(found) if found else "Integrity checks: none recorded"


def summary(rows: Sequence[dict]) -> str:
    """What the apps print after an evaluation: accuracies (with the worst case) and verdicts."""
    return f"{accuracy_table(rows)}\n\n{verdicts(rows)}"


def mean_std(values: pd.Series, decimals: int) -> str:
    values = values.dropna()
    if values.empty:
        return ""
    if len(values) == 1:
        return f"{values.iloc[0]:.{decimals}f}"
    return f"{values.mean():.{decimals}f} ± {values.std():.{decimals}f}"


def method_table(df: pd.DataFrame, value: str, rows: Sequence[str], decimals: int = 1) -> pd.DataFrame:
    """Rows (e.g. model, setting) x method columns in the paper's order; each cell the mean ±
    std over seeds of `value` (one run: the value alone). `df` must be annotated
    (selection.annotate). Missing combinations stay empty (the paper's N/A)."""
    methods = sorted(df["method"].unique(), key=lambda m: (labels.method_key(m), m))
    cells = df.groupby([*rows, "method"])[value].apply(lambda v: mean_std(v, decimals)).unstack("method")
    cells = cells.reindex(columns=methods).fillna("")
    keys = [key if isinstance(key, tuple) else (key,) for key in cells.index]
    cells = cells.iloc[sorted(range(len(keys)), key=lambda i: [labels.facet_key(f, v) for f, v in zip(rows, keys[i])])]
    cells.index = [" ".join(labels.facet_label(f, k) for f, k in zip(rows, key if isinstance(key, tuple) else (key,)))
                   for key in cells.index]
    return cells


def to_markdown(table: pd.DataFrame, title: str = "") -> str:
    head = ["", *map(str, table.columns)]
    lines = ([f"**{title}**", ""] if title else []) + ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join([str(index), *map(str, row)]) + " |" for index, row in zip(table.index, table.values)]
    return "\n".join(lines) + "\n"


def to_latex(table: pd.DataFrame, caption: str = "") -> str:
    escaped = table.map(lambda v: str(v).replace("±", "$\\pm$"))
    body = escaped.to_latex(escape=False, column_format="l" + "c" * len(table.columns))
    return (f"% {caption}\n" if caption else "") + body


def curve_table(df: pd.DataFrame, facets: Sequence[str], decimals: int = 1) -> pd.DataFrame:
    """Accuracy against eps as a table: one row per (facets, method with its hyper-parameter,
    attack), one column per eps, mean ± std over seeds. `df` must be annotated."""
    curve = df[df["kind"] == Kind.ROBUSTNESS]
    curve = curve.assign(label=curve.apply(lambda row: labels.label(row, {"lam": "lambda"}), axis=1),
                         eps=curve["eps"].round(EPS_DECIMALS))
    keys = [*facets, "label", "attack"]
    cells = curve.groupby([*keys, "eps"])["accuracy"].apply(lambda v: mean_std(v, decimals)).unstack("eps").fillna("")
    # Rows in the paper's order: facets (2C2F before 4C3F, ST before AT), then methods.
    order = sorted(cells.index, key=lambda key: ([labels.facet_key(f, v) for f, v in zip(facets, key)],
                                                 labels.method_key(key[len(facets)]), key))
    cells = cells.loc[order]
    cells.columns = [eps_label(c, curve) for c in cells.columns]
    cells.index = [", ".join(labels.facet_label(f, k) for f, k in zip(keys, key)) for key in cells.index]
    return cells

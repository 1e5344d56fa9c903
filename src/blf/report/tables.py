"""Tables computed from records (never typed by hand)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from blf.report import evaluations, labels, statistics
from blf.run.records import EPS_DECIMALS, TABLE_COLUMNS, WORST_CASE, Kind


def frame(rows: Sequence[dict]) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def varying(df: pd.DataFrame, columns: Sequence[str] = TABLE_COLUMNS) -> list[str]:
    return [c for c in columns if c in df and df[c].astype(str).nunique() > 1]


def budget_text(eps: float) -> str:
    """A budget as a whole number of 255ths where it is one (8/255, the paper's CIFAR-10
    notation and RobustBench's), else as a decimal (0.3)."""
    steps = eps * 255
    return f"{round(steps)}/255" if abs(steps - round(steps)) < 1e-4 else f"{eps:g}"


def eps_label(eps: float, df: pd.DataFrame) -> str:
    """CIFAR-10 budgets read as multiples of 1/255 (the paper's notation), MNIST's as decimals."""
    if "dataset" in df and set(df["dataset"]) == {"cifar10"}:
        return f"eps={budget_text(eps)}"
    return f"eps={eps:g}"


def accuracy_table(rows: Sequence[dict] | pd.DataFrame, decimals: int = 1) -> str:
    """Accuracy (%) with one column per eps and one row per (varying identity, attack); two
    evaluations of one attack are two rows (attack_labels)."""
    df = rows if isinstance(rows, pd.DataFrame) else frame(rows)
    if df.empty or "kind" not in df:
        return "(no records)"
    df = df[df["kind"].isin([Kind.ROBUSTNESS, Kind.WORST_CASE])]
    if df.empty:
        return "(no robustness records)"
    index = [*varying(df), "attack"]
    # Missing values (gamma of the identity head, ...) would make pandas drop those rows.
    df = df.assign(**{c: df[c].astype(object).where(df[c].notna(), "-") for c in index})
    # The apps print this table after an evaluation: the worst case keeps the records' name.
    df = df.assign(attack=attack_labels(df, index[:-1], worst_case=WORST_CASE))
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


def failed_checks(df: pd.DataFrame) -> dict[str, tuple[str, ...]]:
    """run_dir -> the integrity checks its evaluation FAILED (runs with none are absent)."""
    if df.empty or "kind" not in df or "status" not in df:
        return {}
    failed = df[(df["kind"] == Kind.INTEGRITY) & (df["status"] == "FAIL")]
    return {run: tuple(sorted(group["check"].unique())) for run, group in failed.groupby("run_dir")}


def summary(rows: Sequence[dict]) -> str:
    """What the apps print after an evaluation: accuracies (with the worst case) and verdicts."""
    return f"{accuracy_table(rows)}\n\n{verdicts(rows)}"


def estimate_text(rows: pd.DataFrame, value: str, decimals: int) -> str:
    """`value` over the rows (one per seed) with its 95% interval (statistics.estimate): an
    accuracy of one run with Wilson's; several seeds as mean ± their standard deviation with the
    interval of a bootstrap over the seeds and their images (a t-interval for other values)."""
    found = statistics.samples(rows, value, accuracy=value == "accuracy")
    return statistics.estimate(found).text(decimals) if found else ""


# Beside a number whose evaluation failed an integrity check (integrity_notes say which).
FAILED_MARK = " †"
# How tables name the worst case over the attacks (records: attack "worst_case"), followed by the
# attacks it is made of; it sorts after the attacks it summarises.
WORST_CASE_LABEL = "worst case"


def attack_labels(df: pd.DataFrame, keys: Sequence[str], worst_case: str = WORST_CASE_LABEL) -> pd.Series:
    """The row label of each robustness or worst-case row's attack: the attack, with what differs
    where its group (`keys`, e.g. a method in a panel) holds two evaluations of it
    (evaluations.variants), and for the worst case (named `worst_case`) the attacks it is made
    of: `pgd`, `pgd (restarts=5)`, `worst case (pgd+square)`."""
    made_of = df["attacks"] if "attacks" in df else pd.Series(None, index=df.index, dtype=object)
    worst = made_of.map(lambda a: f"{worst_case} ({a})" if isinstance(a, str) and a else worst_case)
    attack = df["attack"].astype(object).where(df["kind"] != Kind.WORST_CASE, worst)
    variant = evaluations.variants(df.assign(_attack=attack), [*keys, "_attack"])
    return pd.Series([evaluations.shown(a, v) for a, v in zip(attack, variant)], index=df.index, dtype=object)


def marked_estimates(df: pd.DataFrame, keys: Sequence[str], value: str, decimals: int,
                     failed: Mapping[str, tuple[str, ...]]) -> pd.Series:
    """`value` with its 95% interval per `keys` (estimate_text), with FAILED_MARK where any run
    behind it is in `failed` (failed_checks of the records, integrity rows included)."""
    df = df.assign(_failed=df["run_dir"].isin(list(failed)) if "run_dir" in df else False)
    return df.groupby(list(keys)).apply(
        lambda g: estimate_text(g, value, decimals) + (FAILED_MARK if g["_failed"].any() else ""), include_groups=False)


def integrity_notes(df: pd.DataFrame, failed: Mapping[str, tuple[str, ...]],
                    facets: Sequence[str] = ("model", "setting")) -> list[str]:
    """One line per run of `df` with failed checks, for the foot of a table that marks its numbers."""
    notes = []
    for run, checks in sorted(failed.items()):
        rows = df[df["run_dir"] == run]
        if rows.empty:
            continue
        row = rows.iloc[0]
        where = " ".join(labels.facet_label(f, row[f]) for f in facets if f in row)
        notes.append(f"{FAILED_MARK.strip()} {where} {labels.label(row)} (seed {row.get('seed')}): failed "
                     f"{', '.join(checks)} ({Path(run).name})")
    return notes


def method_table(df: pd.DataFrame, value: str, rows: Sequence[str], decimals: int = 1,
                 failed: Mapping[str, tuple[str, ...]] | None = None) -> pd.DataFrame:
    """Rows (e.g. model, setting) x method columns in the paper's order; each cell the mean over
    seeds of `value` with their standard deviation and its 95% interval (estimate_text;
    statistics.CAPTION says it), marked
    where a run behind it failed an integrity check. `df` must be annotated (labels.annotate).
    Missing combinations stay empty (the paper's N/A)."""
    methods = sorted(df["method"].unique(), key=lambda m: (labels.method_key(m), m))
    cells = marked_estimates(df, [*rows, "method"], value, decimals, failed or {}).unstack("method")
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


# Characters LaTeX reads as markup, written as text; and the two marks tables put beside numbers.
_LATEX_TEXT = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
               "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", FAILED_MARK.strip(): r"$^\dagger$"}
_LATEX_SPECIAL = re.compile("|".join(map(re.escape, _LATEX_TEXT)))
# A hyper-parameter or budget with its value, as labels.label and eps_label write them: gamma=1, eps=8/255.
_SYMBOL_VALUE = re.compile(rf"\b({'|'.join(labels.LATEX_SYMBOLS)})=([-+]?[0-9][0-9./eE+-]*)")


def latex_text(value, header: bool = False) -> str:
    """`value` as LaTeX: hyper-parameters and budgets in math mode (`eps=8/255` ->
    `$\\varepsilon = 8/255$`, `BLF (gamma=1)` -> `BLF ($\\gamma = 1$)`), a header that is a symbol's
    name (`eps`) as the symbol, and everything else escaped (`pgd_convergence`, `5%`)."""
    text = str(value)
    if header and text in labels.LATEX_SYMBOLS:
        return f"${labels.LATEX_SYMBOLS[text]}$"
    parts, start = [], 0
    for match in _SYMBOL_VALUE.finditer(text):
        parts += [_escape(text[start:match.start()]), f"${labels.LATEX_SYMBOLS[match[1]]} = {match[2]}$"]
        start = match.end()
    return "".join(parts) + _escape(text[start:])


def _escape(text: str) -> str:
    return _LATEX_SPECIAL.sub(lambda special: _LATEX_TEXT[special[0]], text)


def to_latex(table: pd.DataFrame, caption: str = "") -> str:
    """`table` as a booktabs tabular (the document needs \\usepackage{booktabs}), row labels
    left, cells centred, `caption` as a comment above it."""
    head = [latex_text(table.index.name or "", header=True), *(latex_text(c, header=True) for c in table.columns)]
    lines = [f"% {line}" for line in caption.splitlines()]
    lines += [rf"\begin{{tabular}}{{l{'c' * len(table.columns)}}}", r"\toprule", " & ".join(head) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_text(v) for v in (index, *row)) + r" \\" for index, row in zip(table.index, table.values)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


SETTING = ["dataset", "model", "setting", "method", "hp", "hp_value"]


def over_seeds(df: pd.DataFrame, least: int = 2) -> pd.DataFrame:
    """The records of every setting (dataset, model, training, method and its hyper-parameter)
    trained over at least `least` seeds. `df` must be annotated."""
    if df.empty or "seed" not in df:
        return df.iloc[0:0]
    seeds = df.groupby(SETTING, dropna=False)["seed"].transform("nunique")
    return df[seeds >= least]


def curve_table(df: pd.DataFrame, facets: Sequence[str], decimals: int = 1) -> pd.DataFrame:
    """Accuracy against eps as a table: one row per (facets, method with its hyper-parameter,
    attack), each method's adaptive worst case (its worst-case rows, named by the attacks they
    are made of) below its attacks wherever it was recorded, one column per eps, the mean over
    seeds with their standard deviation and its 95% interval, marked where a run failed an
    integrity check. Two evaluations of
    one attack are two rows (attack_labels). `df` must be annotated."""
    curve = df[df["kind"].isin([Kind.ROBUSTNESS, Kind.WORST_CASE])]
    curve = curve.assign(label=curve.apply(lambda row: labels.label(row, {"lam": "lambda"}), axis=1),
                         eps=curve["eps"].round(EPS_DECIMALS))
    curve = curve.assign(attack=attack_labels(curve, [*facets, "label"]))
    keys = [*facets, "label", "attack"]
    cells = marked_estimates(curve, [*keys, "eps"], "accuracy", decimals, failed_checks(df)).unstack("eps").fillna("")
    # Rows in the paper's order: facets (2C2F before 4C3F, ST before AT), then methods, the worst case last.
    order = sorted(cells.index, key=lambda key: ([labels.facet_key(f, v) for f, v in zip(facets, key)],
                                                 labels.method_key(key[len(facets)]), key[:-1],
                                                 key[-1].startswith(WORST_CASE_LABEL), key[-1]))
    cells = cells.loc[order]
    cells.columns = [eps_label(c, curve) for c in cells.columns]
    cells.index = [", ".join(labels.facet_label(f, k) for f, k in zip(keys, key)) for key in cells.index]
    return cells

"""The paper's published numbers as tidy data, in the shape of our records.

`published.csv` holds every cell of Tables 1-5 (one row per cell; "N/A" is an empty value) and
the bounds Theorem 3 puts on BLF's extremum (eqs. 6, 7; the paper solves z* only numerically,
footnote 2). Columns: table, dataset, model and setting (ST/AT) as our records and labels spell
them, training, method (labels.METHOD_ORDER's names), attack and eps (the table's budget: 0.15 on
MNIST, 8/255 on CIFAR-10), metric (the record column it compares with: accuracy, mean_conv,
max_minus_min), value, source.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

PATH = Path(__file__).with_name("published.csv")


def load() -> pd.DataFrame:
    """Every published cell; `value` is NaN where the paper has N/A."""
    return pd.read_csv(PATH, dtype={"table": str, "eps_text": str})


def table(name: int | str) -> pd.DataFrame:
    """The cells of one table (1-5, or "theorem3")."""
    df = load()
    return df[df["table"] == str(name)].reset_index(drop=True)


def attacks(name: int | str) -> list[str]:
    """The attacks a table reports (empty for Tables 3 and 5): the paper tuned the
    hyper-parameters of these tables per attack (section 5.3, appendix C)."""
    return sorted(table(name)["attack"].dropna().unique())

"""One evaluation, one number: which evaluation a row of the report comes from, and how two
evaluations of one thing are told apart.

An evaluation is records.evaluation_id: the attack with every setting, the test subset (n,
eval_seed) and the checkpoint with its epoch. Within one run it keys every number. Across the
seeds of a cell the epochs of the selected checkpoints differ, so cells and tables key on the
`protocol`, the evaluation without the epoch. Where one cell (a method's attack in a panel) holds
several protocols (the same attack with restarts=1 and 5, eval.n 100 and 20), each is its own
row: the reference protocol (the one with the most rows, then the newest `evaluated_at`) shows
under the attack's name, the others with what differs from it, `pgd (restarts=5)`. Nothing is
averaged across protocols.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import pandas as pd

from blf.run.records import evaluation_id


def protocol(row: Mapping) -> str:
    """The evaluation without the checkpoint's epoch: the same for every seed of a cell."""
    return evaluation_id({k: v for k, v in row.items() if k != "checkpoint_epoch"})


def subset(row: Mapping) -> str:
    """The images and weights a row was measured on (n, eval_seed, checkpoint and epoch): rows
    with the same subset of one run were attacked on the same images of the same model."""
    return evaluation_id({k: row.get(k) for k in ("n", "eval_seed", "checkpoint", "checkpoint_epoch")})


def per_row(frame: pd.DataFrame, function: Callable[[Mapping], object]) -> pd.Series:
    """`function` of each row of `frame` (as a dict), as a Series on the frame's index."""
    return pd.Series([function(row) for row in frame.to_dict("records")], index=frame.index, dtype=object)


def settings(row: Mapping) -> dict[str, str]:
    """What an evaluation is run with, spelled for a label: the attack's settings, n, eval_seed and
    the checkpoint (missing values left out)."""
    names = [k for k in row if k.startswith("attack.")] + ["n", "eval_seed", "checkpoint"]
    spelled = {}
    for name in names:
        value = row.get(name)
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        spelled[name.removeprefix("attack.")] = f"{value:g}" if number else str(value)
    return spelled


def variants(frame: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """Per row, how its protocol differs from the reference protocol of its group of `keys`:
    '' for the reference, e.g. 'restarts=5' or 'n=20' for another (module docstring)."""
    found = pd.Series("", index=frame.index, dtype=object)
    if frame.empty:
        return found
    newest = frame["evaluated_at"].fillna("").astype(str) if "evaluated_at" in frame else ""
    frame = frame.assign(_protocol=per_row(frame, protocol), _newest=newest)
    groups = frame.groupby(list(keys), dropna=False, sort=False) if keys else [((), frame)]
    for _, group in groups:
        if group["_protocol"].nunique() < 2:
            continue
        counts = group.groupby("_protocol").agg(rows=("_protocol", "size"), newest=("_newest", "max"))
        reference = counts.sort_values(["rows", "newest"], ascending=False, kind="stable").index[0]
        theirs = settings(group[group["_protocol"] == reference].iloc[0].to_dict())
        for name, rows in group.groupby("_protocol"):
            if name != reference:
                mine = settings(rows.iloc[0].to_dict())
                differs = [f"{k}={mine.get(k, '-')}" for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
                found[rows.index] = ", ".join(differs) or name
    return found


def shown(attack: str, variant: str) -> str:
    """An attack as a row names it: `pgd`, `pgd (restarts=5)`."""
    return f"{attack} ({variant})" if variant else attack

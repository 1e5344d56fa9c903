"""Collect the records of many runs into one frame, and derive tables and figures from it.

    python -m blf.aggregate <sweep folder> <output folder> [--title TEXT]

reads every `results.jsonl` below the sweep folder, writes `records.csv`, `accuracy.md` and
`accuracy_vs_eps.png/.pdf` into the output folder, and prints the accuracy table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from . import figures, reporting, storage
from .errors import BLFError


def collect(sweep: Path) -> tuple[pd.DataFrame, list[Path]]:
    """(every record below `sweep`, run folders without records)."""
    sweep = Path(sweep)
    if not sweep.is_dir():
        raise BLFError(f"sweep folder {sweep} does not exist; allowed: a folder holding run folders (multirun/<experiment>)")
    rows, incomplete = [], []
    for run in sorted(p.parent.parent for p in sweep.rglob(".hydra/config.yaml")):
        found = storage.read_jsonl(run / "results.jsonl")
        if not found:
            incomplete.append(run)
        rows.extend(found)
    return pd.DataFrame(rows), incomplete


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    try:
        df, incomplete = collect(args.sweep)
    except BLFError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for run in incomplete:
        print(f"warning: {run} has no records (unfinished or failed run)", file=sys.stderr)
    if df.empty:
        print(f"error: no records below {args.sweep}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    storage.write_text(args.out / "records.csv", df.to_csv(index=False))
    table = reporting.accuracy_table(df)
    storage.write_text(args.out / "accuracy.md", table + "\n")
    figures.accuracy_vs_eps(df, args.out / "accuracy_vs_eps", title=args.title)
    print(table)
    print(f"records, table and figure: {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Collect the records of every run below a sweep folder into one pandas frame.

    python -m blf.report <sweep folder> <output folder> [--title TEXT]

writes `records.csv` and `records.parquet` (every record of every run; the Parquet file with
typed columns), `jobs.csv` (one line per run folder: its overrides, epochs done, and whether it
finished), `accuracy.md` and `accuracy_vs_eps.png/.pdf` into the output folder, and prints
the accuracy table. Unfinished or failed runs are reported, never fatal.
"""

from __future__ import annotations

import argparse
import io
import numbers
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from blf import console
from blf.errors import BLFError, RecordError, UntrustedFileError
from blf.report import figures, provenance, tables
from blf.run import records, storage

REPO = records.REPO
shown = records.shown_run_dir


def folder(run_dir: str) -> Path:
    """The folder a record's `run_dir` names (shown's inverse, whatever the working directory)."""
    return REPO / run_dir


def run_folders(sweep: Path) -> list[Path]:
    return sorted(p.parent.parent for p in Path(sweep).rglob(".hydra/config.yaml"))


# An interpolation of another key alone (`${training.regime}`): no resolver, no relative key.
KEY_INTERPOLATION = re.compile(r"\$\{([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*)\}")


def _at(config, key: str):
    for part in key.split("."):
        config = config.get(part) if isinstance(config, Mapping) else None
    return config


def resolved(config: Mapping, key: str, hops: int = 8):
    """The value at dotted `key` of a plain config, its interpolations of other keys followed,
    innermost first (`${model.recipe.${training.regime}.epochs}`), at most `hops` of them; None
    where a key is missing or an interpolation calls a resolver. OmegaConf is not asked: a file's
    resolver call would run (`oc.create` parses its text as YAML, aliases included)."""
    value = _at(config, key)
    for _ in range(hops):
        if not (isinstance(value, str) and "${" in value):
            return value
        if whole := KEY_INTERPOLATION.fullmatch(value):
            value = _at(config, whole.group(1))
            continue
        inner = KEY_INTERPOLATION.search(value)
        found = _at(config, inner.group(1)) if inner else None
        if not isinstance(found, (str, int, float)) or isinstance(found, bool):
            return None
        value = value[:inner.start()] + str(found) + value[inner.end():]
    return None


def epochs_asked(run: Path) -> int | None:
    """The epochs a run folder's config asks for (Hydra's copy keeps `trainer.epochs` as the
    interpolation of the model's recipe: resolved here), None where it cannot be known. The file
    is read through the bounded reader; one it refuses stops the report (collect)."""
    try:
        config = storage.read_yaml(run / ".hydra" / "config.yaml")
    except OSError:
        return None
    value = resolved(config, "trainer.epochs") if isinstance(config, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def job_status(run: Path) -> dict:
    """What a run folder holds: its overrides, the epochs done, and whether it is complete."""
    overrides_file = run / ".hydra" / "overrides.yaml"
    overrides = storage.read_yaml(overrides_file) if overrides_file.is_file() else []
    if not (overrides is None or (isinstance(overrides, list) and all(isinstance(o, str) for o in overrides))):
        raise RecordError(f"{overrides_file} is not a list of overrides; allowed: the list Hydra wrote")
    metrics = storage.read_jsonl(run / "metrics.jsonl")
    results = storage.read_jsonl(run / "results.jsonl")
    target = epochs_asked(run)
    done = len(metrics)
    # Complete means what the app means: it wrote finished.json after every record its config asks
    # for was there (and removes it when it starts again), so jobs.csv and the driver agree.
    complete = (run / "finished.json").is_file() and bool(results)
    status = "complete" if complete else ("training" if (run / "checkpoints" / "last.pt").is_file() else "not started or failed")
    return {"run_dir": shown(run), "overrides": " ".join(overrides or []), "epochs_done": done,
            "epochs": target if isinstance(target, int) else None, "status": status}


# What reading a run folder someone else wrote may raise: the file is not trusted.
UNREADABLE = (BLFError, OSError, ValueError, TypeError)


def collect(sweep: Path, strict: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every record below `sweep`, one status line per run folder). A run folder that cannot be
    read (a record of a schema this code cannot read, a broken line, broken YAML) is left out and
    its status line says why, naming the file; with `strict` its error stops the collection. A
    file past what the project ever writes (storage.read_yaml's bounds) is no accident: it stops
    the collection in any case, naming the file."""
    sweep = Path(sweep)
    if not sweep.is_dir():
        raise BLFError(f"sweep folder {sweep} does not exist; allowed: a folder holding run folders (multirun/<experiment>/<profile>)")
    rows, jobs = [], []
    for run in run_folders(sweep):
        try:
            status = job_status(run)
            results = run / "results.jsonl"
            found = storage.read_jsonl(results)
            for row in found:
                records.check_schema(row, str(results))
        except UntrustedFileError:
            raise
        except UNREADABLE as error:
            if strict:
                raise
            jobs.append({"run_dir": shown(run), "overrides": "", "epochs_done": None, "epochs": None,
                         "status": "unreadable", "reason": str(error).splitlines()[0] if str(error) else type(error).__name__})
            continue
        jobs.append(status)
        # A record says which folder it belongs to by where it is, not by what it says.
        rows += [{**row, "run_dir": shown(run)} for row in found]
    return pd.DataFrame(rows), pd.DataFrame(jobs)


def report_jobs(jobs: pd.DataFrame) -> str:
    if jobs.empty:
        return "no run folders"
    counts = jobs["status"].value_counts().to_dict()
    lines = [f"{len(jobs)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))]
    for _, job in jobs[jobs["status"] != "complete"].iterrows():
        if job["status"] == "unreadable":
            lines.append(f"  warning: unreadable, left out: {job['run_dir']} ({job['reason']})")
        else:
            lines.append(f"  warning: {job['status']}: {job['run_dir']} ({job['epochs_done']} of {job['epochs']} epochs)")
    return "\n".join(lines)


def _kind_of_value(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, numbers.Integral):
        return "int"
    if isinstance(value, numbers.Real):
        return "float"
    return "text"


def typed_column(column: pd.Series) -> pd.Series:
    """One nullable type for a record column, from the values it holds: boolean, Int64, Float64
    (also for a column with no value at all, as pandas reads an empty CSV column) or string. A
    column that mixes kinds (an integrity check's value: a number or a word) or holds lists
    becomes text spelled as records.csv spells it."""
    kinds = {_kind_of_value(value) for value in column.dropna()}
    if kinds == {"bool"}:
        return column.astype("boolean")
    if kinds == {"int"}:
        return column.astype("Int64")
    if kinds <= {"int", "float"}:
        return column.astype("Float64")
    # Words, and whatever mixes kinds: str() of each value, as to_csv writes it.
    return column.astype("string")


def typed(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with a typed, nullable column for each column (typed_column): what Parquet stores."""
    return pd.DataFrame({name: typed_column(df[name]) for name in df.columns}, index=df.index)


def write(df: pd.DataFrame, jobs: pd.DataFrame, out: Path) -> None:
    """records.csv, records.parquet (the same records, typed) and jobs.csv, each atomically."""
    out.mkdir(parents=True, exist_ok=True)
    storage.write_text(out / "records.csv", df.to_csv(index=False))
    parquet = io.BytesIO()
    typed(df).to_parquet(parquet, index=False)
    storage.write_bytes(out / "records.parquet", parquet.getvalue())
    storage.write_text(out / "jobs.csv", jobs.to_csv(index=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--title", default="")
    parser.add_argument("--strict", action="store_true", help="stop at a run folder that cannot be read (default: "
                        "leave it out, say why, and go on)")
    args = parser.parse_args(argv)
    try:
        return report_sweep(args)
    except KeyboardInterrupt:
        return console.interrupted("every file written so far is whole (each write is atomic); rerun the report")


def report_sweep(args) -> int:
    """The command once its arguments are read."""
    try:
        # Every file below the output folder is written without following a link: one planted
        # there is refused before any file is written (the folder itself may be a link: the
        # user's choice, as for a sweep folder).
        storage.refuse_links_inside(args.out)
        df, jobs = collect(args.sweep, strict=args.strict)
    except UNREADABLE as error:
        return refused(error)
    print(report_jobs(jobs), file=sys.stderr)
    if df.empty:
        print(f"error: no records below {args.sweep}", file=sys.stderr)
        return 2
    try:
        write(df, jobs, args.out)
        for note in provenance.provenance_notes(df):
            print(f"!! {note}", file=sys.stderr)
        table = tables.accuracy_table(df)
        storage.write_text(args.out / "accuracy.md", table + "\n")
        drawn = figures.accuracy_panels(df, [], title=args.title + provenance.synthetic_note(df) + provenance.provenance_note(df))
        figures.save(drawn, args.out / "accuracy_vs_eps", close=True)
    except (BLFError, OSError) as error:  # a link made since the check, a full disk, an output path that is a file
        return refused(error)
    print(table)
    print(f"records, table and figure: {args.out}/")
    return 0


def refused(error: Exception) -> int:
    """The command's answer to a user's error (a refused file, a full disk): one line, exit status 2."""
    if isinstance(error, OSError) and error.strerror:
        line = f"{error.filename or 'a file'}: {error.strerror}; allowed: a readable sweep folder and a writable output folder"
    else:
        line = str(error).splitlines()[0] if str(error) else type(error).__name__
    print(f"error: {line}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

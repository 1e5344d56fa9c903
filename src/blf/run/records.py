"""Tidy records: one row per observation, with the settings and the code that produced it.

A run folder's `results.jsonl` holds rows of several kinds:
- kind="robustness": one per (attack, eps): n, correct, accuracy (percent), seconds, and the
  attack's settings as `attack.<name>` columns;
- kind="norms": mean L2 and L-infinity norms of logits and pre-logits on clean test data.
Every row also carries the run's identity (identity.record_columns: dataset, model, head,
gamma, regularizer, lam, alpha, training, beta, seed, run_key, ...), so a pile of rows from many
runs is one table, and its provenance (`provenance`): the record schema, the code version that
evaluated and the one that trained the checkpoint, so that stale results can be told apart.
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from blf.run import identity, storage

# Version 2: rows carry provenance (code versions, `augmented`, `threads`) and `run_key`.
# Rows without `schema_version` were written by earlier code; CIFAR-10 checkpoints of that time
# were trained without crop and flip (the augmentation never reached the training loop).
SCHEMA_VERSION = 2

# Fields that tell two rows of the same run apart; a new row replaces an old one with the
# same key (re-evaluating an attack updates its rows and keeps every other row).
KEY_FIELDS = ("kind", "attack", "eps", "n", "eval_seed", "checkpoint")

_REPO = Path(__file__).resolve().parents[3]


@functools.cache
def code_version() -> dict:
    """{'commit': ..., 'dirty': ...} of the code running now (None where it is not a git checkout).
    Dirty means tracked files differ from the commit, so the commit alone does not say what ran."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=_REPO, capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def stamp() -> dict:
    """What a checkpoint keeps about the code that wrote it."""
    return {"schema_version": SCHEMA_VERSION, **code_version()}


def provenance(trained: Mapping | None) -> dict:
    """Provenance columns of a record: this code, and the code that trained the checkpoint
    (`trained` is the checkpoint's stamp; None for checkpoints older than schema 2)."""
    now = code_version()
    trained = trained or {}
    return {
        "schema_version": SCHEMA_VERSION,
        "code_commit": now["commit"],
        "code_dirty": now["dirty"],
        "trained_schema_version": trained.get("schema_version"),
        "trained_code_commit": trained.get("commit"),
        "trained_code_dirty": trained.get("dirty"),
    }


def identity_columns(config: Mapping, *described: Mapping) -> dict:
    """The run-identifying columns, from the resolved config and the built objects."""
    row = identity.record_columns(config)
    for part in described:
        row.update(part)
    return row


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def key(row: Mapping) -> tuple:
    settings = tuple(sorted((k, str(v)) for k, v in row.items() if k.startswith("attack.")))
    return tuple(row.get(field) for field in KEY_FIELDS) + settings


def upsert(path: Path, new_rows: Iterable[Mapping]) -> list[dict]:
    """Add rows to a JSONL file, replacing rows with the same key; atomic."""
    new_rows = [dict(r) for r in new_rows]
    replaced = {key(r) for r in new_rows}
    rows = [r for r in storage.read_jsonl(path) if key(r) not in replaced] + new_rows
    storage.write_jsonl(path, rows)
    return rows

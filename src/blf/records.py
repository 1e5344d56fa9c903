"""Tidy records: one row per observation, with the settings that produced it.

A run folder's `results.jsonl` holds rows of several kinds:
- kind="robustness": one per (attack, eps): n, correct, accuracy (percent), seconds, and the
  attack's settings as `attack.<name>` columns;
- kind="norms": mean L2 and L-infinity norms of logits and pre-logits on clean test data.
Every row also carries the run's identity (dataset, model, head, gamma, regularizer, lam,
alpha, training, beta, seed, ...), so a pile of rows from many runs is one table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path

from . import storage

# Fields that tell two rows of the same run apart; a new row replaces an old one with the
# same key (re-evaluating an attack updates its rows and keeps every other row).
KEY_FIELDS = ("kind", "attack", "eps", "n", "eval_seed", "checkpoint")


def identity(config: Mapping, *described: Mapping) -> dict:
    """The run-identifying columns, from the resolved config and the built objects."""
    row = {
        "experiment": config.get("experiment_name"),
        "profile": config.get("profile_name"),
        "dataset": config["dataset"]["name"],
        "n_train": config["dataset"].get("n_train"),
        "model": config["model"]["name"],
        "seed": config["seed"],
        "epochs": config["trainer"]["epochs"],
    }
    for part in described:
        row.update(part)
    return row


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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

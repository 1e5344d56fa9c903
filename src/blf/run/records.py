"""The record schema: tidy rows, one per observation, with the settings and the code behind it.

A run folder's `results.jsonl` holds rows of the kinds in `Kind`. Every row carries
- the run's identity (`record_columns` and the built objects' `describe()`): experiment,
  profile, dataset, n_train, model, seed, epochs, run_key (a digest of the identity keys,
  identity.py), head, gamma, regularizer, lam, alpha, training, beta, synthetic;
- the evaluation it belongs to: checkpoint, checkpoint_epoch, clean_test_acc, n, eval_seed,
  evaluated_at, run_dir (`recorded_run_dir`: no machine's absolute path);
- its provenance (`provenance`): the record schema, the code version that evaluated it and the
  one that trained the checkpoint (so stale results can be told apart), augmented, threads,
  cpu_capability.
Rows are replaced by `key` (kind, attack, eps, n, eval_seed, checkpoint and the attack's
settings); EVALUATION_FIELDS say which evaluation a row belongs to, OBSERVATION_FIELDS which
observation of a run it is; budgets match within EPS_TOLERANCE. A pile of rows from many runs is
one table.
"""

from __future__ import annotations

import functools
import math
import subprocess
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from blf.errors import RecordError
from blf.run import identity, storage

try:  # pandas' missing value, where pandas is installed (records are written without it)
    from pandas import NA as pd_NA
except ImportError:  # pragma: no cover
    pd_NA = object()

# Version 2: rows carry provenance (code versions, `augmented`, `threads`) and `run_key`.
# Version 3: robustness and worst-case rows carry their per-example `outcome` (encode_outcome),
# so that paired statistics need the records only.
# Rows without `schema_version` were written by earlier code; CIFAR-10 checkpoints of that time
# were trained without crop and flip (the augmentation never reached the training loop).
SCHEMA_VERSION = 3


class Kind(StrEnum):
    """What a row observes. A str, so rows read back from JSON compare equal to the members."""

    ROBUSTNESS = "robustness"  # one (attack, eps): n, correct, accuracy (%), seconds, per_example, attack.<key> settings
    WORST_CASE = "worst_case"  # one eps: the fraction of examples that survive every attack run on this checkpoint and subset
    NORMS = "norms"  # mean L2 / L-inf norms of logits and pre-logits on clean test data (Fig. 1)
    INTEGRITY = "integrity"  # one check's verdict: check, status, value, threshold, detail
    OPERATOR_NORM = "operator_norm"  # one layer: layer, layer_type, operator_norm (appendix C)
    OPERATOR_NORM_SUMMARY = "operator_norm_summary"  # mean_conv, mean_linear over the layers (Table 3)
    LOSS_SURFACE = "loss_surface"  # one data point: point, example, label, max_minus_min, arrays (Table 5)
    BUDGET_SWEEP = "budget_sweep"  # one PGD budget at one eps: attack.nb_iter, attack.restarts, sweep_n, accuracy
    VALIDATION = "validation"  # one (attack, eps) on the validation split (eval.selection_split): n, correct, accuracy
    AUDIT = "audit"  # one eps of blf.audit (analysis=audit): audit_n, accuracy (audited), reported_accuracy, audit.* verdicts and shares


# The attack name of worst-case rows (a row per eps, beside the attacks it summarises).
WORST_CASE = "worst_case"

# Fields that tell two rows of the same run apart; a new row replaces an old one with the
# same key (re-evaluating an attack updates its rows and keeps every other row).
KEY_FIELDS = ("kind", "attack", "eps", "n", "eval_seed", "checkpoint")

# Fields that say which evaluation a row belongs to: the checkpoint (and how long its run had
# trained) and the test subset. The worst case and the integrity checks use only the rows of one.
EVALUATION_FIELDS = ("checkpoint", "checkpoint_epoch", "epochs", "n", "eval_seed")

# Fields that tell one observation of a run from another across kinds (an attack at an eps, a
# check, a layer, a data point): a report keeps one row per value of these.
OBSERVATION_FIELDS = ("run_dir", "kind", "attack", "eps", "check", "layer", "point")

# Budgets are floats from configs (8/255 resolved from `${per255:8}`): two are the same budget
# when they differ by less than this; tables round them to 8 decimals for their columns.
EPS_TOLERANCE = 1e-6
EPS_DECIMALS = 8

# Columns tables group by: a table shows those that vary among its rows.
TABLE_COLUMNS = ("experiment", "dataset", "model", "training", "head", "gamma", "regularizer", "lam", "alpha", "beta",
                 "seed")

REPO = Path(__file__).resolve().parents[3]


def shown_run_dir(run: Path) -> str:
    """A run folder as a shared file names it: relative to the repository where it lies inside,
    absolute elsewhere (a report's jobs.csv on the machine that made it)."""
    run = Path(run).resolve()
    return str(run.relative_to(REPO)) if run.is_relative_to(REPO) else str(run)


def recorded_run_dir(run: Path) -> str:
    """The `run_dir` a record stores: relative to the repository where the folder lies inside,
    else the folder's own name; never a machine's absolute path, since the record is shipped with
    the folder. Readers never use it to find files: the report sets `run_dir` from where it
    found the record (collect.py)."""
    run = Path(run).resolve()
    return str(run.relative_to(REPO)) if run.is_relative_to(REPO) else run.name


@functools.cache
def code_version() -> dict:
    """{'commit': ..., 'dirty': ...} of the code running now (None where it is not a git checkout).
    Dirty means tracked files differ from the commit, so the commit alone does not say what ran."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30,
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


def same_eps(a, b):
    """Whether budgets are equal within EPS_TOLERANCE (floats, or pandas Series of them)."""
    return abs(a - b) < EPS_TOLERANCE


def record_columns(config: Mapping) -> dict[str, Any]:
    """Columns of every record that say which run it belongs to, from the resolved config; the
    built objects add their own (head, gamma, regularizer, lam, alpha, training, beta)."""
    return {
        "experiment": config.get("experiment_name"),
        "profile": config.get("profile_name"),
        "dataset": config["dataset"]["name"],
        "n_train": config["dataset"].get("n_train"),
        "model": model_name(config["model"]),
        "seed": config["seed"],
        "epochs": config["trainer"]["epochs"],
        "run_key": identity.run_key(config),
    }


def model_name(model: Mapping) -> str:
    """The model column: the option (`2c2f`, `resnet18`, ...), with the architecture for a
    library's model (`torchvision:resnet50`, `timm:convnext_nano`)."""
    return f"{model['name']}:{model['arch']}" if model.get("arch") else model["name"]


def identity_columns(config: Mapping, *described: Mapping) -> dict:
    """The run-identifying columns, from the resolved config and the built objects."""
    row = record_columns(config)
    for part in described:
        row.update(part)
    return row


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def key(row: Mapping) -> tuple:
    settings = tuple(sorted((k, str(v)) for k, v in row.items() if k.startswith("attack.")))
    # Plain values, so that a row being written and the same row read back have one key.
    return tuple(_plain(row.get(field)) for field in KEY_FIELDS) + settings


def _plain(value):
    return value.value if isinstance(value, Enum) else value


def encode_outcome(correct) -> str:
    """A per-example outcome (True: still correct) as hex, 8 examples per byte in subset order
    (bit i of byte k is example 8k + i): 1000 examples take 250 characters in a record."""
    bits = np.asarray(correct, dtype=bool).ravel()
    return np.packbits(bits, bitorder="little").tobytes().hex()


def decode_outcome(text: str, n: int) -> np.ndarray:
    """The boolean vector of `n` examples that encode_outcome wrote."""
    data = np.frombuffer(bytes.fromhex(text), dtype=np.uint8)
    bits = np.unpackbits(data, bitorder="little")
    if len(bits) < n or len(bits) - n >= 8:
        raise ValueError(f"an outcome of {len(bits)} bits cannot hold {n} examples")
    return bits[:n].astype(bool)


# What identifies one evaluation of a run (RobustBench keys every number on threat model, dataset
# and attack version): the attack with every setting, the test subset (n, eval_seed) and the
# checkpoint (which one, of which epoch). Two rows of one run with different identities are two
# evaluations, never one number. The head or surrogate an attack crafts through is one of its
# settings (`attack.surrogate`), so it is part of the attack.
EVALUATION_ID_FIELDS = ("attack", "n", "eval_seed", "checkpoint", "checkpoint_epoch")


def evaluation_id(row: Mapping) -> str:
    """A readable, stable identity of the evaluation a row comes from, e.g.
    `pgd[eps_iter=0.01,nb_iter=40,restarts=1,...] n=1000 eval_seed=0 best@99`. Missing values
    (NaN in a frame read back from CSV) and absent ones read the same."""
    settings = ",".join(f"{k[len('attack.'):]}={_text(v)}" for k, v in sorted(row.items())
                        if k.startswith("attack.") and _text(v) != "")
    if row.get("attacks") not in (None, "") and _text(row.get("attacks")) != "":
        settings = settings or f"of={row['attacks']}"
    return (f"{row.get('attack')}[{settings}] n={_text(row.get('n'))} eval_seed={_text(row.get('eval_seed'))} "
            f"{_text(row.get('checkpoint'))}@{_text(row.get('checkpoint_epoch'))}")


def _text(value) -> str:
    """A value as an identity spells it: None and NaN are empty, 3.0 is 3, 0.01 stays 0.01."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    try:
        if value is pd_NA:
            return ""
    except TypeError:
        pass
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.10g}"
    return str(value)


def check_schema(row: Mapping, where: str) -> None:
    """Refuse a record written by a newer schema than this code reads (its fields may mean
    something else), naming the file."""
    version = row.get("schema_version")
    if version is None or (isinstance(version, float) and math.isnan(version)):
        return
    if not isinstance(version, (int, float)) or isinstance(version, bool) or int(version) != version \
            or not 1 <= version <= SCHEMA_VERSION:
        raise RecordError(f"{where}: a record has schema_version={version!r}, which this code cannot read; "
                          f"allowed: 1..{SCHEMA_VERSION} (update the code, or regenerate the records)")


def upsert(path: Path, new_rows: Iterable[Mapping]) -> list[dict]:
    """Add rows to a JSONL file, replacing rows with the same key; atomic."""
    new_rows = [dict(r) for r in new_rows]
    replaced = {key(r) for r in new_rows}
    rows = [r for r in storage.read_jsonl(path) if key(r) not in replaced] + new_rows
    storage.write_jsonl(path, rows)
    return rows

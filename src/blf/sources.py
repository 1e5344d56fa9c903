"""The source models of the transfer attacks (eval/attacks/transfer.py), found and loaded where
a run's evaluation is assembled: the attacks take their models from outside and never read run
folders, so finding a run and loading it (blf.trained) stays with the apps.

`attack.transfer.source` is a run folder, or `auto`, the Baseline of the same study: a run folder
beside the evaluated one (the same sweep) with the identity head, no regulariser, and the same
dataset, model and training, another seed preferred. A Baseline evaluated with `auto` and no
other seed at hand is its own source (then the attack is plain PGD, as it should be for an
unbounded head); the records name the source either way (`attack.source`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from blf import config as C
from blf.assembly import Assembly
from blf.errors import BLFError
from blf.eval.attacks.transfer import AUTO, TransferPGD
from blf.run import records, storage
from blf.trained import load

log = logging.getLogger(__name__)


IDENTITY = ("dataset", "model", "training", "head", "regularizer", "seed")


def _identity(folder: Path) -> dict | None:
    """Which model a trained run folder holds: from its first record (the records carry the run's
    identity), else from its checkpoint's config (a run trained without evaluation has no
    records); None for a folder without a readable checkpoint."""
    best = folder / "checkpoints" / "best.pt"
    if not best.is_file():
        return None
    rows = storage.read_jsonl(folder / "results.jsonl") if (folder / "results.jsonl").is_file() else []
    if rows:
        return {k: rows[0].get(k) for k in IDENTITY}
    try:
        config = storage.load_checkpoint(best)["config"]
        return {"dataset": config["dataset"]["name"], "model": records.model_name(config["model"]),
                **{k: config[k]["name"] for k in ("training", "head", "regularizer")}, "seed": config["seed"]}
    except (BLFError, KeyError, TypeError):
        return None


def find_baseline(run_dir: Path, own: dict) -> Path | None:
    """The Baseline beside `run_dir` (module docstring) for a run of identity `own`, or None."""
    candidates = []
    for folder in sorted(Path(run_dir).parent.iterdir()):
        other = _identity(folder) if folder.is_dir() else None
        if other and other["head"] == "identity" and other["regularizer"] == "none" and all(
                other[k] == own.get(k) for k in ("dataset", "model", "training")):
            # Another seed first (independent), then the run itself.
            candidates.append((other["seed"] == own.get("seed"), folder.resolve() == Path(run_dir).resolve(), folder.name))
    return Path(run_dir).parent / min(candidates)[2] if candidates else None


def locate(attack: TransferPGD, run_dir: Path, identity: dict) -> Path | None:
    """The source folder of `attack` for the run in `run_dir` of identity `identity`
    (records.identity_columns); None (with a warning) where `auto` finds no Baseline."""
    run_dir = Path(run_dir)
    if attack.source == AUTO:
        found = find_baseline(run_dir, identity)
        if found is None:  # a study without a Baseline (Fig. 5), or one not trained yet
            log.warning("attack %s: no Baseline (head=identity, regularizer=none, same dataset, model and training) "
                        "with a checkpoint beside %s: not run; attack.%s.source=<run folder> names one",
                        attack.name, run_dir, attack.name)
            return None
    else:
        found = Path(attack.source)
        if not (found / "checkpoints" / f"{attack.checkpoint}.pt").is_file():
            raise C.ConfigError(f"attack.{attack.name}.source={attack.source!r} has no checkpoints/{attack.checkpoint}.pt; "
                                "allowed: auto (a Baseline in the same sweep) or the folder of a trained run")
    return found.resolve()


def attach(run: Assembly, run_dir: Path) -> Assembly:
    """`run` with the attacks that can run on the run in `run_dir`, each transfer attack holding its
    source model (loaded by the apps' loader, on the run's device); one without a source is left
    out, and a later evaluation adds it once there is one."""
    ready = []
    for attack in run.attacks:
        if isinstance(attack, TransferPGD):
            folder = locate(attack, run_dir, run.identity())
            if folder is None:
                continue
            attack.use_source(load(folder, attack.checkpoint, device=run.device).requires_grad_(False), folder.name)
        ready.append(attack)
    return dataclasses.replace(run, attacks=ready)

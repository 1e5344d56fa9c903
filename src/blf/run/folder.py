"""A run folder that survives interruption (drqv2-style workspace).

    <run>/.hydra/                 Hydra's record of the config and overrides
    <run>/checkpoints/last.pt     model, optimizer, scheduler, epoch, history, RNG states
    <run>/checkpoints/best.pt     the epoch with the largest clean test accuracy
    <run>/metrics.jsonl           one line per epoch
    <run>/results.jsonl           evaluation records (records.py)
    <run>/per_example/*.pt        per-example outcomes behind each robustness record
    <run>/analysis/               loss surfaces (arrays and figures)

Starting a run in a folder that has `last.pt` resumes it. The config stored in the checkpoint
is the run's identity: a command that asks for different settings in the same folder is
refused, and Hydra's copy of the config (which Hydra rewrites before any of our code runs) is
put back.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch

from blf import config as C
from blf.errors import BusyError, CheckpointError, RecordError
from blf.run import identity, records, storage, untrusted

# What a checkpoint keeps of Hydra's record, to put it back when a different run is refused here
# (names come from a checkpoint, so only these plain names are ever written). Not hydra.yaml: it
# holds the machine's paths (cwd, output_dir, the config search path), nothing reads it, and a
# checkpoint travels to other machines (docs/results/*/runs).
HYDRA_FILES = ("config.yaml", "overrides.yaml")
# What a command leaves in a folder before it has done anything (Hydra's record and log, our lock,
# the W&B run's folder and id).
BOOKKEEPING = {".hydra", "train.log", "evaluate.log", ".lock", "wandb", "wandb_id.json"}

# Run folders this process found missing before Hydra created them (app.FolderWatch): only
# those may be removed after a refused start. A folder that existed is never removed.
_CREATED: set[Path] = set()


def safe_name(text: str) -> str:
    """A value from a record or config made fit for a file name: no separators, no `..`."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", text).lstrip(".") or "_"


def note_if_new(folder: Path) -> None:
    """Called before the folder may be created: remember it if it does not exist yet."""
    folder = Path(folder).resolve()
    if not folder.exists():
        _CREATED.add(folder)


def restore(module: torch.nn.Module, state: dict, path: Path) -> None:
    """Load a checkpoint's weights into `module`, or say plainly that they do not fit it (a
    checkpoint of another architecture, or a config that no longer matches its weights)."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as error:
        first = str(error).splitlines()[0][:200]
        raise CheckpointError(
            f"{path} does not fit the network its config describes ({first}); "
            "allowed: a checkpoint written by src/train.py for this run's config"
        ) from None


class RunFolder:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.checkpoints = self.root / "checkpoints"
        self.metrics_path = self.root / "metrics.jsonl"
        self.results_path = self.root / "results.jsonl"
        self.hydra_dir = self.root / ".hydra"
        self.finished_path = self.root / "finished.json"

    def checkpoint_path(self, which: str) -> Path:
        C.choice("checkpoint", which, ("best", "last"))
        return self.checkpoints / f"{which}.pt"

    def has(self, which: str) -> bool:
        return self.checkpoint_path(which).is_file()

    def load(self, which: str) -> dict:
        path = self.checkpoint_path(which)
        if not path.exists():  # one that is there but no file (a FIFO, a device) is refused by the reader
            found = ", ".join(sorted(p.name for p in self.checkpoints.glob("*.pt"))) or "none"
            raise CheckpointError(
                f"{self.root} has no checkpoints/{which}.pt (checkpoints found: {found}); "
                "allowed: a run folder written by src/train.py"
            )
        return storage.load_checkpoint(path)

    def restore(self, module: torch.nn.Module, state: dict, which: str) -> None:
        restore(module, state, self.checkpoint_path(which))

    def save(self, which: str, state: dict) -> None:
        storage.save_checkpoint(state, self.checkpoint_path(which))

    # --- records -------------------------------------------------------------------------

    def write_metrics(self, history: list[dict]) -> None:
        # Rewritten whole from the checkpoint's history, so it never disagrees with last.pt.
        storage.write_jsonl(self.metrics_path, history)

    def metrics(self) -> list[dict]:
        return storage.read_jsonl(self.metrics_path)

    def results(self) -> list[dict]:
        return storage.read_jsonl(self.results_path)

    def add_results(self, rows: list[dict]) -> list[dict]:
        return records.upsert(self.results_path, rows)

    def mark_finished(self, job_key: str) -> None:
        """Training and evaluation of this job config are done (identity.job_key)."""
        storage.write_text(self.finished_path, json.dumps({"job_key": job_key}) + "\n")

    def unmark_finished(self) -> None:
        self.finished_path.unlink(missing_ok=True)

    def finished_as(self) -> str | None:
        """The job key of the last job that finished here, if any."""
        if not self.finished_path.exists():
            return None
        try:
            marker = untrusted.read_json(self.finished_path, "allowed: the marker a finished job writes "
                                         '({"job_key": ...}; delete it to run the job again)', limit=64 * 1024)
        except RecordError:  # not JSON: no job finished as anything
            return None
        key = marker.get("job_key") if isinstance(marker, dict) else None
        return key if isinstance(key, str) else None

    @staticmethod
    def outcome_name(row: dict) -> str:
        """Where the per-example outcome of a robustness record lives, named from its key (never
        read back from the record: a path in a file is not trusted)."""
        digest = hashlib.sha1(repr(records.key(row)).encode()).hexdigest()[:10]
        return f"per_example/{safe_name(str(row['attack']))}_eps{float(row['eps']):.6g}_{digest}.pt"

    def save_outcome(self, row: dict, correct: torch.Tensor, index: torch.Tensor) -> str:
        """Store which examples survived the attack of `row`; returns the path for the record."""
        relative = self.outcome_name(row)
        storage.save_checkpoint({"index": index.cpu(), "correct": correct.cpu()}, self.root / relative)
        return relative

    def load_outcome(self, row: dict) -> dict:
        return storage.load_tensors(self.root / self.outcome_name(row))

    # --- identity ------------------------------------------------------------------------

    def hydra_files(self) -> dict[str, str]:
        if not self.hydra_dir.is_dir():
            return {}
        return {name: (self.hydra_dir / name).read_text() for name in HYDRA_FILES if (self.hydra_dir / name).is_file()}

    def ensure_same_run(self, saved: dict, requested: dict, saved_hydra_files: dict[str, str]) -> None:
        """Refuse to resume a run with settings that would make it a different run
        (identity.py says which keys those are)."""
        differing = identity.differences(saved, requested)
        if not differing:
            return
        for name, text in saved_hydra_files.items():
            if name in HYDRA_FILES and isinstance(text, str):
                storage.write_text(self.hydra_dir / name, text)
        shown = "; ".join(f"{k}: run has {a!r}, command asks {b!r}" for k, a, b in differing[:8])
        more = f" (and {len(differing) - 8} more)" if len(differing) > 8 else ""
        raise CheckpointError(
            f"{self.root} holds a different run ({shown}{more}). "
            "Allowed: the same settings (to resume it) or another folder (hydra.run.dir=...)."
        )

    def was_missing(self) -> bool:
        """Whether the folder did not exist before this command (app.FolderWatch noted it)."""
        return self.root.resolve() in _CREATED

    def remove_if_created(self) -> None:
        """Remove the folder after a refused start, if this command created it and it holds
        nothing but bookkeeping: a bad command leaves nothing behind, and never takes a folder
        it did not make."""
        root = self.root.resolve()
        if root in _CREATED and root.is_dir() and all(p.name in BOOKKEEPING for p in root.iterdir()):
            shutil.rmtree(root, ignore_errors=True)

    def check_records(self) -> None:
        """Read the records now: a broken `results.jsonl` is reported before hours of training or
        attacks, not after them."""
        for row in self.results():
            records.check_schema(row, str(self.results_path))

    def refuse_links(self) -> None:
        """Refuse the folder if it holds a symbolic link anywhere: the project writes and replaces
        files here, and would follow it (docs/security.md)."""
        if self.root.is_dir():
            storage.refuse_links_inside(self.root)

    @contextmanager
    def locked(self):
        """Hold the folder for this process: a second process gets one clear error instead of
        mixing its checkpoints and records with ours. The lock (flock on `.lock`) goes with the
        process, so a killed run never blocks its rerun."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.refuse_links()  # every write below would follow a planted link
        with storage.exclusive(self.root / ".lock", f"process {os.getpid()}", lambda holder: BusyError(
                f"{self.root} is in use by {holder}; allowed: wait for it to end, or another folder (hydra.run.dir=...)")):
            yield self

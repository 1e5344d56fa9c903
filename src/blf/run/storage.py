"""Atomic file writes and safe reads of the files a run folder holds.

Every file a run leaves behind is written to a temporary file in the same folder and then
renamed over the target, so a run killed at any moment leaves either the old or the new
version, never half of one. Every file read back is untrusted (docs/security.md): checkpoints
hold tensors and plain values only, YAML is bounded before anything is built from it.
"""

from __future__ import annotations

import fcntl
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml

from blf.errors import CheckpointError, RecordError, UntrustedFileError
from blf.run import untrusted

_UMASK = os.umask(0)
os.umask(_UMASK)


def refuse_link(path: Path) -> None:
    """A file or folder the project writes is never a symbolic link: writing would follow it."""
    if Path(path).is_symlink():
        raise UntrustedFileError(f"{path} is a symbolic link (to {os.readlink(path)}), and this project never writes "
                                 "through one; allowed: a plain file or folder (remove the link)")


# W&B's own folder of a run: W&B makes links in it (`latest-run`, `debug.log`) and replaces them
# itself; the folder is checked, its contents are W&B's.
FOREIGN = ("wandb",)


def links_inside(root: Path) -> list[Path]:
    """The symbolic links below `root` (not followed); a folder the project made holds none."""
    found = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        found += [Path(folder, name) for name in sorted(dirs + files) if Path(folder, name).is_symlink()]
        dirs[:] = [d for d in dirs if d not in FOREIGN]
    return found


def refuse_links_inside(root: Path) -> None:
    """Refuse a run (or sweep) folder that holds a symbolic link anywhere below it."""
    if found := links_inside(root):
        refuse_link(found[0])


def open_nofollow(path: Path, flags: int = os.O_RDWR | os.O_CREAT):
    """os.open that refuses a symbolic link in the last component (O_NOFOLLOW), saying so."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as error:
        if Path(path).is_symlink():
            refuse_link(path)
        raise error


@contextmanager
def exclusive(path: Path, me: str, refuse: Callable[[str], Exception]):
    """Hold `path` for this process (flock; it goes with the process, so a killed holder never
    blocks a rerun) and write `me` into it; where another process holds it, raise `refuse(what
    that process wrote)`. The lock file is opened without following a link."""
    handle = os.fdopen(open_nofollow(path), "r+")  # held open for the duration of the block
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise refuse(handle.read().strip() or "another process") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{me}\n")
        handle.flush()
        yield
    finally:
        handle.close()


def _atomic(path: Path, write) -> None:
    path = Path(path)
    refuse_link(path)  # a rename would replace the link, not follow it; the user should hear of it
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        if error.filename is None:  # a write through a descriptor names no file: name the one meant
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def publish(folder: Path, files: dict[str, bytes]) -> list[Path]:
    """Write `files` (name -> bytes) into `folder` all at once or not at all: staged in a temporary
    folder first, then one rename of that folder where `folder` is new; where it exists, each file
    is renamed into place (renames do not fail for want of space, so nothing is left half-done)."""
    folder = Path(folder)
    refuse_link(folder)
    for name in files:
        refuse_link(folder / name)
    fresh = not folder.exists()
    home = folder.parent if fresh else folder
    home.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=home, prefix=f".{folder.name}." if fresh else ".staged.", suffix=".tmp"))
    try:
        for name, data in files.items():
            with open(stage / name, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(stage / name, 0o666 & ~_UMASK)
        if fresh:
            os.chmod(stage, 0o777 & ~_UMASK)
            os.rename(stage, folder)
        else:
            for name in files:
                os.replace(stage / name, folder / name)
            stage.rmdir()
    except BaseException:
        for leftover in stage.glob("*") if stage.is_dir() else ():
            leftover.unlink(missing_ok=True)
        if stage.is_dir():
            stage.rmdir()
        raise
    return [folder / name for name in files]


def write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda handle: handle.write(data))


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def save_checkpoint(state: dict, path: Path) -> None:
    # Serialised in memory first: a failing disk then raises the file system's own OSError (torch's
    # zip writer would turn it into a RuntimeError without the cause).
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes(path, buffer.getvalue())


CHECKPOINT_ALLOWED = "allowed: a checkpoint written by src/train.py (delete it to start that run afresh)"


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint written by `save_checkpoint` (tensors and plain values only, within the
    bounds of untrusted.read_torch)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}; allowed: a run folder written by src/train.py")
    state = untrusted.read_torch(path, CHECKPOINT_ALLOWED)
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"checkpoint {path} lacks the model or config entries; it was not written by src/train.py")
    check_fields(state, path)
    return state


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_fields(state: dict, path: Path) -> None:
    """A checkpoint's fields as src/train.py writes them, before any is used: weights a mapping
    of finite tensors, a config mapping, epochs whole numbers in range, accuracies finite
    percentages, one history row per epoch with finite numbers. A file is not trusted."""
    def fail(what: str):
        raise CheckpointError(f"checkpoint {path}: {what}; allowed: a checkpoint written by src/train.py "
                              "(delete it to start that run afresh)")

    model = state["model"]
    if not isinstance(model, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()):
        fail("its weights are not a mapping of names to tensors")
    for name, tensor in model.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            fail(f"weight {name} holds NaN or infinite values")
    if not isinstance(state["config"], dict):
        fail("its config is not a mapping")
    epoch = state.get("epoch", 1)
    if not (_whole(epoch) and epoch >= 1):
        fail(f"epoch={epoch!r} is not a whole number >= 1")
    if "best_epoch" in state and not (_whole(state["best_epoch"]) and 1 <= state["best_epoch"] <= epoch):
        fail(f"best_epoch={state['best_epoch']!r} is not within 1..{epoch} (its epoch)")
    for key in ("test_acc", "validation_acc", "best_accuracy"):
        if key in state and not (_finite(state[key]) and 0 <= state[key] <= 100):
            fail(f"{key}={state[key]!r} is not a percentage")
    if "history" in state:
        history = state["history"]
        if not (isinstance(history, list) and len(history) == epoch and all(isinstance(r, dict) for r in history)):
            fail(f"its history is not one row per epoch ({epoch})")
        for i, row in enumerate(history, 1):
            if row.get("epoch") != i:
                fail(f"history row {i} says epoch {row.get('epoch')!r}")
            if bad := [k for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v)]:
                fail(f"history row {i} holds non-finite {', '.join(bad)}")


def load_tensors(path: Path) -> dict:
    """Read a file of tensors written by `save_checkpoint` (weights_only, bounded)."""
    if not Path(path).exists():
        raise CheckpointError(f"{path} is missing; re-run the evaluation")
    return untrusted.read_torch(path, "allowed: the file the evaluation wrote (re-run the evaluation)")


def _json_default(value: Any):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _clean(value: Any) -> Any:
    # JSON has no NaN/inf: write null so every reader (pandas, jq) can parse the file.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(row: dict) -> str:
    return json.dumps({k: _clean(v) for k, v in row.items()}, default=_json_default, sort_keys=False)


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    write_text(path, "".join(dumps(row) + "\n" for row in rows))


JSONL_ALLOWED = "allowed: one JSON object per line, as this project writes them (a truncated last line: delete it)"


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    rows = untrusted.read_json_lines(path, JSONL_ALLOWED)
    for number, row in rows:
        if not isinstance(row, dict):
            raise RecordError(f"{path} line {number} is a JSON {type(row).__name__}, not an object; {JSONL_ALLOWED}")
    return [row for _, row in rows]


# The YAML of a run folder (Hydra's `.hydra/*.yaml`) is read here, beside the checkpoint and
# record readers, because the question is the same: how much of a file to accept before anything
# is built from it (trust.py then decides what the accepted values may name). Hydra writes a few
# KB, at most seven levels deep, and never an anchor or alias (it dumps plain containers).
YAML_MAX_BYTES = 256 * 1024
YAML_MAX_DEPTH = 32
YAML_ALLOWED = (f"allowed: the files Hydra writes (plain YAML without anchors or aliases, at most {YAML_MAX_DEPTH} "
                f"levels deep and {YAML_MAX_BYTES // 1024} KiB)")


class _BoundedLoader(yaml.SafeLoader):
    """yaml's SafeLoader (plain values, no Python objects) that refuses anchors and aliases and
    nesting deeper than YAML_MAX_DEPTH as each node is composed, before the next is parsed: an
    alias lets a few hundred bytes stand for billions of nodes once the tree is copied (OmegaConf
    copies it), and yaml composes nested nodes by recursion."""

    def __init__(self, stream, source: Path):
        super().__init__(stream)
        self.source, self.depth = source, 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        where = f"line {event.start_mark.line + 1}, column {event.start_mark.column + 1}"
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise UntrustedFileError(f"{self.source}: YAML aliases are not allowed (an anchor or alias at {where}; a few "
                                     f"bytes of them can stand for billions of values); {YAML_ALLOWED}")
        if self.depth >= YAML_MAX_DEPTH:
            raise UntrustedFileError(f"{self.source}: nests deeper than {YAML_MAX_DEPTH} levels (at {where}); {YAML_ALLOWED}")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def read_yaml(path: Path) -> Any:
    """The plain data (dicts, lists, scalars) of an untrusted YAML file, bounded in size, depth and
    alias use (YAML_ALLOWED); past a bound, UntrustedFileError naming the file. Text that is not
    YAML raises RecordError, naming the file. A caller that needs OmegaConf builds it from a
    mapping of this data (OmegaConf.create parses a str as YAML, aliases included)."""
    path = Path(path)
    data = untrusted.read_bytes(path, YAML_MAX_BYTES, YAML_ALLOWED)
    loader = _BoundedLoader(data, path)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = "; ".join(str(part) for part in (error.context, error.problem) if part)
        raise RecordError(f"{path} is not valid YAML ({what}{where}); {YAML_ALLOWED}") from None
    except (yaml.YAMLError, ValueError) as error:  # bytes that are no text; a number of 5000 digits
        raise RecordError(f"{path} is not valid YAML ({str(error).splitlines()[0] if str(error) else type(error).__name__}); "
                          f"{YAML_ALLOWED}") from None
    finally:
        loader.dispose()

"""Atomic file writes and safe checkpoint reads.

Every file a run leaves behind is written to a temporary file in the same folder and then
renamed over the target, so a run killed at any moment leaves either the old or the new
version, never half of one.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from blf.errors import CheckpointError, UntrustedFileError

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
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint written by `save_checkpoint` (tensors and plain values only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; allowed: a run folder written by src/train.py")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - zip, pickle and EOF errors all mean "unreadable"
        raise CheckpointError(
            # An empty file raises EOFError without a message: the name alone then.
            f"checkpoint {path} is unreadable ({type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]}); "
            "it is corrupted or not a checkpoint of this project. Delete it to start that run afresh."
        ) from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"checkpoint {path} lacks the model or config entries; it was not written by src/train.py")
    return state


def load_tensors(path: Path) -> dict:
    """Read a file of tensors written by `save_checkpoint` (weights_only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001
        raise CheckpointError(f"{path} is missing or unreadable ({type(error).__name__}); re-run the evaluation") from None


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


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise CheckpointError(f"{path} line {number} is not valid JSON ({error.msg})") from None
    return rows

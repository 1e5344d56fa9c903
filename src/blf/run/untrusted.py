"""Reading a file a stranger may have written, within bounds (docs/security.md).

A reviewer runs `python -m blf.audit` on files downloaded from someone else, and any run folder
may have been changed since this project wrote it. Every reader of such a file goes through
here, so that a small file cannot take the machine: only regular files are opened (a FIFO would
block forever, `/dev/zero` never ends), each format has a cap on its size once read or inflated,
containers nest at most MAX_DEPTH levels (the readers that follow walk them by recursion), and a
tensor may claim no more elements than its storage holds (a stride-0 tensor of 1e12 elements
costs 4 bytes on disk and 4 TB to check for NaN). Past any bound: one UntrustedFileError naming
the file, the bound and what is allowed, before the content is used.
"""

from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path
from typing import Any

import torch

from blf.errors import CheckpointError, RecordError, UntrustedFileError

# A WideResNet-34-10 checkpoint with its optimizer state is about 0.4 GB; ten times that is room.
TORCH_MAX_BYTES = 4 * 1024**3
# Records of a large sweep's run: a few thousand lines of a few KB.
JSON_MAX_BYTES = 256 * 1024**2
MAX_DEPTH = 32  # configs nest 7 levels, records 2
MAX_ITEMS = 1_000_000  # values in one file's containers (a state dict: a few hundred)


def _size(limit: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if limit >= scale:
            return f"{limit / scale:g} {unit}"
    return f"{limit} bytes"


def open_regular(path: Path, allowed: str):
    """A binary handle on `path`, which must be a regular file (a link to one is followed).
    Opened without blocking, so that a FIFO is refused rather than waited on."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise CheckpointError(f"{path} cannot be opened ({error.strerror}); {allowed}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else \
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a file"
        raise UntrustedFileError(f"{path} is not a regular file ({kind}); {allowed}")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_bytes(path: Path, limit: int, allowed: str) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (read no further than that)."""
    with open_regular(path, allowed) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise UntrustedFileError(f"{path} is larger than {_size(limit)}; {allowed}")
    return data


def check_tree(value: Any, source: Path, allowed: str) -> None:
    """Refuse containers nested deeper than MAX_DEPTH or holding more than MAX_ITEMS values, and
    tensors that claim more elements than their storage holds or are not plain strided ones.
    Walked with an explicit stack: a deep tree must not be the check's own RecursionError."""
    stack, seen = [(value, 0, "")], 0
    while stack:
        node, depth, key = stack.pop()
        seen += 1
        if seen > MAX_ITEMS:
            raise UntrustedFileError(f"{source} holds more than {MAX_ITEMS:,} values; {allowed}")
        if isinstance(node, torch.Tensor):
            check_tensor(node, key, source, allowed)
            continue
        if isinstance(node, dict):
            children = [(v, f"{key}.{k}" if key else str(k)) for k, v in node.items()]
        elif isinstance(node, (list, tuple)):
            children = [(v, f"{key}[{i}]") for i, v in enumerate(node)]
        else:
            continue
        if children and depth >= MAX_DEPTH:
            where = key if len(key) <= 60 else key[:57] + "..."
            raise UntrustedFileError(f"{source} nests deeper than {MAX_DEPTH} levels (at {where or 'the top'}); {allowed}")
        stack.extend((child, depth + 1, name) for child, name in children)


def check_tensor(tensor: torch.Tensor, key: str, source: Path, allowed: str) -> None:
    """A tensor of a file: dense and strided, its elements within its storage, none shared (no
    stride 0): otherwise touching it reads or allocates what the file never held."""
    if tensor.layout != torch.strided or tensor.is_quantized:
        raise UntrustedFileError(f"{source}: tensor {key} has layout {tensor.layout}; {allowed} (dense tensors)")
    held = tensor.untyped_storage().nbytes()
    claimed = tensor.numel() * tensor.element_size()
    if tensor.numel() and (claimed > held or any(s == 0 for s, n in zip(tensor.stride(), tensor.shape) if n > 1)):
        raise UntrustedFileError(f"{source}: tensor {key} claims {tensor.numel():,} elements ({claimed:,} bytes) over a "
                                 f"storage of {held:,} bytes; {allowed} (each tensor's elements stored once)")


# Members of an archive torch.save writes: a pickle and its records. A TorchScript or torch.export
# archive holds code (`code/`, `constants.pkl`, `*.json` graphs); weights_only cannot make it safe.
_PROGRAM_MEMBERS = ("/code/", "/constants.pkl", "/models/", "/extra/")


def read_torch(path: Path, allowed: str) -> Any:
    """What `torch.save` wrote to `path`, read with weights_only=True after its archive was checked:
    a regular file of at most TORCH_MAX_BYTES, a zip (torch.save's format since 1.6) of stored,
    uncompressed members, so that what is read is no larger than the file, and no program."""
    path = Path(path)
    with open_regular(path, allowed) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            raise CheckpointError(f"{path} is unreadable (an empty file); {allowed}")
        if size > TORCH_MAX_BYTES:
            raise UntrustedFileError(f"{path} is larger than {_size(TORCH_MAX_BYTES)}; {allowed}")
        try:
            with zipfile.ZipFile(handle) as archive:
                members = archive.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
            raise CheckpointError(f"{path} is unreadable: not a torch.save archive ({error or 'empty'}); {allowed}") from None
        if any(m for m in members if any(part in "/" + m.filename for part in _PROGRAM_MEMBERS)):
            raise UntrustedFileError(f"{path} is a TorchScript or torch.export program, not weights: loading one runs "
                                     f"its code; {allowed} (a program loads only as model.pt2 or *.torchscript.pt, with "
                                     "--trust-code)")
        packed = [m.filename for m in members if m.compress_type != zipfile.ZIP_STORED]
        if packed or sum(m.file_size for m in members) > size:
            raise UntrustedFileError(f"{path} holds compressed members ({(packed or ['sizes beyond the file'])[0]}), "
                                     f"which torch.save never writes and which may inflate without bound; {allowed}")
        handle.seek(0)
        try:
            value = torch.load(handle, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - zip, pickle and EOF errors all mean "unreadable"
            raise CheckpointError(f"{path} is unreadable ({type(error).__name__}: "
                                  f"{(str(error).splitlines() or [''])[0][:200]}); {allowed}") from None
    check_tree(value, path, allowed)
    return value


def read_json_lines(path: Path, allowed: str) -> list[tuple[int, Any]]:
    """(line number, JSON value) of a file of one value per line (blank lines skipped), bounded in
    size and depth."""
    text = _text(path, allowed)
    return [(number, _json(line, f"{path} line {number}", path, allowed))
            for number, line in enumerate(text.splitlines(), start=1) if line.strip()]


def read_json(path: Path, allowed: str, limit: int = JSON_MAX_BYTES) -> Any:
    """The JSON value of a file, bounded in size and depth."""
    return _json(_text(path, allowed, limit), str(path), path, allowed)


def _text(path: Path, allowed: str, limit: int = JSON_MAX_BYTES) -> str:
    data = read_bytes(path, limit, allowed)
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise RecordError(f"{path} is not UTF-8 text; {allowed}") from None


def _json(text: str, where: str, source: Path, allowed: str) -> Any:
    try:
        value = json.loads(text)
    except RecursionError:
        raise UntrustedFileError(f"{where} nests deeper than {MAX_DEPTH} levels; {allowed}") from None
    except ValueError as error:  # JSONDecodeError; a number of 5000 digits
        raise RecordError(f"{where} is not valid JSON ({getattr(error, 'msg', error)}); {allowed}") from None
    check_tree(value, source, allowed)
    return value

"""Read an offline W&B run back from its `run-<id>.wandb` file, as `wandb sync` would upload it.

The file is W&B's record log: a 7-byte header, then 32 KiB blocks of chunks (checksum, length,
type: full, first, middle, last), each record a protobuf `Record`. Only what the tests ask is
kept: the run (name, tags, id), summary updates, metric definitions, history keys, artifacts.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[pb.Record]:
    raw = Path(path).read_bytes()
    assert raw[:4] == b":W&B", f"{path} is not a W&B run file"
    out, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(raw):
        room = BLOCK - pos % BLOCK
        if room < HEADER:  # the rest of a block too short for a chunk header is padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + HEADER])
        if kind == 0:
            pos += room
            continue
        data, pos = raw[pos + HEADER:pos + HEADER + length], pos + HEADER + length
        if kind == FULL:
            out.append(data)
        elif kind == FIRST:
            pending = data
        elif kind == MIDDLE:
            pending += data
        elif kind == LAST:
            out.append(pending + data)
    parsed = []
    for data in out:
        record = pb.Record()
        record.ParseFromString(data)
        parsed.append(record)
    return parsed


@dataclass
class OfflineRun:
    id: str = ""
    name: str = ""
    tags: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    step_metrics: dict = field(default_factory=dict)  # glob or name -> its step metric
    history_keys: set = field(default_factory=set)
    artifacts: list[dict] = field(default_factory=list)


def read(run_folder: Path) -> OfflineRun:
    """The run in `run_folder` (a `wandb/offline-run-*` folder)."""
    (path,) = Path(run_folder).glob("run-*.wandb")
    run = OfflineRun()
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.id, run.name, run.tags = record.run.run_id, record.run.display_name, list(record.run.tags)
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "metric":
            run.step_metrics[record.metric.glob_name or record.metric.name] = record.metric.step_metric
        elif kind == "history":
            run.history_keys |= {item.key or "/".join(item.nested_key) for item in record.history.item}
        elif kind == "artifact":
            run.artifacts.append({"type": record.artifact.type, "name": record.artifact.name,
                                  "files": [entry.path for entry in record.artifact.manifest.contents],
                                  "aliases": list(record.artifact.aliases)})
    return run

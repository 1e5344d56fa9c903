"""What a stage's runs have done while their jobs run elsewhere (a cluster, parallel workers):
read from the run folders, the one place every launcher writes to.

A run is finished when its folder holds finished.json (the app writes it after training and
evaluation), training when it holds last.pt, waiting otherwise. A run left unfinished after
its multirun ended is reported with the logs that tell why: its own train.log and the
launcher's logs that name it (submitit's, under <sweep>/.submitit/).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from blf.report import collect


@dataclass
class StageProgress:
    stage: str
    folders: list[Path]
    sweep: Path
    every: float = 30.0  # seconds between lines while nothing changes
    _shown: str = ""
    _state: tuple = ()
    _at: float = field(default=0.0)

    def counts(self) -> tuple[str, tuple[int, ...]]:
        """(the progress line, the number of runs finished, training, evaluating, not started).
        A run that trained every epoch it asks for and has not finished is being evaluated."""
        finished = [f for f in self.folders if (f / "finished.json").is_file()]
        started = [collect.job_status(f) for f in self.folders
                   if f not in finished and (f / "checkpoints" / "last.pt").is_file()]
        evaluating = [job for job in started if job["epochs"] is not None and job["epochs_done"] >= job["epochs"]]
        training = [job for job in started if job not in evaluating]
        text = f"[{self.stage}] {len(finished)}/{len(self.folders)} runs finished"
        if training:
            asked = [job["epochs"] for job in training]
            of = f" of {sum(asked)}" if None not in asked else ""
            text += f", {len(training)} training ({sum(job['epochs_done'] for job in training)}{of} epochs)"
        if evaluating:
            text += f", {len(evaluating)} evaluating"
        waiting = len(self.folders) - len(finished) - len(started)
        text += f", {waiting} not started" if waiting else ""
        return text, (len(finished), len(training), len(evaluating), waiting)

    def line(self) -> str:
        return self.counts()[0]

    def show(self, force: bool = False) -> None:
        """Print the line when a run changes state (starts, ends training, finishes), or every
        `every` seconds: an epoch done is not news enough for a line of its own."""
        text, state = self.counts()
        if force or state != self._state or time.monotonic() - self._at >= self.every:
            print(text, file=sys.stderr, flush=True)
            self._shown, self._state, self._at = text, state, time.monotonic()

    def unfinished(self, folders: list[Path]) -> list[Path]:
        return [f for f in folders if not (f / "finished.json").is_file()]

    def logs(self, folder: Path) -> list[Path]:
        """The logs that say what happened to the run in `folder`."""
        found = [folder / "train.log"] if (folder / "train.log").is_file() else []
        launcher = self.sweep / ".submitit"
        if launcher.is_dir():
            found += sorted(p for p in launcher.rglob("*_log.*") if folder.name in p.read_text(errors="replace"))
        return found

    def report_failures(self, folders: list[Path]) -> list[str]:
        """One line per run of a multirun that did not finish, with its logs; printed and returned."""
        lines = []
        for folder in self.unfinished(folders):
            logs = ", ".join(str(p) for p in self.logs(folder)) or "no log: the job did not start (see the launcher's output above)"
            lines.append(f"!! not finished: {folder} (logs: {logs})")
        for line in lines:
            print(line, file=sys.stderr, flush=True)
        return lines

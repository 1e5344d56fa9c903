"""What a user sees while a command runs: progress bars and the log, on the console and in the
run folder's `train.log` / `evaluate.log` (conf/hydra/job_logging/blf.yaml).

Bars: on a terminal, a live tqdm bar. Where stderr is a file or a pipe (SLURM logs, CI,
`| tee`), a bar that redraws itself would write one carriage-return fragment per update; there
the bar stays silent and the logged line per epoch and per (attack, eps) is the progress.

Log: everything the console shows (epoch lines, accuracy tables, worst case, integrity
verdicts, warnings, errors) goes through `logging`, so the run folder's log file holds it too.
Messages below WARNING go to stdout, the rest to stderr.
"""

from __future__ import annotations

import logging
import sys

from tqdm.auto import tqdm


def interactive() -> bool:
    return sys.stderr.isatty()


def bar(iterable=None, *, total: int | None = None, desc: str, unit: str, enabled: bool):
    """A tqdm bar over `iterable` (or updated by hand up to `total`), drawn only when `enabled`
    and stderr is a terminal."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not (enabled and interactive()), leave=False)


class Below(logging.Filter):
    """Passes records below `level` (the stdout handler takes INFO, stderr WARNING and above)."""

    def __init__(self, level: str | int = "WARNING"):
        super().__init__()
        self.level = logging.getLevelName(level) if isinstance(level, str) else level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


class NoFollowFileHandler(logging.FileHandler):
    """A run's log file (conf/hydra/job_logging/blf.yaml), appended to but never through a
    symbolic link: a link planted as `<run>/train.log` would have the log written elsewhere."""

    def _open(self):
        import os

        from blf.run import storage

        fd = storage.open_nofollow(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


def interrupted(kept: str) -> int:
    """Ctrl-C's answer from a command: one line saying what was kept; exit status 130 (128 + SIGINT)."""
    print(f"error: interrupted; {kept}", file=sys.stderr)
    return 130

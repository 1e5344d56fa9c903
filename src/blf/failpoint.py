"""Named points where a test kills the process, as a crash or an out-of-memory kill would.

`BLF_FAILPOINT=<name>:<n>` kills the process with SIGKILL the n-th time it reaches the point
`<name>` (tests/test_faults.py). `BLF_SLOW=<name>:<seconds>` sleeps there every time, so that a
test can preempt or requeue a job mid-training (tests/test_slurm.py). Unset, which is always the
case outside those tests, a point costs two comparisons.
"""

from __future__ import annotations

import os
import signal
import time

_TARGET = os.environ.get("BLF_FAILPOINT")
_SLOW = os.environ.get("BLF_SLOW")
_seen: dict[str, int] = {}


def reach(name: str) -> None:
    if _SLOW is not None and _SLOW.partition(":")[0] == name:
        time.sleep(float(_SLOW.partition(":")[2]))
    if _TARGET is None:
        return
    point, _, times = _TARGET.partition(":")
    if point != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] == int(times or 1):
        os.kill(os.getpid(), signal.SIGKILL)

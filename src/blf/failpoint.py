"""Named points where a test kills the process, as a crash or an out-of-memory kill would.

`BLF_FAILPOINT=<name>:<n>` kills the process with SIGKILL the n-th time it reaches the point
`<name>` (tests/test_faults.py). Unset, which is always the case outside those tests, a point
costs one comparison.
"""

from __future__ import annotations

import os
import signal

_TARGET = os.environ.get("BLF_FAILPOINT")
_seen: dict[str, int] = {}


def reach(name: str) -> None:
    if _TARGET is None:
        return
    point, _, times = _TARGET.partition(":")
    if point != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] == int(times or 1):
        os.kill(os.getpid(), signal.SIGKILL)

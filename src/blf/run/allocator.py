"""Keep freed memory in the process (glibc), so that tensors of a training or attack step
reuse it.

By default glibc serves allocations above ~128 KB with fresh mmap()s and returns them to the
kernel when freed, so every step of a CPU loop pays page faults and zero-filling for its
activations and gradients. Raising the mmap and trim thresholds keeps those pages in the heap.
Measured on a 2-core CPU: PGD-40 on 2C2F ~25% faster, and steadier. A no-op where glibc is
absent (macOS, musl) or the call fails.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Returns True when glibc accepted the settings. 32 MB is glibc's largest mmap threshold."""
    global _done
    if _done:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    except (OSError, AttributeError):
        return False
    _done = ok
    return ok

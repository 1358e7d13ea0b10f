"""Process-level CPU runtime settings that make the model fast on large systems.

glibc's malloc hands every freed block above its mmap threshold (at most 32 MB by default)
back to the kernel, so each energy+forces call of a large system maps fresh pages for its
[edges, 3, F] temporaries and the kernel zeroes them again: on the 768-atom water box this
page-fault work made a call 2.3x slower (5.0 s against 2.2 s, system time 13 s against 3 s over
four calls; measured with ``benchmarks/speed.py``'s water boxes on a 2-core AMD EPYC). Raising
the mmap and trim thresholds to 1 GiB keeps freed memory in the process for reuse.

The setting is process-wide and applied once, on Linux with glibc only. Set the environment
variable ``FORCEFIELD_ET_KEEP_MALLOC=1`` to leave malloc as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

M_TRIM_THRESHOLD = -1  # glibc mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 1 << 30

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to 1 GiB (once per process). Returns whether the
    setting is in effect; a no-op returning False off glibc or when opted out."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("FORCEFIELD_ET_KEEP_MALLOC") == "1" or platform.system() != "Linux":
        return False
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok_mmap = libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES) == 1
        ok_trim = libc.mallopt(M_TRIM_THRESHOLD, THRESHOLD_BYTES) == 1
    except (OSError, AttributeError):
        return False
    _applied = ok_mmap and ok_trim
    return _applied


__all__ = ["keep_freed_memory"]

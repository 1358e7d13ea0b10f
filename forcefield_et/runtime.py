"""Process-level CPU runtime concerns: malloc settings that keep large systems fast, and the
memory check that turns a structure too large for RAM into a clear error instead of a kill by
the kernel's out-of-memory killer.

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
import functools
import os
import platform

M_TRIM_THRESHOLD = -1  # glibc mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 1 << 30

_applied: bool | None = None


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


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
        libc = _libc()
        ok_mmap = libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES) == 1
        ok_trim = libc.mallopt(M_TRIM_THRESHOLD, THRESHOLD_BYTES) == 1
    except (OSError, AttributeError):
        return False
    _applied = ok_mmap and ok_trim
    return _applied


# Peak memory of one energy+forces call per edge, per layer and per feature channel, in units of
# the dtype's size: the autograd graph keeps about 21 such values (5.2 GB measured for 80k edges
# of the default float32 model on 1,536 water atoms, benchmarks/speed.py); 24 leaves a margin.
VALUES_PER_EDGE_LAYER_CHANNEL = 24
MEMORY_FRACTION = 0.8  # refuse when the estimate exceeds this share of the available memory


def estimate_call_memory_bytes(n_edges: int, num_layers: int, hidden_channels: int, itemsize: int) -> int:
    """Estimated peak bytes of one energy+forces evaluation with ``n_edges`` directed edges."""
    return int(n_edges) * int(num_layers) * int(hidden_channels) * int(itemsize) * VALUES_PER_EDGE_LAYER_CHANNEL


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")
    ]


def malloc_free_bytes() -> int:
    """Bytes that glibc's malloc holds free for reuse in this process (0 where unknown). With
    :func:`keep_freed_memory` in effect, this is memory a new call can use without the kernel."""
    try:
        mallinfo2 = _libc().mallinfo2  # glibc >= 2.33
    except (OSError, AttributeError):
        return 0
    mallinfo2.restype = _MallInfo2
    return int(mallinfo2().fordblks)


def available_memory_bytes() -> int | None:
    """Memory a new evaluation can use: MemAvailable from /proc/meminfo (Linux) plus what this
    process's malloc holds free; None where /proc/meminfo cannot be read."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 + malloc_free_bytes()
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(n_atoms: int, n_edges: int, num_layers: int, hidden_channels: int, itemsize: int) -> None:
    """Raise MemoryError, with the numbers, when an evaluation would not fit in the available RAM."""
    needed = estimate_call_memory_bytes(n_edges, num_layers, hidden_channels, itemsize)
    available = available_memory_bytes()
    if available is not None and needed > MEMORY_FRACTION * available:
        raise MemoryError(
            f"{n_atoms} atoms with {n_edges} neighbour pairs need about {needed / 2**30:.1f} GiB for one "
            f"energy+forces call, but only {available / 2**30:.1f} GiB of memory is available; use a smaller "
            "system or a GPU with enough memory" + (", or float32 instead of float64" if itemsize > 4 else "")
        )


__all__ = [
    "available_memory_bytes",
    "check_memory",
    "estimate_call_memory_bytes",
    "keep_freed_memory",
    "malloc_free_bytes",
]

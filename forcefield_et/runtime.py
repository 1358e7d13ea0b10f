"""Process-level CPU runtime concerns: malloc settings that keep large systems fast, and the
memory check that turns a structure too large for RAM into a clear error instead of a kill by
the kernel's out-of-memory killer.

glibc's malloc hands every freed block above its mmap threshold (at most 32 MB by default)
back to the kernel, so each energy+forces call of a large system maps fresh pages for its
[edges, 3, F] temporaries and the kernel zeroes them again: on the 768-atom water box this
page-fault work made a call 2.3x slower (5.0 s against 2.2 s, system time 13 s against 3 s over
four calls; measured with ``benchmarks/speed.py``'s water boxes on a 2-core AMD EPYC). Raising
the mmap and trim thresholds to 1 GiB keeps freed memory in the process for reuse.

The setting is process-wide and applied once, on Linux with glibc only, and only on request: no
constructor applies it. Applications opt in by calling :func:`keep_freed_memory` (the
``forcefield-et`` commands and the benchmarks do; ``ETCalculator(tune_allocator=True)`` and
``Evaluator(tune_allocator=True)`` call it). Set the environment variable
``FORCEFIELD_ET_KEEP_MALLOC=1`` to leave malloc as it is even then.

:func:`plan_memory` picks the evaluation path of a large structure: all edges at once when the
estimate fits, else the edge-chunked strategy (:mod:`forcefield_et.model.chunked`), whose memory
grows with atoms and edges far more slowly, else a clear MemoryError. The inference engine
(:class:`forcefield_et.inference.Evaluator`) applies these plans to every call.

:func:`choose_threads` and :func:`apply_threads` are the one rule for torch's CPU thread count
that every entry point (CLI, ``ETCalculator``, the OpenMM forces, evaluation, the trainer)
follows; see docs/performance.md.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import os
import platform
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Sequence, Tuple

if TYPE_CHECKING:
    import torch

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


# Compiling the model (``ETCalculator(compile=True)``) costs about half a minute once and saves a
# quarter or more of every later step on CPU: worth it from this many MD steps on.
COMPILE_MIN_STEPS = 20_000


def compile_pays_off(steps: int) -> bool:
    """Whether an MD run of ``steps`` steps should compile its model (the default of ``forcefield-et md``
    and of the MD benchmarks)."""
    return steps >= COMPILE_MIN_STEPS


# Peak memory of one energy+forces call per edge, per layer and per feature channel, in units of
# the dtype's size. The autograd graph keeps about 21 such values, but the peak resident memory of
# a first call in a fresh process is higher: 7.2 GiB for 80,016 edges (1,536 water atoms) and
# 14.5 GiB for 160,074 edges (3,072 atoms) of the default float32 model, i.e. 31.7 values
# (benchmarks/large_systems.py); 34 leaves a margin.
VALUES_PER_EDGE_LAYER_CHANNEL = 34
MEMORY_FRACTION = 0.8  # refuse when the estimate exceeds this share of the available memory


def estimate_call_memory_bytes(n_edges: int, num_layers: int, hidden_channels: int, itemsize: int) -> int:
    """Estimated peak bytes of one energy+forces evaluation with ``n_edges`` directed edges."""
    return int(n_edges) * int(num_layers) * int(hidden_channels) * int(itemsize) * VALUES_PER_EDGE_LAYER_CHANNEL


# Edge-chunked path (Potential.set_edge_chunking), in units of the dtype's size. Kept for the backward
# pass: per layer about 26 node values per atom and channel (layer input, q/k/v, vector features and
# their three projections, aggregated messages) plus 40 for one layer's node-level gradients; the edge
# geometry (rbf [E, R] and its graph, unit vectors, cutoff weights, edge vectors and their gradients),
# about 10 values per edge and radial function plus 40 per edge; one chunk's messages recomputed with
# their gradients, 64 values per chunk edge and channel. Integer neighbour lists (edge_index and the
# neighbour-list library's arrays) add about 64 bytes per edge. Measured (default float32 model,
# chunks of 8192 edges, water boxes of 192-1,536 atoms, benchmarks/speed.py's box tiled): the peak
# RSS of a first call is 1.3-1.7x this estimate, from heap fragmentation; CHUNKED_SAFETY_FACTOR covers it.
DEFAULT_EDGE_CHUNK_SIZE = 8192
NODE_VALUES_PER_LAYER_CHANNEL = 26
NODE_VALUES_PER_CHANNEL = 40
GEOMETRY_VALUES_PER_EDGE_RBF = 10
GEOMETRY_VALUES_PER_EDGE = 40
CHUNK_VALUES_PER_EDGE_CHANNEL = 64
INDEX_BYTES_PER_EDGE = 64
CHUNKED_SAFETY_FACTOR = 6  # the chunked estimate must fit this many times: heap fragmentation, estimate error


def estimate_chunked_call_memory_bytes(
    n_atoms: int,
    n_edges: int,
    num_layers: int,
    hidden_channels: int,
    itemsize: int,
    num_rbf: int = 32,
    edge_chunk_size: int = DEFAULT_EDGE_CHUNK_SIZE,
) -> int:
    """Estimated peak bytes of one energy+forces evaluation in the edge-chunked mode (without the
    safety factor): node features kept per layer + edge geometry + one chunk's messages."""
    n_atoms, n_edges, layers, channels = int(n_atoms), int(n_edges), int(num_layers), int(hidden_channels)
    chunk = min(int(edge_chunk_size), n_edges)
    values = (
        n_atoms * channels * (NODE_VALUES_PER_LAYER_CHANNEL * layers + NODE_VALUES_PER_CHANNEL)
        + n_edges * (GEOMETRY_VALUES_PER_EDGE_RBF * int(num_rbf) + GEOMETRY_VALUES_PER_EDGE)
        + chunk * channels * CHUNK_VALUES_PER_EDGE_CHANNEL
    )
    return values * int(itemsize) + n_edges * INDEX_BYTES_PER_EDGE


@dataclass(frozen=True)
class MemoryPlan:
    """How one energy+forces call will run: ``path`` is ``"all_edges"`` or ``"chunked"``;
    ``edge_chunk_size`` is the chunk size of the chunked path (None for all edges);
    ``estimated_bytes`` the estimate of the chosen path (before any safety factor);
    ``available_bytes`` the memory found available (None where unknown)."""

    path: str
    edge_chunk_size: int | None
    estimated_bytes: int
    available_bytes: int | None


PATHS = ("all_edges", "chunked")


def plan_memory(
    n_atoms: int,
    n_edges: int,
    num_layers: int,
    hidden_channels: int,
    itemsize: int,
    num_rbf: int = 32,
    edge_chunk_size: int = DEFAULT_EDGE_CHUNK_SIZE,
    paths: Sequence[str] = PATHS,
) -> MemoryPlan:
    """Pick the first of ``paths`` that fits in the available memory: ``"all_edges"`` when its
    estimate is at most ``MEMORY_FRACTION`` of it, ``"chunked"`` when ``CHUNKED_SAFETY_FACTOR`` times
    the chunked estimate is. Raises MemoryError, with the numbers, when none fits. Where the
    available memory is unknown, the first path is taken."""
    unknown = [path for path in paths if path not in PATHS]
    if not paths or unknown:
        raise ValueError(f"plan_memory: paths must be a non-empty selection of {PATHS}, got {list(paths)}")
    full = estimate_call_memory_bytes(n_edges, num_layers, hidden_channels, itemsize)
    chunked = estimate_chunked_call_memory_bytes(
        n_atoms, n_edges, num_layers, hidden_channels, itemsize, num_rbf, edge_chunk_size
    )
    available = available_memory_bytes()
    for path in paths:
        needed = full if path == "all_edges" else CHUNKED_SAFETY_FACTOR * chunked
        if available is None or needed <= MEMORY_FRACTION * available:
            chunk = int(edge_chunk_size) if path == "chunked" else None
            return MemoryPlan(path, chunk, full if path == "all_edges" else chunked, available)
    assert available is not None
    chunked_note = (
        f" (about {chunked / 2**30:.1f} GiB in the edge-chunked mode, which is used only when "
        f"{CHUNKED_SAFETY_FACTOR}x that fits)"
    )
    hint = "" if "chunked" in paths else f"; edge chunking would need about {chunked / 2**30:.1f} GiB"
    raise MemoryError(
        f"{n_atoms} atoms with {n_edges} neighbour pairs need about {full / 2**30:.1f} GiB for one "
        f"energy+forces call{chunked_note if 'chunked' in paths else ''}, but only {available / 2**30:.1f} GiB "
        f"of memory is available{hint}; use a smaller system or a GPU with enough memory"
        + (", or float32 instead of float64" if itemsize > 4 else "")
    )


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


PROC_MEMINFO = "/proc/meminfo"
PROC_SELF_CGROUP = "/proc/self/cgroup"
CGROUP_ROOT = "/sys/fs/cgroup"
CGROUP_UNLIMITED = 2**60  # cgroup v1 reports "no limit" as a page-rounded 2**63 - 1
# (limit file, usage file, reclaimable page-cache entry of memory.stat, folder under CGROUP_ROOT)
_CGROUP_FILES = {
    "v2": ("memory.max", "memory.current", "inactive_file", ""),
    "v1": ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file", "memory"),
}


def _read_text(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def _own_cgroups() -> dict:
    """This process's cgroup paths from /proc/self/cgroup: {"v2": "/...", "v1": "/..."} (memory controller)."""
    found = {}
    for line in (_read_text(PROC_SELF_CGROUP) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            found["v2"] = path
        elif "memory" in controllers.split(","):
            found["v1"] = path
    return found


def cgroup_available_bytes() -> int | None:
    """Memory left under this process's cgroup memory limits: the smallest ``limit - (usage -
    inactive page cache)`` over its cgroup and the cgroups above it (v2: ``memory.max`` and
    ``memory.current``; v1: ``memory.limit_in_bytes`` and ``memory.usage_in_bytes``). None where
    no limit is set ("max", or v1's near-2**63 value) or no cgroup files are readable."""
    own = _own_cgroups()
    left = []
    for version, (limit_name, usage_name, inactive_key, folder) in _CGROUP_FILES.items():
        parts = [p for p in own.get(version, "/").split("/") if p]
        for depth in range(len(parts), -1, -1):  # own cgroup first, then each one above it
            directory = os.path.join(CGROUP_ROOT, folder, *parts[:depth])
            limit_text = _read_text(os.path.join(directory, limit_name))
            usage_text = _read_text(os.path.join(directory, usage_name))
            if limit_text is None or usage_text is None or limit_text == "max":
                continue
            try:
                limit, usage = int(limit_text), int(usage_text)
            except ValueError:
                continue
            if limit >= CGROUP_UNLIMITED:
                continue
            inactive = 0
            for line in (_read_text(os.path.join(directory, "memory.stat")) or "").splitlines():
                key, _, value = line.partition(" ")
                if key == inactive_key and value.strip().isdigit():
                    inactive = int(value)
            left.append(max(limit - max(usage - inactive, 0), 0))
    return min(left) if left else None


def available_memory_bytes() -> int | None:
    """Memory a new evaluation can use: the smaller of MemAvailable from /proc/meminfo (Linux) and
    what this process's cgroup limits leave (:func:`cgroup_available_bytes`, e.g. in a container
    or a batch job), plus what this process's malloc holds free; None where neither is known."""
    known = []
    for line in (_read_text(PROC_MEMINFO) or "").splitlines():
        if line.startswith("MemAvailable:"):
            try:
                known.append(int(line.split()[1]) * 1024)
            except (ValueError, IndexError):
                pass
    cgroup = cgroup_available_bytes()
    if cgroup is not None:
        known.append(cgroup)
    return min(known) + malloc_free_bytes() if known else None


def plan_batches(
    edge_counts: Sequence[int],
    batch_size: int,
    num_layers: int,
    hidden_channels: int,
    itemsize: int,
    check_memory: bool = True,
) -> List[Tuple[int, int]]:
    """Consecutive frame ranges ``(start, stop)`` for batched energy+forces evaluation of frames with
    ``edge_counts`` [F] directed edges each: at most ``batch_size`` frames per range and, where the
    available memory is known, an all-edges estimate (:func:`estimate_call_memory_bytes`) within
    ``MEMORY_FRACTION`` of it. Raises MemoryError, naming the frame, when one frame alone does not fit.
    ``check_memory=False`` (e.g. for a GPU, whose memory this does not see) limits the frame count only."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    available = available_memory_bytes() if check_memory else None
    budget = None if available is None else MEMORY_FRACTION * available
    per_edge = estimate_call_memory_bytes(1, num_layers, hidden_channels, itemsize)
    ranges: List[Tuple[int, int]] = []
    start, edges = 0, 0
    for frame, count in enumerate(int(c) for c in edge_counts):
        if budget is not None and count * per_edge > budget:
            raise MemoryError(
                f"frame {frame} has {count} neighbour pairs and needs about {count * per_edge / 2**30:.1f} GiB for one "
                f"energy+forces call, but only {available / 2**30:.1f} GiB of memory is available"
                + ("; use float32 instead of float64" if itemsize > 4 else "")
            )
        full = frame - start >= batch_size or (budget is not None and (edges + count) * per_edge > budget)
        if full and frame > start:
            ranges.append((start, frame))
            start, edges = frame, 0
        edges += count
    if len(edge_counts) > start:
        ranges.append((start, len(edge_counts)))
    return ranges


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


# ----------------------------------------------------------------------------- torch threads
THREADS_ENV = "FORCEFIELD_ET_THREADS"
# Automatic rule: one thread per this many directed neighbour pairs (edges) of one call. Below it
# (a molecule of up to ~100 atoms) a second thread only adds wake-up latency.
EDGES_PER_THREAD = 5000
EDGES_PER_ATOM = 50  # typical directed edges per atom at a 5 Å cutoff (organic molecules, water)

_torch_threads_at_import: int | None = None
_threads_set_here: int | None = None
_user_set_threads = False  # the user has called torch.set_num_threads since the import


def _record_torch_threads() -> None:
    """Remember torch's thread count when forcefield_et is first imported (torch's default, or
    what the user set before)."""
    global _torch_threads_at_import
    if _torch_threads_at_import is None:
        import torch

        _torch_threads_at_import = torch.get_num_threads()


def cgroup_cpu_limit(root: str = "/sys/fs/cgroup") -> float | None:
    """CPUs allowed by the cgroup CPU quota under ``root`` (v2 ``cpu.max``, v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``); None: no quota or no cgroup files."""
    candidates = (
        (f"{root}/cpu.max", None),
        (f"{root}/cpu/cpu.cfs_quota_us", f"{root}/cpu/cpu.cfs_period_us"),
        (f"{root}/cpu,cpuacct/cpu.cfs_quota_us", f"{root}/cpu,cpuacct/cpu.cfs_period_us"),
    )
    for quota_path, period_path in candidates:
        try:
            with open(quota_path) as handle:
                fields = handle.read().split()
            if period_path is not None:
                with open(period_path) as handle:
                    fields = fields[:1] + handle.read().split()[:1]
            if len(fields) < 2 or fields[0] in ("max", "-1"):
                return None
            quota, period = float(fields[0]), float(fields[1])
        except (OSError, ValueError):
            continue
        if quota > 0 and period > 0:
            return quota / period
    return None


CPU_LIMIT_REREAD_S = 10.0  # available_cpus() reads the affinity and the cgroup files at most this often
_available_cpus_read: Tuple[float, int] | None = None  # (time.monotonic() of the read, cores)


def available_cpus(fresh: bool = False) -> int:
    """CPU cores this process may use: its CPU affinity (``os.sched_getaffinity``), capped by a
    cgroup CPU quota (containers, ``docker --cpus``) rounded up; at least 1. Every energy call
    asks, so the answer is read again only after ``CPU_LIMIT_REREAD_S`` seconds (or when ``fresh``)."""
    global _available_cpus_read
    now = time.monotonic()
    if not fresh and _available_cpus_read is not None and now - _available_cpus_read[0] < CPU_LIMIT_REREAD_S:
        return _available_cpus_read[1]
    cpus = _read_available_cpus()
    _available_cpus_read = (now, cpus)
    return cpus


def _read_available_cpus() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def _positive_int(text: str | None, where: str) -> int | None:
    if text is None or not str(text).strip():
        return None
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ValueError(f"{where} must be a positive integer number of threads, got {text!r}") from None
    if value < 1:
        raise ValueError(f"{where} must be a positive integer number of threads, got {text!r}")
    return value


def omp_thread_limit() -> int | None:
    """The thread count ``OMP_NUM_THREADS`` sets (its first entry), or None when it is unset or
    not a positive integer."""
    try:
        return _positive_int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0], "OMP_NUM_THREADS")
    except ValueError:
        return None


def user_thread_setting() -> int | None:
    """torch's thread count when the user has set it with ``torch.set_num_threads`` since
    forcefield_et was imported (it differs from the count forcefield_et last set, or from the
    count at import when forcefield_et has set none); None otherwise. Once the user has set it,
    the automatic rule leaves it alone for the rest of the process."""
    global _user_set_threads
    import torch

    current = torch.get_num_threads()
    if not _user_set_threads:
        reference = _threads_set_here if _threads_set_here is not None else _torch_threads_at_import
        _user_set_threads = reference is not None and current != reference
    return current if _user_set_threads else None


def choose_threads(
    n_atoms: int,
    n_edges: int | None = None,
    requested: int | None = None,
    cpus: int | None = None,
    cap: int | None = None,
) -> int:
    """Torch CPU thread count for energy+forces calls of ``n_atoms`` atoms (``n_edges`` directed
    neighbour pairs where known, else about ``EDGES_PER_ATOM`` per atom).

    ``requested`` (a positive int) wins; else the environment variable ``FORCEFIELD_ET_THREADS``;
    else one thread per ``EDGES_PER_THREAD`` edges, at least 1, at most ``cpus`` (default:
    :func:`available_cpus`) and at most ``cap`` (default: ``OMP_NUM_THREADS`` and the count torch
    had when forcefield_et was imported, so that the rule never raises a count the user chose)."""
    if requested is not None and requested != 0:
        return _positive_int(str(requested), "threads")  # type: ignore[return-value]
    from_env = _positive_int(os.environ.get(THREADS_ENV), THREADS_ENV)
    if from_env is not None:
        return from_env
    edges = int(n_edges) if n_edges is not None else int(n_atoms) * EDGES_PER_ATOM
    threads = max(1, edges // EDGES_PER_THREAD)
    threads = min(threads, cpus if cpus is not None else available_cpus())
    if cap is None:
        limits = [value for value in (omp_thread_limit(), _torch_threads_at_import) if value is not None]
        cap = min(limits) if limits else None
    if cap is not None:
        threads = min(threads, cap)
    return max(1, threads)


def apply_threads(
    n_atoms: int, n_edges: int | None = None, requested: int | None = None, cpus: int | None = None
) -> int:
    """Set torch's intra-op thread count by :func:`choose_threads` and return the count in effect.
    The setting is process-wide. Without ``requested`` or ``FORCEFIELD_ET_THREADS``, a count the
    user set with ``torch.set_num_threads`` (:func:`user_thread_setting`) is kept as it is."""
    global _threads_set_here
    import torch

    if not requested and not os.environ.get(THREADS_ENV, "").strip():
        user = user_thread_setting()
        if user is not None:
            return user
    threads = choose_threads(n_atoms, n_edges, requested, cpus=cpus)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    _threads_set_here = threads
    return threads


def resolve_device(device: str | torch.device = "auto", local_rank: int | None = None) -> torch.device:
    """``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (or a
    torch.device) -> torch.device. With ``local_rank`` (a ``torchrun`` worker), plain ``"cuda"`` and
    ``"auto"`` on a GPU machine become ``cuda:<local_rank>``. Raises ValueError for another device
    or a GPU that is not there."""
    import torch

    text = str(device).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(text)
    except RuntimeError:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}") from None
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available; use 'cpu' or 'auto'")
        if resolved.index is None and local_rank is not None:
            resolved = torch.device("cuda", int(local_rank))
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"device {resolved} requested but this machine has {count} CUDA device(s)")
    return resolved


def passive_wait_policy() -> bool:
    """Whether OpenMP's idle threads sleep (``OMP_WAIT_POLICY=PASSIVE``) in this process's
    environment; forcefield_et sets it when it is imported before torch."""
    return os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"


__all__ = [
    "DEFAULT_EDGE_CHUNK_SIZE",
    "THREADS_ENV",
    "apply_threads",
    "available_cpus",
    "choose_threads",
    "resolve_device",
    "omp_thread_limit",
    "user_thread_setting",
    "MemoryPlan",
    "available_memory_bytes",
    "cgroup_available_bytes",
    "cgroup_cpu_limit",
    "check_memory",
    "estimate_call_memory_bytes",
    "estimate_chunked_call_memory_bytes",
    "keep_freed_memory",
    "malloc_free_bytes",
    "plan_batches",
    "plan_memory",
]

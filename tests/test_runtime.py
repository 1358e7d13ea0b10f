"""forcefield_et.runtime: the glibc malloc thresholds that keep large-system calls fast."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

CHECK = """
from forcefield_et.runtime import keep_freed_memory
first = keep_freed_memory()
second = keep_freed_memory()
print(first, second)
"""


def _run(env_extra):
    env = {**os.environ, **env_extra}
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is a glibc function")
def test_applied_once_on_glibc():
    assert _run({}) == ["True", "True"]


def test_opt_out_leaves_malloc_alone():
    assert _run({"FORCEFIELD_ET_KEEP_MALLOC": "1"}) == ["False", "False"]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is a glibc function")
def test_the_calculator_applies_it_on_cpu(small_model):
    from forcefield_et import ETCalculator, runtime

    ETCalculator(small_model, device="cpu")
    assert runtime._applied is True


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallinfo2 is a glibc function")
def test_available_memory_counts_what_malloc_keeps_for_reuse():
    from forcefield_et.runtime import available_memory_bytes, keep_freed_memory, malloc_free_bytes

    keep_freed_memory()
    blocks = [bytearray(50 * 2**20) for _ in range(4)]  # 200 MiB from the heap, then freed
    del blocks
    assert malloc_free_bytes() >= 150 * 2**20
    assert available_memory_bytes() >= malloc_free_bytes()


# ----------------------------------------------------------------------------- memory plan
WATER_10K = {"n_atoms": 10_368, "n_edges": 540_000, "num_layers": 6, "hidden_channels": 128, "itemsize": 4}


def _plan_with(monkeypatch, available, **kwargs):
    from forcefield_et import runtime

    monkeypatch.setattr(runtime, "available_memory_bytes", lambda: available)
    return runtime.plan_memory(**{**WATER_10K, **kwargs})


def _thresholds():
    """(available memory above which all edges fit, above which the chunked path fits)."""
    from forcefield_et import runtime

    full = runtime.estimate_call_memory_bytes(WATER_10K["n_edges"], 6, 128, 4)
    chunked = runtime.estimate_chunked_call_memory_bytes(**WATER_10K)
    return full / runtime.MEMORY_FRACTION, runtime.CHUNKED_SAFETY_FACTOR * chunked / runtime.MEMORY_FRACTION


def test_plan_picks_all_edges_then_chunked_then_refuses(monkeypatch):
    from forcefield_et import runtime

    all_edges, chunked = _thresholds()
    assert chunked < all_edges / 3  # the point of the mode: ~19x less at 10k water atoms, ~3x with the margin
    plan = _plan_with(monkeypatch, int(1.01 * all_edges))
    assert (plan.path, plan.edge_chunk_size) == ("all_edges", None)
    assert plan.estimated_bytes == runtime.estimate_call_memory_bytes(540_000, 6, 128, 4)
    plan = _plan_with(monkeypatch, int(0.99 * all_edges))
    assert (plan.path, plan.edge_chunk_size) == ("chunked", runtime.DEFAULT_EDGE_CHUNK_SIZE)
    assert plan.estimated_bytes == runtime.estimate_chunked_call_memory_bytes(**WATER_10K)
    assert _plan_with(monkeypatch, int(1.01 * chunked)).path == "chunked"
    with pytest.raises(MemoryError, match=r"10368 atoms with 540000 neighbour pairs need about .* edge-chunked mode"):
        _plan_with(monkeypatch, int(0.99 * chunked))
    with pytest.raises(MemoryError, match="or float32 instead of float64"):
        _plan_with(monkeypatch, int(0.99 * chunked), itemsize=8)


def test_plan_respects_the_allowed_paths_and_unknown_memory(monkeypatch):
    all_edges, chunked = _thresholds()
    with pytest.raises(MemoryError, match="edge chunking would need about"):
        _plan_with(monkeypatch, int(0.99 * all_edges), paths=("all_edges",))
    assert _plan_with(monkeypatch, int(10 * all_edges), paths=("chunked",)).path == "chunked"
    assert _plan_with(monkeypatch, None).path == "all_edges"
    assert _plan_with(monkeypatch, None, paths=("chunked",), edge_chunk_size=1000).edge_chunk_size == 1000
    with pytest.raises(ValueError, match="paths"):
        _plan_with(monkeypatch, None, paths=("everything",))


def test_chunked_estimate_fits_10k_water_atoms_on_a_24_gib_machine():
    """The target case: the default float32 model on 10k water atoms, with the 6x margin, in 80 %
    of the ~20 GiB a 24 GiB machine has available (all edges would need ~37 GiB)."""
    from forcefield_et import runtime

    chunked = runtime.estimate_chunked_call_memory_bytes(**WATER_10K)
    assert runtime.CHUNKED_SAFETY_FACTOR * chunked <= runtime.MEMORY_FRACTION * 20 * 2**30
    assert runtime.estimate_call_memory_bytes(540_000, 6, 128, 4) > 30 * 2**30
    # It grows with the chunk size, the atoms and the edges.
    base = runtime.estimate_chunked_call_memory_bytes(**WATER_10K)
    assert runtime.estimate_chunked_call_memory_bytes(**WATER_10K, edge_chunk_size=16384) > base
    assert runtime.estimate_chunked_call_memory_bytes(**{**WATER_10K, "n_atoms": 20_000}) > base
    assert runtime.estimate_chunked_call_memory_bytes(**{**WATER_10K, "n_edges": 1_000_000}) > base

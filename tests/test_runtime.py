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
def test_the_calculator_applies_it_on_cpu_when_asked(small_model):
    from forcefield_et import ETCalculator, runtime

    ETCalculator(small_model, device="cpu", tune_allocator=True)
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


# ----------------------------------------------------------------------------- cgroup limits
def _fake_system(monkeypatch, tmp_path, files, self_cgroup="0::/\n", meminfo_kib=64 * 2**20):
    """A fake /proc/meminfo, /proc/self/cgroup and /sys/fs/cgroup tree under tmp_path."""
    from forcefield_et import runtime

    for relative, text in files.items():
        path = tmp_path / "cgroup" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "meminfo").write_text(f"MemTotal: {2 * meminfo_kib} kB\nMemAvailable: {meminfo_kib} kB\n")
    (tmp_path / "self_cgroup").write_text(self_cgroup)
    monkeypatch.setattr(runtime, "CGROUP_ROOT", str(tmp_path / "cgroup"))
    monkeypatch.setattr(runtime, "PROC_SELF_CGROUP", str(tmp_path / "self_cgroup"))
    monkeypatch.setattr(runtime, "PROC_MEMINFO", str(tmp_path / "meminfo"))
    monkeypatch.setattr(runtime, "malloc_free_bytes", lambda: 0)
    return runtime


GIB = 2**30


def test_cgroup_v2_limit_minus_usage_less_inactive_page_cache(monkeypatch, tmp_path):
    runtime = _fake_system(monkeypatch, tmp_path, {
        "memory.max": f"{4 * GIB}\n", "memory.current": f"{3 * GIB}\n",
        "memory.stat": f"anon {2 * GIB}\ninactive_file {GIB // 2}\nactive_file 4096\n",
    })
    assert runtime.cgroup_available_bytes() == 4 * GIB - (3 * GIB - GIB // 2)
    assert runtime.available_memory_bytes() == 4 * GIB - (3 * GIB - GIB // 2)  # smaller than the 64 GiB of meminfo


def test_cgroup_v2_max_means_no_limit(monkeypatch, tmp_path):
    runtime = _fake_system(monkeypatch, tmp_path, {"memory.max": "max\n", "memory.current": f"{GIB}\n"})
    assert runtime.cgroup_available_bytes() is None
    assert runtime.available_memory_bytes() == 64 * GIB  # /proc/meminfo alone


def test_cgroup_v2_nested_group_and_its_parent(monkeypatch, tmp_path):
    runtime = _fake_system(monkeypatch, tmp_path, {
        "job/memory.max": "max\n", "job/memory.current": f"{GIB}\n",
        "job/task/memory.max": f"{8 * GIB}\n", "job/task/memory.current": f"{GIB}\n",
        "memory.max": f"{3 * GIB}\n", "memory.current": f"{2 * GIB}\n",
    }, self_cgroup="0::/job/task\n")
    assert runtime.cgroup_available_bytes() == GIB  # the root group's limit is the tightest


def test_cgroup_v1_limit_and_its_unlimited_value(monkeypatch, tmp_path):
    runtime = _fake_system(monkeypatch, tmp_path, {
        "memory/memory.limit_in_bytes": f"{2 * GIB}\n", "memory/memory.usage_in_bytes": f"{GIB}\n",
        "memory/memory.stat": f"inactive_file 1\ntotal_inactive_file {GIB // 4}\n",
    }, self_cgroup="4:memory:/\n0::/\n")
    assert runtime.cgroup_available_bytes() == 2 * GIB - (GIB - GIB // 4)
    runtime = _fake_system(monkeypatch, tmp_path, {
        "memory/memory.limit_in_bytes": "9223372036854771712\n", "memory/memory.usage_in_bytes": f"{GIB}\n",
    })
    assert runtime.cgroup_available_bytes() is None


def test_cgroup_usage_above_the_limit_leaves_nothing_and_garbage_is_ignored(monkeypatch, tmp_path):
    runtime = _fake_system(monkeypatch, tmp_path, {"memory.max": f"{GIB}\n", "memory.current": f"{2 * GIB}\n"})
    assert runtime.cgroup_available_bytes() == 0
    runtime = _fake_system(monkeypatch, tmp_path, {"memory.max": "lots\n", "memory.current": "x\n"})
    assert runtime.cgroup_available_bytes() is None


def test_no_meminfo_and_no_cgroup_is_unknown(monkeypatch, tmp_path):
    runtime = _fake_system(monkeypatch, tmp_path, {})
    monkeypatch.setattr(runtime, "PROC_MEMINFO", str(tmp_path / "absent"))
    assert runtime.available_memory_bytes() is None


# ----------------------------------------------------------------------------- batches
def test_batches_respect_the_frame_count_and_the_memory(monkeypatch):
    from forcefield_et import runtime

    per_edge = runtime.estimate_call_memory_bytes(1, 2, 32, 8)
    monkeypatch.setattr(runtime, "available_memory_bytes", lambda: None)
    assert runtime.plan_batches([10] * 7, 3, 2, 32, 8) == [(0, 3), (3, 6), (6, 7)]
    assert runtime.plan_batches([], 3, 2, 32, 8) == []
    # room for 25 edges: frames of 10 edges go two at a time, a frame of 20 alone
    monkeypatch.setattr(runtime, "available_memory_bytes", lambda: 25 * per_edge / runtime.MEMORY_FRACTION)
    assert runtime.plan_batches([10, 10, 10, 20, 10], 8, 2, 32, 8) == [(0, 2), (2, 3), (3, 4), (4, 5)]
    with pytest.raises(MemoryError, match="frame 1 has 30 neighbour pairs"):
        runtime.plan_batches([10, 30], 8, 2, 32, 8)
    assert runtime.plan_batches([10, 30], 8, 2, 32, 8, check_memory=False) == [(0, 2)]
    with pytest.raises(ValueError, match="batch_size"):
        runtime.plan_batches([10], 0, 2, 32, 8)


# ----------------------------------------------------------------------------- torch threads
def test_rule_gives_one_thread_to_a_small_molecule_and_more_to_a_large_system(monkeypatch):
    from forcefield_et.runtime import THREADS_ENV, choose_threads

    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert choose_threads(21, cpus=8, cap=8) == 1
    assert choose_threads(1000, cpus=8, cap=8) == 8  # 50,000 edges estimated: 10 threads, 8 cores
    assert choose_threads(1000, cpus=2, cap=8) == 2  # never more than the cores available
    assert choose_threads(1000, n_edges=12_000, cpus=8, cap=8) == 2  # edges, where known, decide
    assert choose_threads(1000, cpus=8, cap=1) == 1  # never more than the user's setting


def test_explicit_threads_and_the_environment_override_the_rule(monkeypatch):
    from forcefield_et.runtime import THREADS_ENV, choose_threads

    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert choose_threads(21, requested=3, cpus=2, cap=1) == 3
    monkeypatch.setenv(THREADS_ENV, "2")
    assert choose_threads(21, cpus=8, cap=1) == 2
    assert choose_threads(21, requested=1, cpus=8, cap=8) == 1  # the argument wins over the variable
    monkeypatch.setenv(THREADS_ENV, "many")
    with pytest.raises(ValueError, match="FORCEFIELD_ET_THREADS must be a positive integer"):
        choose_threads(21)
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        choose_threads(21, requested=-2)


def test_available_cpus_follows_affinity_and_cgroup_quota(monkeypatch, tmp_path):
    from forcefield_et import runtime

    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert runtime.cgroup_cpu_limit(str(tmp_path)) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert runtime.cgroup_cpu_limit(str(tmp_path)) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert runtime.cgroup_cpu_limit(str(tmp_path)) == 3.0
    monkeypatch.setattr(runtime, "_available_cpus_read", None)  # restored after the test, with the real count
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    monkeypatch.setattr(runtime, "cgroup_cpu_limit", lambda: 1.5)
    assert runtime.available_cpus(fresh=True) == 2  # a quota of 1.5 CPUs rounds up
    monkeypatch.setattr(runtime, "cgroup_cpu_limit", lambda: None)
    assert runtime.available_cpus() == 2  # read again only after CPU_LIMIT_REREAD_S seconds
    assert runtime.available_cpus(fresh=True) == 6
    runtime._available_cpus_read = (runtime.time.monotonic() - runtime.CPU_LIMIT_REREAD_S, 2)  # an old read
    assert runtime.available_cpus() == 6


PROCESS_THREADS = """
import json, os, sys
first = sys.argv[1]
if first == "torch":
    import torch
import forcefield_et
import torch
from forcefield_et.runtime import apply_threads, available_cpus
out = {"wait_policy": os.environ.get("OMP_WAIT_POLICY"), "cpus": available_cpus(), "start": torch.get_num_threads()}
out["large"] = apply_threads(5000)
out["small"] = apply_threads(21)
out["large_again"] = apply_threads(5000)
torch.set_num_threads(1)  # the user's choice
out["after_user_set_1"] = apply_threads(5000)
torch.set_num_threads(2)
out["after_user_set_2"] = apply_threads(21)  # kept: the user has taken control of the count
out["explicit"] = apply_threads(21, requested=1)
print(json.dumps(out))
"""


def _process_threads(first: str, env_extra):
    unset = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "FORCEFIELD_ET_THREADS")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(env_extra)
    result = subprocess.run([sys.executable, "-c", PROCESS_THREADS, first], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    import json

    return json.loads(result.stdout.strip().splitlines()[-1])


def test_apply_threads_in_a_fresh_process_never_raises_the_users_count():
    out = _process_threads("forcefield_et", {})
    assert out["wait_policy"] == "PASSIVE"  # set because forcefield_et was imported before torch
    large = min(out["cpus"], out["start"])
    assert (out["large"], out["small"], out["large_again"]) == (large, 1, large)
    assert out["after_user_set_1"] == 1
    assert out["after_user_set_2"] == 2
    assert out["explicit"] == 1
    limited = _process_threads("forcefield_et", {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "ACTIVE"})
    assert limited["wait_policy"] == "ACTIVE"  # the user's setting is kept
    assert (limited["large"], limited["small"], limited["large_again"]) == (1, 1, 1)


def test_wait_policy_is_left_alone_when_torch_was_imported_first():
    assert _process_threads("torch", {})["wait_policy"] is None

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

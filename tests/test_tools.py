"""The long-run scripts in tools/: they parse, and every benchmark module they call exists."""

from __future__ import annotations

import importlib.util
import re
import subprocess

import pytest

from tests.conftest import REPO_ROOT

SCRIPTS = sorted((REPO_ROOT / "tools").glob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_script_parses(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_called_benchmark_module_exists():
    called = {name for script in SCRIPTS for name in re.findall(r"-m (benchmarks\.\w+)", script.read_text())}
    assert {"benchmarks.finetune_converged", "benchmarks.peers", "benchmarks.md_stability"} <= called
    missing = sorted(name for name in called if importlib.util.find_spec(name) is None)
    assert not missing, f"tools/*.sh call modules that do not exist: {missing}"

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


def test_every_option_the_scripts_give_a_study_exists():
    """``study ...`` lines run ``benchmarks.finetune_converged``: their options must be its options."""
    from benchmarks.finetune_converged import build_parser

    known = {option for action in build_parser()._actions for option in action.option_strings}
    given = {option for script in SCRIPTS for line in re.findall(r"^\s*(?:rerun|study) (.*)$", script.read_text(), re.M)
             for option in re.findall(r"(?<!\S)(--[a-z][\w-]*)", line)}
    assert {"--molecules", "--patience", "--xtb-stage"} <= given
    assert not sorted(given - known), f"options finetune_converged does not have: {sorted(given - known)}"


def test_every_function_the_scripts_call_is_defined():
    library = (REPO_ROOT / "tools" / "long_runs_lib.sh").read_text()
    defined = set(re.findall(r"^(\w+)\(\) \{", library, re.M))
    for script in SCRIPTS:
        defined |= set(re.findall(r"^\s*(\w+)\(\) \{", script.read_text(), re.M))
    assert {"study", "longer_budget_cells", "xtb_stage_cells", "md_replicas"} <= defined
    for script in SCRIPTS:
        for name in re.findall(r"^\s*([a-z]+_[a-z_]+) (?!=)", script.read_text(), re.M):  # not Python in -c
            assert name in defined, f"{script.name} calls {name}, which no tools script defines"

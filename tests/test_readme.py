"""The README's Python examples run as written (shortened to a few MD steps), each in a fresh
interpreter, so that import order and warnings are what a user gets."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _shortened(code: str) -> str:
    return code.replace(".run(1000)", ".run(10)").replace(".step(1000)", ".step(10)")


def test_readme_has_the_ase_and_openmm_examples():
    assert any("ETCalculator" in block for block in BLOCKS)
    assert any("MLPotential" in block for block in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=["ase" if "ETCalculator" in b else "openmm" for b in BLOCKS])
def test_readme_example_runs(block, tmp_path):
    if "openmm" in block:
        for module in ("openmmtorch", "openmmml"):  # the block needs both
            try:
                __import__(module)
            except Exception as error:
                pytest.skip(f"{module} cannot be loaded ({type(error).__name__}: {error}): pip install -e '.[openmm]'")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONWARNINGS": "error::FutureWarning"}
    result = subprocess.run(
        [sys.executable, "-c", _shortened(block)], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]

"""Smoke test of examples/openmm_simulation.py as a user runs it: bundled pretrained model, 20 steps.

A random small model is no good here: minimisation pulls its atoms on top of each other.
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

from .conftest import require_openmmml

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "openmm_simulation.py"


def test_openmm_example_runs(tmp_path):
    require_openmmml()
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--model", "pretrained", "--steps", "20", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ns/day" in result.stdout
    for name in ("state.csv", "trajectory.dcd", "minimized.pdb"):
        assert (out / name).stat().st_size > 0, name
    with open(out / "state.csv") as handle:
        rows = list(csv.reader(line for line in handle if not line.startswith("#")))
    assert rows and all(math.isfinite(float(value)) for value in rows[-1])
    assert int(rows[-1][0]) == 20

"""Smoke test of examples/openmm_simulation.py: 20 steps with a small model checkpoint."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

from .conftest import require_openmmml

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "openmm_simulation.py"


def test_openmm_example_runs(tmp_path, small_model_file):
    require_openmmml()
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--model", str(small_model_file), "--steps", "20", "--out", str(out)],
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

"""Smoke test of the neighbour-list benchmark: ``python -m benchmarks.neighbors --quick``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_neighbors_benchmark_quick(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.neighbors", "--quick", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "log-log slope" in proc.stdout

    report = json.loads((tmp_path / "neighbors.json").read_text())
    for key in ("benchmark", "cutoff_angstrom", "dtype", "quick", "machine", "results", "slopes",
                "slope_fit_min_atoms", "slope_goal", "meets_goal", "edges_match_matscipy"):
        assert key in report, key
    assert report["quick"] is True and report["slope_goal"] == 1.2
    for key in ("platform", "cpu", "cores", "torch", "torch_threads"):
        assert key in report["machine"], key
    assert report["machine"]["torch_threads"] == 1

    rows = report["results"]
    sizes = [r["n_atoms"] for r in rows]
    assert sizes == sorted(sizes) and sizes[0] <= 200 and sizes[-1] >= 5000
    for row in rows:
        for key in ("periodic_s", "nonperiodic_s", "matscipy_s"):
            assert row[key] > 0.0, (key, row)
        # Same system, same cutoff: radius_graph and matscipy find the same number of pairs.
        assert row["periodic_edges"] == row["matscipy_edges"] > 0
        assert 0 < row["nonperiodic_edges"] <= row["periodic_edges"]
    assert report["edges_match_matscipy"] is True
    for key in ("periodic", "nonperiodic", "matscipy"):
        assert isinstance(report["slopes"][key], float)
        assert 0.0 < report["slopes"][key] < 3.0

    png = tmp_path / "neighbors.png"
    assert png.exists() and png.stat().st_size > 5000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

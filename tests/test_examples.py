"""Smoke tests: every example runs as written, shortened, and writes what it promises."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.io import read

from tests.conftest import REPO_ROOT, shared_path

EXAMPLES = REPO_ROOT / "examples"


def run_example(name: str, *args: str, cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], cwd=cwd, capture_output=True, text=True, timeout=600,
        env={"OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin", "HOME": str(cwd)},
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_ase_md_aspirin(tmp_path):
    out = run_example("ase_md_aspirin.py", "--steps", "20", "--out", "md", cwd=tmp_path)
    assert (tmp_path / "md" / "trajectory.traj").exists()
    assert (tmp_path / "md" / "md.png").stat().st_size > 1000
    summary = json.loads(out[: out.rindex("}") + 1])
    assert summary["steps"] == 20 and summary["steps_per_s"] > 0


def test_optimize_and_vibrate(tmp_path):
    out = run_example("optimize_and_vibrate.py", "--fmax", "0.5", "--steps", "20", "--out", "vib", cwd=tmp_path)
    assert "vibrational modes" in out
    frequencies = (tmp_path / "vib" / "frequencies_cm-1.txt").read_text().split()
    assert len(frequencies) == 63


def test_batch_screening(tmp_path):
    out = run_example("batch_screening.py", "--n", "16", "--batch-size", "8", cwd=tmp_path)
    assert "conformations/s" in out and "#1: candidate" in out


def test_finetune_small(tmp_path):
    shared_path("rmd17", "rmd17_ethanol_train_01.npz")
    run_example("finetune_small.py", "--n-train", "20", "--n-test", "10", "--steps", "4", "--out", "ft", cwd=tmp_path)
    summary = json.loads((tmp_path / "ft" / "summary.json").read_text())
    assert summary["pretrained"]["frames"] == 10
    assert (tmp_path / "ft" / "run_pretrained" / "test" / "parity.png").exists()


@pytest.mark.parametrize("command", [["md", "--steps", "10", "--no-progress", "--out", "cli_md"]])
def test_main_job_cli(tmp_path, command):
    result = subprocess.run(
        [str(Path(sys.executable).parent / "forcefield-et"), *command], cwd=tmp_path, capture_output=True, text=True,
        timeout=300, env={"OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    # 10 steps of 0.5 fs, a row every 10 steps: the start and 5 fs, finite, bonds intact
    with open(tmp_path / "cli_md" / "md_log.csv", newline="") as handle:
        rows = [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]
    assert [row["time_fs"] for row in rows] == [0.0, 5.0]
    assert all(np.isfinite(list(row.values())).all() for row in rows)
    assert all(row["temperature_K"] > 0 and row["max_bond_change_A"] < 0.5 for row in rows)
    assert len(read(tmp_path / "cli_md" / "trajectory.traj", ":")) == len(rows)

"""forcefield_et.md: the MD runner behind ``forcefield-et md`` (relaxation, outputs, thermostats)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from ase.io import Trajectory, read

from forcefield_et import ETCalculator
from forcefield_et.md import make_dynamics, relax, run_md
from forcefield_et.structures import structure_path


@pytest.fixture
def aspirin():
    atoms = read(structure_path("aspirin"))
    atoms.calc = ETCalculator("pretrained", device="cpu")
    return atoms


def test_relax_reaches_fmax_and_lowers_the_energy(aspirin):
    energy_before = aspirin.get_potential_energy()
    result = relax(aspirin, fmax=0.1, max_steps=500)
    assert result["converged"]
    assert result["fmax_eV_A"] < 0.1
    assert np.linalg.norm(aspirin.get_forces(), axis=1).max() < 0.1
    assert result["energy_change_eV"] < 0
    assert aspirin.get_potential_energy() == pytest.approx(energy_before + result["energy_change_eV"], abs=1e-6)


def test_run_md_writes_outputs_and_reports_the_relaxation(aspirin, tmp_path):
    summary = run_md(aspirin, tmp_path / "md", steps=20, interval=5, progress=False, relax_fmax=0.1)
    assert summary["relaxation"]["converged"]
    assert summary["steps"] == 20
    with open(tmp_path / "md" / "md_log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 5  # t = 0 and every 5 steps
    # MD starts from the relaxed structure: the first logged potential energy is the relaxed one.
    relaxed = read(structure_path("aspirin"))
    relaxed.calc = aspirin.calc
    relax(relaxed, fmax=0.1, max_steps=500)
    assert float(rows[0]["epot_eV"]) == pytest.approx(relaxed.get_potential_energy(), abs=1e-4)
    with Trajectory(str(tmp_path / "md" / "trajectory.traj")) as trajectory:
        assert len(trajectory) == 5
    assert (tmp_path / "md" / "md.png").stat().st_size > 1000


def test_run_md_needs_a_calculator(tmp_path):
    with pytest.raises(ValueError, match="no calculator"):
        run_md(read(structure_path("aspirin")), tmp_path / "md", steps=1)


def test_unknown_thermostat_is_an_error(aspirin):
    with pytest.raises(ValueError, match="thermostat must be one of"):
        make_dynamics(aspirin, "berendsen", 0.5, 300.0, 0.01, seed=0)

"""forcefield_et.md: the MD runner behind ``forcefield-et md`` (relaxation, outputs, thermostats)."""

from __future__ import annotations

import csv
import json

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
    assert "total_energy_drift_eV" not in summary  # Langevin exchanges energy with its bath


def test_nve_summary_reports_the_energy_drift(aspirin, tmp_path):
    summary = run_md(aspirin, tmp_path / "md", steps=10, interval=5, progress=False, thermostat="nve",
                     relax_fmax=None)
    with open(tmp_path / "md" / "md_log.csv") as handle:
        etot = [float(r["etot_eV"]) for r in csv.DictReader(handle)]
    assert summary["total_energy_drift_eV"] == pytest.approx(etot[-1] - etot[0])


def test_run_md_needs_a_calculator(tmp_path):
    with pytest.raises(ValueError, match="no calculator"):
        run_md(read(structure_path("aspirin")), tmp_path / "md", steps=1)


def test_unknown_thermostat_is_an_error(aspirin):
    with pytest.raises(ValueError, match="thermostat must be one of"):
        make_dynamics(aspirin, "berendsen", 0.5, 300.0, 0.01, seed=0)


class _TetherCalculator:
    """Toy ASE calculator: every atom on a harmonic spring (k, eV/Å²) to its start position (minimum
    image under PBC), plus a constant pull (eV/Å) on one atom, so that a bond can be broken on purpose."""

    def __new__(cls, start, k=50.0, pulled=None, pull=(0.0, 0.0, 0.0)):
        from ase.calculators.calculator import Calculator, all_changes
        from ase.geometry import find_mic

        class Tether(Calculator):
            implemented_properties = ["energy", "forces"]

            def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
                super().calculate(atoms, properties, system_changes)
                delta = self.atoms.positions - start
                if self.atoms.pbc.any():
                    delta = find_mic(delta, self.atoms.cell, self.atoms.pbc)[0]
                forces = -k * delta
                energy = 0.5 * k * float((delta**2).sum())
                if pulled is not None:
                    forces[pulled] += pull
                    energy -= float(np.dot(pull, self.atoms.positions[pulled]))
                self.results = {"energy": energy, "forces": forces}

        return Tether()


def test_run_md_stops_when_a_bond_breaks_and_says_which(tmp_path):
    from ase.build import molecule

    atoms = molecule("CH3OH")
    hydroxyl_h = next(i for i, z in enumerate(atoms.numbers) if z == 1 and min(
        np.linalg.norm(atoms.positions[i] - atoms.positions[j]) for j in np.flatnonzero(atoms.numbers == 8)) < 1.1)
    oxygen = int(np.flatnonzero(atoms.numbers == 8)[0])
    direction = atoms.positions[hydroxyl_h] - atoms.positions[oxygen]
    pull = 40.0 * direction / np.linalg.norm(direction)  # against k = 50: an equilibrium 0.8 Å further out
    atoms.calc = _TetherCalculator(atoms.positions.copy(), pulled=hydroxyl_h, pull=pull)
    summary = run_md(atoms, tmp_path / "md", steps=400, interval=5, temperature_K=50.0, progress=False,
                     max_bond_change=0.5)
    stopped = summary["stopped"]
    assert summary["steps"] == stopped["step"] < 400 and summary["max_bond_change_A"] > 0.5
    assert [b["atoms"] for b in stopped["bond_changes"]["stretched"]] == [sorted([oxygen, hydroxyl_h])]
    assert "O" in stopped["reason"] and f"H{hydroxyl_h}" in stopped["reason"]
    with open(tmp_path / "md" / "md_log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == stopped["step"] // 5 + 1 and float(rows[-1]["max_bond_change_A"]) > 0.5
    assert all(float(r["max_bond_change_A"]) <= 0.5 for r in rows[:-1])
    with pytest.raises(ValueError, match="max_bond_change must be a positive length"):
        run_md(atoms, tmp_path / "md2", steps=1, max_bond_change=0.0)


def test_run_md_measures_bonds_across_the_periodic_boundary(tmp_path):
    from ase.build import molecule

    water = molecule("H2O")
    water.cell, water.pbc = np.eye(3) * 6.0, True
    water.positions += [3.0, 0.1 - water.positions[0, 1], 3.0]  # O at y = 0.1: one H crosses y = 0
    water.wrap()
    assert water.positions[:, 1].max() > 5.0  # that H sits at the far side of the box
    water.calc = _TetherCalculator(water.positions.copy())
    summary = run_md(water, tmp_path / "md", steps=40, interval=10, temperature_K=300.0, progress=False,
                     max_bond_change=0.5)
    assert summary["bonds_checked"] == 2 and "stopped" not in summary
    assert summary["max_bond_change_A"] < 0.2


def test_run_md_reports_the_largest_bond_change_of_a_quiet_run(aspirin, tmp_path):
    summary = run_md(aspirin, tmp_path / "md", steps=20, interval=10, progress=False, relax_fmax=0.1,
                     max_bond_change=0.5)
    assert summary["bonds_checked"] == 21 and "stopped" not in summary
    assert 0.0 < summary["max_bond_change_A"] < 0.2


def test_run_md_without_steps_relaxes_and_writes_strict_json(aspirin, tmp_path):
    summary = run_md(aspirin, tmp_path / "md", steps=0, interval=5, progress=False, relax_fmax=0.1)
    assert summary["steps"] == 0 and summary["relaxation"]["converged"]
    assert summary["steps_per_s"] is None and summary["ns_per_day"] is None  # nothing timed: no NaN in JSON
    json.loads(json.dumps(summary, allow_nan=False))

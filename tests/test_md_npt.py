"""forcefield_et.md at constant pressure: ASE's isotropic MTK barostat driven by the model's
stress. The integrator's conserved energy stays flat only if the stress is the strain derivative
of the energy, so these runs test the stress as much as the runner."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.calculator import Calculator, all_changes
from ase.io import read

from forcefield_et import ETCalculator
from forcefield_et.cli import main
from forcefield_et.md import run_md
from forcefield_et.units import AMU_PER_ANGSTROM3_TO_G_PER_CM3


def water_box(edge: float = 6.21) -> Atoms:
    """Eight water molecules on a 2x2x2 grid in a cubic cell (1.0 g/cm³ at 6.21 Å)."""
    atoms = Atoms(cell=np.eye(3) * edge, pbc=True)
    for corner in np.ndindex(2, 2, 2):
        water = molecule("H2O")
        water.translate((np.array(corner) + 0.5) * edge / 2)
        atoms += water
    return atoms


def water(model, dtype="float64"):
    atoms = water_box()
    atoms.calc = ETCalculator(str(model), device="cpu", dtype=dtype)
    return atoms


class _ScaledStress(Calculator):
    """The ET's energy and forces with its stress multiplied by ``factor``: a stress that is not the
    strain derivative of the energy."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, inner: Calculator, factor: float):
        super().__init__()
        self.inner, self.factor = inner, factor

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        copy = self.atoms.copy()
        copy.calc = self.inner
        self.results = {"energy": copy.get_potential_energy(), "free_energy": copy.get_potential_energy(),
                        "forces": copy.get_forces(), "stress": copy.get_stress() * self.factor}


def npt_log(path):
    with open(path / "md_log.csv") as handle:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]


NPT = dict(timestep_fs=0.25, temperature_K=300.0, thermostat="nose-hoover", interval=10, progress=False,
           pressure_bar=1.0, barostat_time_fs=50.0, seed=1)


def test_npt_conserves_its_energy_and_scales_the_cell_without_changing_its_shape(tiny_model, tmp_path):
    """The untrained model binds the box far below its start volume: a large excursion of the cell
    that the conserved energy must follow."""
    atoms = water(tiny_model)
    cell0 = atoms.cell.array.copy()
    summary = run_md(atoms, tmp_path / "npt", steps=300, **NPT)
    rows = npt_log(tmp_path / "npt")
    volumes = np.array([row["volume_A3"] for row in rows])
    assert np.ptp(volumes) / volumes[0] > 0.1  # the barostat moves the volume...
    scale = (volumes[-1] / volumes[0]) ** (1 / 3)
    np.testing.assert_allclose(atoms.cell.array, cell0 * scale, atol=1e-9)  # ...and keeps the shape
    conserved = np.array([row["conserved_eV"] for row in rows])
    potential = np.array([row["epot_eV"] for row in rows])
    assert np.ptp(conserved) < 0.02 * np.ptp(potential), (np.ptp(conserved), np.ptp(potential))
    assert abs(summary["conserved_energy_drift_eV"]) < 0.02 * np.ptp(potential)
    density = atoms.get_masses().sum() / volumes[-1] * AMU_PER_ANGSTROM3_TO_G_PER_CM3
    assert rows[-1]["density_g_cm3"] == pytest.approx(density)
    assert rows[0]["density_g_cm3"] == pytest.approx(1.0, abs=0.01)
    second_half = volumes[len(volumes) // 2 :]
    assert summary["mean_volume_A3"] == pytest.approx(second_half.mean())
    assert {"mean_density_g_cm3", "mean_pressure_bar"} <= set(summary)


def test_a_stress_that_is_not_the_strain_derivative_breaks_the_conserved_energy(tiny_model, tmp_path):
    """The check above has teeth: the same run with the stress scaled by 1.5 drifts."""
    exact, scaled = water(tiny_model), water(tiny_model)
    scaled.calc = _ScaledStress(scaled.calc, 1.5)
    run_md(exact, tmp_path / "exact", steps=300, **NPT)
    run_md(scaled, tmp_path / "scaled", steps=300, **NPT)
    spread = {name: np.ptp([row["conserved_eV"] for row in npt_log(tmp_path / name)]) for name in ("exact", "scaled")}
    assert spread["scaled"] > 10 * spread["exact"], spread


def test_a_resumed_npt_run_is_the_uninterrupted_run(tiny_model, tmp_path):
    options = dict(NPT, interval=5)
    run_md(water(tiny_model, "float32"), tmp_path / "whole", steps=30, **options)
    run_md(water(tiny_model, "float32"), tmp_path / "parts", steps=15, existing="resume", **options)
    summary = run_md(water(tiny_model, "float32"), tmp_path / "parts", steps=30, existing="resume", **options)
    assert summary["resumed_from_step"] == 15
    assert (tmp_path / "whole" / "md_log.csv").read_bytes() == (tmp_path / "parts" / "md_log.csv").read_bytes()
    whole, parts = (read(str(tmp_path / name / "trajectory.traj"), ":") for name in ("whole", "parts"))
    assert len(whole) == len(parts) == 7
    for a, b in zip(whole, parts):
        assert np.array_equal(a.positions, b.positions) and np.array_equal(a.cell.array, b.cell.array)


def test_a_run_at_another_pressure_is_not_resumed_into_the_same_folder(tiny_model, tmp_path):
    run_md(water(tiny_model), tmp_path / "npt", steps=10, existing="resume", **NPT)
    with pytest.raises(ValueError, match="pressure_bar"):
        run_md(water(tiny_model), tmp_path / "npt", steps=20, existing="resume", **dict(NPT, pressure_bar=1000.0))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(thermostat="langevin"), "nose-hoover"),
        (dict(pressure_bar=float("nan")), "finite pressure"),
        (dict(barostat_time_fs=0.0), "positive time"),
    ],
)
def test_npt_settings_that_cannot_work_are_refused_by_name(tiny_model, tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        run_md(water(tiny_model), tmp_path / "npt", steps=10, **dict(NPT, **change))
    assert not (tmp_path / "npt" / "md_log.csv").exists()


@pytest.mark.parametrize("pbc", [False, [True, True, False]])
def test_npt_needs_a_structure_periodic_in_three_directions(tiny_model, tmp_path, pbc):
    atoms = water(tiny_model)
    atoms.pbc = pbc
    with pytest.raises(ValueError, match="periodic along a, b and c"):
        run_md(atoms, tmp_path / "npt", steps=10, **NPT)


def test_cli_md_at_constant_pressure_picks_the_nose_hoover_thermostat(tiny_model, tmp_path, capsys):
    structure = tmp_path / "water.extxyz"
    water_box().write(str(structure))
    status = main(["md", str(structure), "--model", str(tiny_model), "--pressure", "1", "--barostat-time", "50",
                   "--steps", "20", "--timestep", "0.25", "--no-relax", "--no-progress", "--out",
                   str(tmp_path / "md")])
    assert status == 0
    assert "nose-hoover at 300.0 K, 1 bar (MTK barostat, 50 fs)" in capsys.readouterr().out
    assert {"volume_A3", "density_g_cm3", "pressure_bar", "conserved_eV"} <= set(npt_log(tmp_path / "md")[0])
    assert (tmp_path / "md" / "md.png").stat().st_size > 0


def test_cli_md_refuses_a_pressure_with_the_langevin_thermostat_before_it_starts(tiny_model, tmp_path, capsys):
    structure = tmp_path / "water.extxyz"
    water_box().write(str(structure))
    status = main(["md", str(structure), "--model", str(tiny_model), "--pressure", "1", "--thermostat", "langevin",
                   "--steps", "10", "--no-relax", "--no-progress", "--out", str(tmp_path / "md")])
    output = capsys.readouterr()
    assert status != 0 and "--pressure runs with --thermostat nose-hoover" in output.err
    assert "MD of" not in output.out and not (tmp_path / "md").exists()

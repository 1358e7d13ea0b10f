"""Slabs and wires (periodic in one or two directions): the completed cell gives exactly the
neighbours, energy, forces and stress of the structure without images along its open directions."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.calculator import PropertyNotImplementedError

from forcefield_et import ETCalculator
from forcefield_et.periodicity import model_cell


def _water_layer(a: float = 3.2, b: float = 3.4, c: float = 4.0, tilt: float = 0.7) -> Atoms:
    """Two water molecules in a triclinic cell; along c the gap between periodic copies is thinner
    than the 5 Å cutoff, so treating c as periodic would add neighbours."""
    atoms = molecule("H2O") + molecule("H2O")
    atoms.positions[3:] += [1.4, 1.9, 0.6]
    atoms.set_cell([[a, 0.0, 0.0], [tilt, b, 0.0], [0.3, -0.2, c]])
    atoms.rattle(0.05, seed=1)
    return atoms


def _energy_forces(atoms: Atoms, calc: ETCalculator) -> tuple[float, np.ndarray]:
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms.get_potential_energy(), atoms.get_forces()


def _with_wide_vacuum(atoms: Atoms, open_axes: list[int], width: float = 60.0) -> Atoms:
    """The same structure, fully periodic, with the open lattice vectors replaced by long orthogonal ones."""
    wide = atoms.copy()
    cell = wide.cell.array.copy()
    periodic = [k for k in range(3) if k not in open_axes]
    if len(periodic) == 2:
        normal = np.cross(cell[periodic[0]], cell[periodic[1]])
        cell[open_axes[0]] = width * normal / np.linalg.norm(normal)
    else:
        axis = cell[periodic[0]] / np.linalg.norm(cell[periodic[0]])
        first = np.cross(axis, [0.0, 0.0, 1.0] if abs(axis[2]) < 0.9 else [1.0, 0.0, 0.0])
        first /= np.linalg.norm(first)
        cell[open_axes[0]], cell[open_axes[1]] = width * first, width * np.cross(axis, first)
    wide.set_cell(cell)
    wide.pbc = True
    return wide


def test_slab_equals_the_structure_with_a_wide_vacuum(calc):
    slab = _water_layer()
    slab.pbc = [True, True, False]
    energy, forces = _energy_forces(slab, calc)
    wide_energy, wide_forces = _energy_forces(_with_wide_vacuum(slab, [2]), calc)
    assert energy == pytest.approx(wide_energy, rel=1e-12)
    np.testing.assert_allclose(forces, wide_forces, atol=1e-10)
    # and it differs from the fully periodic reading of the same thin cell (the images along c count there)
    periodic = slab.copy()
    periodic.pbc = True
    assert abs(_energy_forces(periodic, calc)[0] - energy) > 1e-4


def test_slab_with_a_zero_open_vector_and_any_open_direction(calc):
    """ASE's surface builders leave the open vector zero; the open direction may be any of a, b, c."""
    slab = _water_layer()
    slab.pbc = [True, True, False]
    reference = _energy_forces(slab, calc)
    zero = slab.copy()
    zero.cell[2] = 0.0
    energy, forces = _energy_forces(zero, calc)
    assert energy == pytest.approx(reference[0], rel=1e-12)
    np.testing.assert_allclose(forces, reference[1], atol=1e-10)
    # the same slab with its axes relabelled (open direction a): same energy, permuted forces unchanged
    relabelled = slab.copy()
    relabelled.set_cell(slab.cell.array[[2, 0, 1]])
    relabelled.pbc = [False, True, True]
    energy, forces = _energy_forces(relabelled, calc)
    assert energy == pytest.approx(reference[0], rel=1e-12)
    np.testing.assert_allclose(forces, reference[1], atol=1e-10)


def test_slab_supercell_is_extensive_in_its_periodic_directions(calc):
    slab = _water_layer()
    slab.pbc = [True, True, False]
    energy, forces = _energy_forces(slab, calc)
    supercell = slab.repeat((2, 3, 1))
    super_energy, super_forces = _energy_forces(supercell, calc)
    assert super_energy == pytest.approx(6 * energy, rel=1e-10)
    np.testing.assert_allclose(super_forces, np.tile(forces, (6, 1)), atol=1e-9)


def test_wire_equals_the_structure_with_a_wide_vacuum(calc):
    wire = _water_layer()
    wire.pbc = [True, False, False]
    energy, forces = _energy_forces(wire, calc)
    wide_energy, wide_forces = _energy_forces(_with_wide_vacuum(wire, [1, 2]), calc)
    assert energy == pytest.approx(wide_energy, rel=1e-12)
    np.testing.assert_allclose(forces, wide_forces, atol=1e-10)


def test_slab_stress_is_the_strain_derivative_over_its_own_cell(calc):
    """A slab whose vacuum exceeds the cutoff has no images along c either way, so its stress equals
    the fully periodic one; and it matches finite differences of the energy under strain."""
    slab = _water_layer(c=25.0)
    slab.pbc = [True, True, False]
    slab.calc = calc
    stress = slab.get_stress(voigt=False)
    periodic = slab.copy()
    periodic.pbc = True
    periodic.calc = calc
    np.testing.assert_allclose(stress, periodic.get_stress(voigt=False), atol=1e-10)
    volume, step = slab.get_volume(), 1e-5
    for i, j in ((0, 0), (1, 1), (0, 1)):
        energies = []
        for sign in (1, -1):
            strained = slab.copy()
            strain = np.eye(3)
            strain[i, j] += sign * step / 2
            strain[j, i] += sign * step / 2
            strained.set_cell(slab.cell.array @ strain, scale_atoms=True)
            strained.calc = calc
            energies.append(strained.get_potential_energy())
        assert stress[i, j] == pytest.approx((energies[0] - energies[1]) / (2 * step) / volume, abs=1e-7)


def test_slab_stress_without_a_cell_volume_is_refused(calc):
    slab = _water_layer()
    slab.pbc = [True, True, False]
    slab.cell[2] = 0.0
    slab.calc = calc
    slab.get_forces()
    with pytest.raises(PropertyNotImplementedError, match="periodic along ab only"):
        slab.get_stress()


def test_batch_evaluate_takes_slabs(calc):
    slab = _water_layer()
    slab.pbc = [True, True, False]
    molecule_only = molecule("CH4")
    results = calc.batch_evaluate([slab, molecule_only, slab])
    energy, forces = _energy_forces(slab, calc)
    for result in (results[0], results[2]):
        assert result["energy"] == pytest.approx(energy, rel=1e-12)
        np.testing.assert_allclose(result["forces"], forces, atol=1e-10)
        assert "stress" in result


def test_model_cell_keeps_fully_periodic_cells_and_completes_open_directions():
    positions = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 2.0]])
    cell = np.diag([3.0, 4.0, 0.0])
    assert model_cell(positions, None, None, 5.0).cell is None
    full = model_cell(positions, np.diag([3.0, 4.0, 5.0]), True, 5.0)
    np.testing.assert_array_equal(full.cell, np.diag([3.0, 4.0, 5.0]))
    assert not full.replaced and full.stress_factor() == 1.0
    slab = model_cell(positions, cell, [True, True, False], 5.0)
    np.testing.assert_array_equal(slab.cell[:2], cell[:2])
    assert abs(slab.cell[2, 2]) == pytest.approx(2.0 + 5.0 + 1.0)  # extent + cutoff + clearance
    assert slab.stress_volume is None and slab.stress_factor() is None
    with pytest.raises(ValueError, match="must be non-zero and independent"):
        model_cell(positions, np.array([[3.0, 0, 0], [6.0, 0, 0], [0, 0, 5.0]]), [True, True, False], 5.0)


def test_frame_sets_of_slabs_and_molecules_predict_as_the_calculator(calc, tmp_path):
    """Read from extxyz (a zero lattice vector marks an open direction), a set of slabs, fully
    periodic frames and molecules goes through the batched path (training, evaluation) with the
    calculator's energies and forces."""
    from ase.io import read, write

    from forcefield_et.data import read_dataset
    from forcefield_et.inference import Evaluator

    slab = _water_layer()
    slab.pbc = [True, True, False]
    thin_vacuum = slab.copy()
    zero_vector = slab.copy()
    zero_vector.cell[2] = 0.0
    periodic = slab.copy()
    periodic.pbc = True
    methane = molecule("CH4")
    frames = [thin_vacuum, methane, zero_vector, periodic]
    path = tmp_path / "frames.extxyz"
    write(path, frames)
    data = read_dataset(path)
    prediction = Evaluator.wrap(calc.engine.model).predict(data, batch_size=3)
    for k, atoms in enumerate(read(path, ":")):  # the positions as written
        energy, forces = _energy_forces(atoms, calc)
        assert prediction["energy"][k] == pytest.approx(energy, rel=1e-10)
        a, b = data.offsets[k], data.offsets[k + 1]
        np.testing.assert_allclose(prediction["forces"][a:b], forces, atol=1e-9)

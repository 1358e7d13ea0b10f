"""ETCalculator with a committee: mean results, energy_std / forces_std, the ways to name one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import Atoms

from forcefield_et import CheckpointError, ETCalculator, build_model, save_checkpoint
from forcefield_et.registry import write_committee_file


def tiny(seed: int):
    torch.manual_seed(seed)
    return build_model(hidden_channels=16, num_layers=1, num_heads=2, num_rbf=8)


def ethanol() -> Atoms:
    positions = [[0.0, 0.0, 0.0], [1.52, 0.0, 0.0], [2.0, 1.35, 0.0], [-0.4, 1.0, 0.1], [-0.4, -0.5, 0.9],
                 [-0.4, -0.5, -0.9], [1.9, -0.5, 0.9], [1.9, -0.5, -0.9], [2.95, 1.3, 0.1]]
    return Atoms("CCOHHHHHH", positions=positions)


@pytest.fixture
def member_files(tmp_path):
    paths = []
    for seed in range(3):
        path = tmp_path / "committee" / f"member_{seed}" / "best.pt"
        save_checkpoint(path, tiny(seed))
        paths.append(path)
    write_committee_file(tmp_path / "committee", [f"member_{k}/best.pt" for k in range(3)])
    return paths


def test_committee_results_are_the_member_mean_with_its_spread(member_files):
    atoms = ethanol()
    singles = []
    for path in member_files:
        atoms.calc = ETCalculator(str(path), device="cpu", dtype="float64")
        singles.append((atoms.get_potential_energy(), atoms.get_forces()))
        assert "forces_std" not in atoms.calc.results  # a single model is unchanged
        assert "forces_std" not in atoms.calc.implemented_properties
    calc = ETCalculator([str(p) for p in member_files], device="cpu", dtype="float64")
    atoms.calc = calc
    energies = np.array([e for e, _ in singles])
    forces = np.stack([f for _, f in singles])
    assert atoms.get_potential_energy() == pytest.approx(energies.mean(), rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), forces.mean(0), rtol=1e-9, atol=1e-12)
    assert calc.get_property("energy_std", atoms) == pytest.approx(energies.std(), rel=1e-9)
    expected = np.sqrt(((forces - forces.mean(0)) ** 2).sum(-1).mean(0))
    std = calc.get_property("forces_std", atoms)
    assert std.shape == (len(atoms),)
    np.testing.assert_allclose(std, expected, rtol=1e-9)


def test_committee_directory_and_file_name_the_same_committee(member_files, tmp_path):
    atoms = ethanol()
    results = []
    for model in (tmp_path / "committee", str(tmp_path / "committee" / "committee.json")):
        atoms.calc = ETCalculator(model, device="cpu", dtype="float64")
        atoms.get_forces()
        results.append(dict(atoms.calc.results))
    assert results[0]["energy"] == results[1]["energy"]
    np.testing.assert_array_equal(results[0]["forces_std"], results[1]["forces_std"])


def test_identical_members_give_the_single_model_and_zero_std(member_files):
    atoms = ethanol()
    atoms.calc = ETCalculator(str(member_files[0]), device="cpu", dtype="float64")
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = ETCalculator([str(member_files[0])] * 2, device="cpu", dtype="float64")
    assert atoms.get_potential_energy() == pytest.approx(energy, rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), forces, rtol=1e-12, atol=1e-14)
    assert atoms.calc.results["energy_std"] == pytest.approx(0.0, abs=1e-12)
    assert np.abs(atoms.calc.results["forces_std"]).max() < 1e-12


def test_batch_evaluate_reports_the_spread_per_structure(member_files):
    calc = ETCalculator([str(p) for p in member_files], device="cpu", dtype="float64")
    structures = [ethanol(), ethanol()]
    structures[1].positions[2] += [0.1, -0.05, 0.0]
    batched = calc.batch_evaluate(structures)
    for atoms, entry in zip(structures, batched):
        atoms.calc = calc
        atoms.get_forces()
        assert entry["energy_std"] == pytest.approx(calc.results["energy_std"], rel=1e-9)
        np.testing.assert_allclose(entry["forces_std"], calc.results["forces_std"], rtol=1e-8, atol=1e-12)


def test_bad_committees_are_clear_errors(member_files, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="without committee.json"):
        ETCalculator(tmp_path / "empty")
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"format": "forcefield_et_committee", "members": ["nowhere/best.pt"]}))
    with pytest.raises(CheckpointError, match="not found"):
        ETCalculator(str(broken))
    other = tmp_path / "other.json"
    other.write_text("{}")
    with pytest.raises(CheckpointError, match="not a forcefield_et committee"):
        ETCalculator(str(other))
    with pytest.raises(ValueError, match="at least 2"):
        ETCalculator([str(member_files[0])])

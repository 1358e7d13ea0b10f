"""forcefield_et.torchsim: the ET as a torch-sim model. Batched calls equal the ASE calculator's
one-structure calls, stress included, and torch-sim's own integrators run on it with the physics
intact (NVE conserves energy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.io import read

from forcefield_et import ETCalculator
from forcefield_et.structures import structure_path
from forcefield_et.units import BAR_TO_EV_PER_ANGSTROM3

ts = pytest.importorskip("torch_sim", reason="torch-sim is not installed (pip install 'forcefield-et[torchsim]')")
from forcefield_et.torchsim import ETTorchSimModel  # noqa: E402


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ETTorchSimModel("pretrained", device="cpu", dtype="float64")


def molecules():
    return [read(structure_path("aspirin")), molecule("CH3CH2OH"), molecule("H2O")]


def water_box(edge: float = 6.21):
    from tests.test_md_npt import water_box as box

    return box(edge)


def test_a_batch_of_molecules_equals_the_ase_calculator_one_at_a_time(model):
    systems = molecules()
    output = model(ts.io.atoms_to_state(systems, model.device, model.dtype))
    assert output["energy"].shape == (3,) and output["forces"].shape == (sum(map(len, systems)), 3)
    assert torch.isnan(output["stress"]).all()  # a molecule has no stress
    first = 0
    for k, atoms in enumerate(systems):
        atoms.calc = ETCalculator("pretrained", device="cpu", dtype="float64")
        assert output["energy"][k].item() == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(output["forces"][first : first + len(atoms)].numpy(), atoms.get_forces(),
                                   atol=1e-9)
        first += len(atoms)


def test_a_periodic_state_gives_the_ase_stress_in_the_same_sign_convention(model):
    boxes = [water_box(), water_box(6.5)]
    boxes[1].rattle(0.05, seed=2)
    output = model(ts.io.atoms_to_state(boxes, model.device, model.dtype))
    assert output["stress"].shape == (2, 3, 3)
    for k, atoms in enumerate(boxes):
        atoms.calc = ETCalculator("pretrained", device="cpu", dtype="float64")
        assert output["energy"][k].item() == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(output["stress"][k].numpy(), atoms.get_stress(voigt=False), atol=1e-10)


def test_a_skewed_cell_is_read_in_torch_sims_column_convention(model):
    """torch-sim keeps lattice vectors in the columns of ``cell``: a triclinic cell read the other
    way round would give another energy."""
    atoms = water_box()
    atoms.set_cell(atoms.cell.array + np.array([[0.0, 0.0, 0.0], [1.2, 0.0, 0.0], [0.4, 0.7, 0.0]]),
                   scale_atoms=True)
    state = ts.io.atoms_to_state([atoms], model.device, model.dtype)
    assert not torch.allclose(state.cell[0], state.cell[0].T)
    atoms.calc = ETCalculator("pretrained", device="cpu", dtype="float64")
    assert model(state)["energy"][0].item() == pytest.approx(atoms.get_potential_energy(), abs=1e-9)


def test_a_state_dict_is_accepted_and_the_input_is_left_unchanged(model):
    state = ts.io.atoms_to_state(molecules(), model.device, model.dtype)
    positions = state.positions.clone()
    as_dict = {"positions": state.positions, "cell": state.cell, "pbc": state.pbc,
               "atomic_numbers": state.atomic_numbers, "system_idx": state.system_idx}
    torch.testing.assert_close(model(as_dict)["energy"], model(state)["energy"], rtol=0, atol=0)
    assert torch.equal(state.positions, positions)


def test_an_unsupported_element_is_named(model):
    with pytest.raises(ValueError, match=r"Si \(Z=14\) not supported.*H C N O F S Cl"):
        model(ts.io.atoms_to_state([bulk("Si")], model.device, model.dtype))


def test_torch_sim_nve_conserves_the_energy_of_every_system_of_a_batch(model):
    state = ts.io.atoms_to_state([read(structure_path("aspirin")), molecule("CH3CH2OH")], model.device,
                                 model.dtype)
    kT = torch.tensor(300.0 * ts.units.MetalUnits.temperature, dtype=model.dtype)
    dt = torch.tensor(0.25e-3 * ts.units.MetalUnits.time, dtype=model.dtype)  # 0.25 fs
    init, update = ts.nve(model=model, dt=dt, kT=kT, seed=0)
    state = init(state)
    totals, potentials = [], []
    for _ in range(100):
        state = update(state)
        kinetic = ts.calc_kinetic_energy(masses=state.masses, momenta=state.momenta, system_idx=state.system_idx)
        totals.append((state.energy + kinetic).numpy())
        potentials.append(state.energy.numpy())
    totals, potentials = np.array(totals), np.array(potentials)
    drift, swing = np.ptp(totals, axis=0), np.ptp(potentials, axis=0)
    assert (drift < 0.01 * swing).all(), (drift, swing)


def test_torch_sim_npt_langevin_runs_on_the_models_stress():
    model = ETTorchSimModel("pretrained", device="cpu", dtype="float32")
    one_bar = torch.tensor(BAR_TO_EV_PER_ANGSTROM3, dtype=torch.float32)
    final = ts.integrate(system=[water_box()], model=model, integrator=ts.npt_langevin, n_steps=20, temperature=300,
                         timestep=0.25e-3, external_pressure=one_bar)
    volume = float(torch.linalg.det(final.cell[0]))
    assert np.isfinite(volume) and volume != pytest.approx(6.21**3, rel=1e-6)  # the barostat moved the cell


def test_torch_sims_static_runner_works_on_molecules_and_boxes(model):
    molecule_results = ts.static(system=molecules()[:2], model=model)
    box_results = ts.static(system=[water_box()], model=model)
    assert len(molecule_results) == 2 and np.isfinite(molecule_results[0]["potential_energy"].numpy()).all()
    assert torch.isfinite(box_results[0]["stress"]).all()
    without = ETTorchSimModel("pretrained", device="cpu", dtype="float64", compute_stress=False)
    assert "stress" not in without(ts.io.atoms_to_state([water_box()], without.device, without.dtype))

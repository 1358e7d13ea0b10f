"""ETCalculator: ASE conventions, agreement with the bare model, stress, errors, dynamics."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.calculators.calculator import PropertyNotImplementedError

from forcefield_et import CheckpointError, ETCalculator, build_model, save_checkpoint
from forcefield_et.calculators.ase import NonFiniteError
from tests.conftest import shared_path


def _aspirin_atoms() -> Atoms:
    data = np.load(shared_path("rmd17", "rmd17_aspirin_train_01.npz"))
    return Atoms(numbers=data["nuclear_charges"], positions=data["coords"][0])


def _water_atoms() -> Atoms:
    from forcefield_et.data import read_deepmd

    water = read_deepmd(shared_path("water", "data_0"))
    return water.to_ase(0)


def test_implemented_properties_and_results(calc):
    atoms = _aspirin_atoms()
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    assert set(ETCalculator.implemented_properties) >= {"energy", "free_energy", "forces", "stress"}
    assert forces.shape == (21, 3) and forces.dtype == np.float64
    assert atoms.get_potential_energy(force_consistent=True) == energy
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


def test_matches_bare_model(calc, small_model):
    atoms = _aspirin_atoms()
    atoms.calc = calc
    out = small_model(torch.tensor(atoms.numbers), torch.tensor(atoms.positions))
    assert atoms.get_potential_energy() == pytest.approx(float(out["energy"][0].detach()), rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), out["forces"].detach().numpy(), rtol=1e-10, atol=1e-12)


def test_results_are_cached_until_atoms_change(calc):
    atoms = _aspirin_atoms()
    atoms.calc = calc
    atoms.get_forces()
    calls = calc.n_calls
    atoms.get_potential_energy()
    atoms.get_forces()
    assert calc.n_calls == calls
    atoms.positions[0, 0] += 0.01
    atoms.get_potential_energy()
    assert calc.n_calls == calls + 1


def test_system_changes_are_those_ase_names(calc):
    from ase.calculators.calculator import compare_atoms

    atoms = _aspirin_atoms()
    atoms.calc = calc
    atoms.get_forces()
    changed = atoms.copy()
    assert calc.check_state(changed) == compare_atoms(calc.atoms, changed) == []
    changed.positions[3, 1] += 1e-9
    changed.set_initial_charges(np.zeros(len(changed)) + 0.1)  # an array the calculated atoms lack
    changed.cell = np.eye(3) * 20.0
    changed.pbc = True
    assert calc.check_state(changed) == compare_atoms(calc.atoms, changed)
    assert sorted(calc.check_state(changed)) == ["cell", "initial_charges", "pbc", "positions"]
    changed = atoms.copy()
    changed.set_atomic_numbers([7] + list(atoms.numbers[1:]))  # the first atom is a carbon
    assert calc.check_state(changed) == compare_atoms(calc.atoms, changed) == ["numbers"]
    assert calc.check_state(changed, tol=0.1) == ["numbers"]  # other tolerances: ASE's own comparison


def test_stress_matches_finite_differences_on_water_box(small_model):
    from ase.calculators.fd import calculate_numerical_stress

    atoms = _water_atoms()
    atoms.calc = ETCalculator(small_model, device="cpu", dtype="float64")
    stress = atoms.get_stress()
    numerical = calculate_numerical_stress(atoms, eps=1e-5)
    np.testing.assert_allclose(stress, numerical, rtol=1e-5, atol=1e-9)
    assert np.abs(stress).max() > 1e-6  # not trivially zero


def test_batch_evaluate_equals_single_calls(calc):
    from forcefield_et.data import read_rmd17

    frames = [
        read_rmd17(shared_path("rmd17", f"rmd17_{m}_test_01.npz")).to_ase(0) for m in ("ethanol", "aspirin", "uracil")
    ]
    batched = calc.batch_evaluate(frames, batch_size=2)
    for atoms, result in zip(frames, batched):
        atoms.calc = calc
        assert result["energy"] == pytest.approx(atoms.get_potential_energy(), rel=1e-10)
        np.testing.assert_allclose(result["forces"], atoms.get_forces(), atol=1e-10)


def test_batch_evaluate_periodic_gives_stress(calc):
    water = _water_atoms()
    result = calc.batch_evaluate([water])[0]
    water.calc = calc
    np.testing.assert_allclose(result["stress"], water.get_stress(), atol=1e-10)


@pytest.mark.parametrize(
    "make_atoms, error, fragment",
    [
        (lambda: Atoms("UH", positions=[[0, 0, 0], [0, 0, 1.5]]), ValueError, "U (Z=92) not supported"),
        (lambda: Atoms("CH", positions=[[0, 0, 0], [np.nan, 0, 1]]), ValueError, "non-finite"),
        (lambda: Atoms("CH", positions=[[0, 0, 0], [0, 0, 1]], pbc=True), ValueError, "without a valid cell"),
        (
            lambda: Atoms("CH", positions=[[0, 0, 0], [0, 0, 1]], cell=[5, 0, 5], pbc=[True, True, False]),
            ValueError,
            "periodic directions (a, b; pbc=[True, True, False]) must be non-zero and independent",
        ),
        (
            lambda: Atoms("CH", positions=[[0, 0, 0], [0, 0, 1]], cell=[[2, 0, 0], [0, 2, 0], [1.9, 0, 1e-3]],
                          pbc=True),
            ValueError,
            "far denser than any material",
        ),
        (lambda: Atoms(), ValueError, "no atoms"),
    ],
)
def test_bad_input_gives_clear_errors(calc, make_atoms, error, fragment):
    atoms = make_atoms()
    atoms.calc = calc
    with pytest.raises(error, match=re.escape(fragment)):
        atoms.get_potential_energy()


def test_unknown_element_lists_supported_elements(calc):
    atoms = Atoms("UH", positions=[[0, 0, 0], [0, 0, 1.5]])
    atoms.calc = calc
    with pytest.raises(ValueError, match="supported: H C N O F S Cl"):
        atoms.get_potential_energy()


def test_missing_and_corrupt_model_files(tmp_path):
    with pytest.raises(CheckpointError, match="neither an existing file nor a bundled model"):
        ETCalculator(str(tmp_path / "missing.pt"))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="truncated or not a checkpoint"):
        ETCalculator(str(corrupt))


def test_model_path_and_dtype(tmp_path, small_model):
    path = tmp_path / "model.pt"
    save_checkpoint(path, small_model)
    calc32 = ETCalculator(str(path), device="cpu", dtype="float32")
    calc64 = ETCalculator(str(path), device="cpu", dtype="float64")
    atoms = _aspirin_atoms()
    e32 = calc32.get_potential_energy(atoms)
    e64 = calc64.get_potential_energy(atoms)
    assert e32 == pytest.approx(e64, rel=1e-5)
    with pytest.raises(ValueError, match="float32"):
        ETCalculator(str(path), dtype="float16")


def test_non_finite_output_raises_with_atoms(small_model):
    broken = build_model(hidden_channels=32, num_layers=2, num_heads=4, num_rbf=16).double()
    with torch.no_grad():
        broken.head.mlp[2].weight.fill_(float("nan"))
    atoms = _aspirin_atoms()
    atoms.calc = ETCalculator(broken, device="cpu", dtype="float64")
    with pytest.raises(NonFiniteError, match="offending atoms: 0 \\(C\\)"):
        atoms.get_forces()


def test_optimisers_and_vibrations(calc, tmp_path):
    from ase.optimize import BFGS, FIRE
    from ase.vibrations import Vibrations

    data = np.load(shared_path("rmd17", "rmd17_ethanol_train_01.npz"))
    for optimizer in (BFGS, FIRE):
        atoms = Atoms(numbers=data["nuclear_charges"], positions=data["coords"][0])
        atoms.calc = calc
        start = np.abs(atoms.get_forces()).max()
        optimizer(atoms, logfile=None).run(fmax=0.05, steps=300)
        assert np.abs(atoms.get_forces()).max() < min(0.05, start)
    vib = Vibrations(atoms, name=str(tmp_path / "vib"))
    vib.run()
    frequencies = vib.get_frequencies()
    assert len(frequencies) == 27
    # After relaxation: six near-zero modes (translations, rotations), the rest real.
    assert np.sum(np.abs(frequencies) < 60) >= 6
    assert np.all(np.real(frequencies[6:]) > 0)


def test_thermostats_run(calc, small_model):
    """20 steps of each NVT thermostat: the atoms move, the temperature stays physical, and the
    calculator's cached results are those of the final positions."""
    from ase.md.langevin import Langevin
    from ase.md.nose_hoover_chain import NoseHooverChainNVT

    from forcefield_et.md import maxwell_boltzmann

    for make in (
        lambda a: Langevin(
            a, 0.5 * units.fs, temperature_K=300, friction=0.01 / units.fs, fixcm=False, rng=np.random.default_rng(0)
        ),
        lambda a: NoseHooverChainNVT(a, 0.5 * units.fs, temperature_K=300, tdamp=50 * units.fs),
    ):
        atoms = _aspirin_atoms()
        atoms.calc = calc
        maxwell_boltzmann(atoms, 300, np.random.default_rng(1))
        start = atoms.positions.copy()
        make(atoms).run(20)
        assert np.abs(atoms.positions - start).max() > 1e-3  # the atoms moved ...
        fresh = _aspirin_atoms()  # ... and the calculator's results belong to where they are now
        fresh.positions = atoms.positions
        fresh.calc = ETCalculator(small_model, device="cpu", dtype="float64")
        np.testing.assert_allclose(atoms.get_potential_energy(), fresh.get_potential_energy(), rtol=0, atol=1e-10)
        np.testing.assert_allclose(atoms.get_forces(), fresh.get_forces(), rtol=0, atol=1e-10)
        assert 50 < atoms.get_temperature() < 1000


# the atoms start at rest, so the Berendsen thermostat's first rescaling divides by a zero temperature
# (ASE clips the factor); at rest the pressure is the model's stress alone, which the test needs
@pytest.mark.filterwarnings("ignore:divide by zero encountered in scalar divide:RuntimeWarning")
def test_npt_runs_with_stress(small_model):
    from ase.md.nptberendsen import NPTBerendsen

    atoms = _water_atoms()
    atoms.calc = ETCalculator(small_model, device="cpu", dtype="float64")
    volume = atoms.get_volume()
    pressure = -np.trace(atoms.get_stress(voigt=False)) / 3  # eV/Å^3; atoms at rest: no kinetic part
    target = 1.01325 * units.bar
    assert abs(pressure - target) > 1e-6
    NPTBerendsen(
        atoms,
        0.5 * units.fs,
        temperature_K=300,
        pressure_au=1.01325 * units.bar,
        taut=100 * units.fs,
        taup=500 * units.fs,
        compressibility_au=4.57e-5 / units.bar,
    ).run(3)
    assert np.isfinite(atoms.get_potential_energy())
    # the barostat follows the model's stress: the box grows above the target pressure, shrinks below
    assert np.sign(atoms.get_volume() - volume) == np.sign(pressure - target)


def test_nve_energy_conservation_aspirin_float64():
    """float64 velocity-Verlet NVE on rMD17 aspirin, 0.5 fs, 1000 steps (0.5 ps): total-energy
    fluctuation stays far below the kinetic-energy scale, and the drift rate below 0.5 % of it per ps."""
    from ase.md.verlet import VelocityVerlet

    from forcefield_et.md import maxwell_boltzmann
    from forcefield_et.registry import bundled_models

    # A trained model is needed: a random one releases energy and heats the molecule to ~2500 K.
    assert "pretrained" in bundled_models(), "the bundled pretrained checkpoint is missing"
    from ase.optimize import BFGS

    atoms = _aspirin_atoms()
    atoms.calc = ETCalculator("pretrained", device="cpu", dtype="float64")
    # Start at 300 K from the model's own minimum, so the test measures integration error only
    # (starting from a DFT frame releases the model's strain energy and heats the molecule).
    BFGS(atoms, logfile=None).run(fmax=0.05, steps=500)
    maxwell_boltzmann(atoms, 300, np.random.default_rng(0))
    dynamics = VelocityVerlet(atoms, 0.5 * units.fs)
    totals = []
    dynamics.attach(lambda: totals.append(atoms.get_total_energy()), interval=10)
    dynamics.run(1000)
    totals = np.array(totals)
    fluctuation = totals.max() - totals.min()
    kinetic_scale = 1.5 * len(atoms) * units.kB * 300
    assert np.all(np.isfinite(totals))
    assert fluctuation < 1e-2 * kinetic_scale, f"total energy fluctuates by {fluctuation:.2e} eV"
    drift = abs(np.polyfit(np.arange(len(totals)), totals, 1)[0] * len(totals))
    assert drift < 2.5e-3 * kinetic_scale, f"total energy drifts by {drift:.2e} eV over 0.5 ps"


def test_matscipy_neighbour_list_gives_identical_results(small_model):
    pytest.importorskip("matscipy", reason="matscipy is an optional backend (pip install matscipy)")
    water = _water_atoms()
    results = {}
    for backend in ("torch", "matscipy"):
        calc = ETCalculator(small_model, device="cpu", dtype="float64", neighbor_list=backend)
        results[backend] = (calc.get_potential_energy(water), calc.get_forces(water), calc.get_stress(water))
    assert results["matscipy"][0] == pytest.approx(results["torch"][0], rel=1e-12)
    np.testing.assert_allclose(results["matscipy"][1], results["torch"][1], atol=1e-10)
    np.testing.assert_allclose(results["matscipy"][2], results["torch"][2], atol=1e-12)
    auto = ETCalculator(small_model, device="cpu", dtype="float64")
    assert auto._use_matscipy(len(water)) and not auto._use_matscipy(21)


# ----------------------------------------------------------------------------- memory-saving mode


def _chunking_calc(model, **kwargs) -> ETCalculator:
    calc = ETCalculator(model, device="cpu", dtype="float64", **kwargs)
    calc.MEMORY_CHECK_MIN_ATOMS = 100  # plan the 192-atom box whichever neighbour list runs
    calc.EDGE_CHUNK_SIZE = 256  # about 40 chunks per layer
    return calc


def test_calculator_chunks_edges_when_memory_is_short(monkeypatch, caplog):
    """With memory (monkeypatched) too short for all edges but enough for the chunked path, the
    calculator switches to it, records it, and gives the all-edges energy, forces and stress."""
    from forcefield_et import runtime

    torch.manual_seed(0)  # wider and deeper than small_model, so that chunking saves enough to matter
    model = build_model(hidden_channels=64, num_layers=3, num_heads=4, num_rbf=16).double().eval()
    water = _water_atoms()
    reference = _chunking_calc(model)
    expected = (reference.get_potential_energy(water), reference.get_forces(water), reference.get_stress(water))
    assert reference.last_path == "all_edges" and reference.last_memory_plan.path == "all_edges"

    n_edges = reference.last_memory_plan.estimated_bytes // runtime.estimate_call_memory_bytes(1, 3, 64, 8)
    all_edges = runtime.estimate_call_memory_bytes(n_edges, 3, 64, 8) / runtime.MEMORY_FRACTION
    chunked = runtime.estimate_chunked_call_memory_bytes(len(water), n_edges, 3, 64, 8, 16, 256)
    chunked *= runtime.CHUNKED_SAFETY_FACTOR / runtime.MEMORY_FRACTION
    assert chunked < all_edges
    monkeypatch.setattr(runtime, "available_memory_bytes", lambda: int(0.5 * (chunked + all_edges)))

    calc = _chunking_calc(model)
    with caplog.at_level("INFO", logger="forcefield_et.calculators.ase"):
        energy, forces, stress = calc.get_potential_energy(water), calc.get_forces(water), calc.get_stress(water)
    assert calc.last_path == "chunked" and calc.last_memory_plan.edge_chunk_size == 256
    assert "chunked path (256 edges per chunk)" in caplog.text
    assert model.edge_chunk_size is None  # the calculator's choice lasts one call
    assert energy == pytest.approx(expected[0], rel=1e-12)
    np.testing.assert_allclose(forces, expected[1], rtol=0, atol=1e-12 * np.abs(expected[1]).max())
    np.testing.assert_allclose(stress, expected[2], rtol=0, atol=1e-12 * np.abs(expected[2]).max())

    with pytest.raises(MemoryError, match="edge chunking would need about"):  # chunking switched off
        _chunking_calc(model, edge_chunking=None).get_potential_energy(water)
    monkeypatch.setattr(runtime, "available_memory_bytes", lambda: int(0.9 * chunked))
    with pytest.raises(MemoryError, match="edge-chunked mode"):
        _chunking_calc(model).get_potential_energy(water)


def test_calculator_fixed_edge_chunk_size(small_model):
    atoms = _aspirin_atoms()  # small: chunks of 16 edges all the same
    calc = ETCalculator(small_model, device="cpu", dtype="float64", edge_chunking=16)
    forces = calc.get_forces(atoms)
    assert calc.last_path == "chunked" and calc.last_memory_plan.path == "chunked"
    plain = ETCalculator(small_model, device="cpu", dtype="float64")
    np.testing.assert_allclose(forces, plain.get_forces(atoms), rtol=0, atol=1e-12)
    assert plain.last_path == "all_edges" and plain.last_memory_plan is None  # 21 atoms: not checked
    with pytest.raises(ValueError, match="edge_chunking must be"):
        ETCalculator(small_model, device="cpu", edge_chunking=0)


def test_a_molecule_far_from_the_origin_keeps_float32_accuracy():
    """Positions are centred before the float32 model: aspirin 10^5 Å away gives the forces it has
    at the origin (without centring, float32 rounding of the positions costs about 0.1 eV/Å)."""
    atoms = _aspirin_atoms()
    atoms.calc = ETCalculator("pretrained", dtype="float32")
    near = atoms.get_forces().copy()
    energy = atoms.get_potential_energy()
    far = atoms.copy()
    far.positions += 1e5
    far.calc = ETCalculator("pretrained", dtype="float32")
    assert np.abs(far.get_forces() - near).max() < 1e-4
    assert far.get_potential_energy() == pytest.approx(energy, abs=1e-4)


def test_a_potential_shared_by_calculators_of_two_dtypes_is_not_converted_in_place():
    torch.manual_seed(0)
    model = build_model(hidden_channels=16, num_layers=1, num_heads=2, num_rbf=8).double().eval()
    atoms = _aspirin_atoms()
    reference = model(torch.tensor(atoms.numbers), torch.tensor(atoms.positions))
    energy, forces = float(reference["energy"][0].detach()), reference["forces"].detach().numpy()
    calc64 = ETCalculator(model, device="cpu", dtype="float64")
    calc32 = ETCalculator(model, device="cpu", dtype="float32")
    assert calc64.model is model and calc32.model is not model  # the caller's module keeps float64
    assert model.head.scale.dtype == torch.float64 and calc32.model.head.scale.dtype == torch.float32
    for calc, tolerance in ((calc64, 1e-12), (calc32, 1e-4)):
        atoms.calc = calc
        assert atoms.get_potential_energy() == pytest.approx(energy, rel=tolerance)
        np.testing.assert_allclose(atoms.get_forces(), forces, rtol=tolerance ** 0.5, atol=tolerance ** 0.5)
        atoms.calc = None
    # the float64 calculator still gives the exact float64 result after the float32 one was made
    atoms.calc = calc64
    atoms.positions[0, 0] += 1e-3
    moved = model(torch.tensor(atoms.numbers), torch.tensor(atoms.positions))
    assert atoms.get_potential_energy() == pytest.approx(float(moved["energy"][0].detach()), rel=1e-12)


def test_batch_evaluate_splits_batches_to_fit_memory(calc, monkeypatch):
    from forcefield_et import runtime
    from forcefield_et.data import read_rmd17

    frames = [read_rmd17(shared_path("rmd17", "rmd17_ethanol_test_01.npz"), max_frames=5).to_ase(k) for k in range(5)]
    monkeypatch.setattr(runtime, "available_memory_bytes", lambda: None)
    unconstrained = calc.batch_evaluate(frames, batch_size=4)
    sizes: list = []
    original = calc._evaluate
    monkeypatch.setattr(calc, "_evaluate", lambda z, pos, batch, *a, **k: sizes.append(int(batch.max()) + 1)
                        or original(z, pos, batch, *a, **k))
    per_edge = runtime.estimate_call_memory_bytes(1, 2, 32, 8)
    ethanol_edges = 9 * 8  # every pair of ethanol's 9 atoms lies within the cutoff
    monkeypatch.setattr(runtime, "available_memory_bytes",
                        lambda: 2.5 * ethanol_edges * per_edge / runtime.MEMORY_FRACTION)
    tight = calc.batch_evaluate(frames, batch_size=4)
    assert sizes == [2, 2, 1]
    for a, b in zip(unconstrained, tight):
        assert a["energy"] == pytest.approx(b["energy"], rel=1e-12)
        np.testing.assert_allclose(a["forces"], b["forces"], atol=1e-12)


def test_threads_argument_sets_torch_threads_for_the_calls(small_model, monkeypatch):
    from ase.build import molecule

    with pytest.raises(ValueError, match="threads must be None, 0"):
        ETCalculator(small_model, device="cpu", threads=-1)
    monkeypatch.setenv("FORCEFIELD_ET_THREADS", "zero")
    with pytest.raises(ValueError, match="FORCEFIELD_ET_THREADS must be a positive integer"):
        ETCalculator(small_model, device="cpu")
    monkeypatch.delenv("FORCEFIELD_ET_THREADS")
    from forcefield_et import runtime

    monkeypatch.setattr(runtime, "_user_set_threads", False)  # earlier tests may have set torch's count
    monkeypatch.setattr(runtime, "_threads_set_here", None)
    before = torch.get_num_threads()
    monkeypatch.setattr(runtime, "_torch_threads_at_import", before)
    try:
        water = molecule("H2O")
        water.calc = ETCalculator(small_model, device="cpu", threads=2)
        water.get_potential_energy()
        assert torch.get_num_threads() == 2
        water.calc = ETCalculator(small_model, device="cpu")  # the rule: one thread for 3 atoms
        water.get_potential_energy()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)

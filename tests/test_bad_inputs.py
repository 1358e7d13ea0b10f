"""Reliability: input the other suites do not cover, and property-based invariance checks.

Each bad input must give a specific, clear error, never a crash deep inside torch or a NaN.
The other bad-input cases live next to the code they test: tests/calculators/test_ase.py
(unknown element, NaN positions, empty structure, missing cell, invalid slab cell, corrupt model file,
non-finite output), tests/model/test_potential.py (forward dtype/shape errors, coincident atoms,
degenerate cells), tests/data/test_readers.py (missing keys, inconsistent shapes, fuzzed files),
tests/training/test_config.py (mismatched units), tests/test_checkpoint.py (pickle payloads,
truncation, checksums, future versions).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from forcefield_et import ETCalculator, build_model


def test_out_of_memory_becomes_a_clear_memory_error(small_model, monkeypatch):
    calc = ETCalculator(small_model, device="cpu", dtype="float64")

    def exhausted(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 900000000000 bytes")

    monkeypatch.setattr(calc, "_forward", exhausted)
    atoms = Atoms("CH4", positions=[[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63], [-0.63, 0.63, -0.63],
                                    [0.63, -0.63, -0.63]])
    atoms.calc = calc
    with pytest.raises(MemoryError, match="out of memory for 5 atoms"):
        atoms.get_potential_energy()


def test_structure_too_large_for_memory_is_refused_before_evaluation(small_model, monkeypatch):
    from forcefield_et import runtime

    calc = ETCalculator(small_model, device="cpu", dtype="float64")
    monkeypatch.setattr(runtime, "available_memory_bytes", lambda: 10 * 2**20)  # pretend 10 MiB are free
    monkeypatch.setattr(calc, "_forward", lambda *a, **k: pytest.fail("the model must not be called"))
    monkeypatch.setattr(calc.model, "forward_with_neighbors", lambda *a, **k: pytest.fail("must not be called"))
    rng = np.random.default_rng(0)
    atoms = Atoms("C" * 600, positions=rng.uniform(0, 20, (600, 3)))
    atoms.calc = calc
    with pytest.raises(MemoryError, match=r"600 atoms with \d+ neighbour pairs need about .* GiB"):
        atoms.get_potential_energy()


def test_memory_estimate_scales_with_edges_layers_width_and_dtype():
    from forcefield_et.runtime import estimate_call_memory_bytes

    base = estimate_call_memory_bytes(1000, 6, 128, 4)
    assert estimate_call_memory_bytes(2000, 6, 128, 4) == 2 * base
    assert estimate_call_memory_bytes(1000, 3, 128, 4) * 2 == base
    assert estimate_call_memory_bytes(1000, 6, 128, 8) == 2 * base
    # Measured peaks of a first call of the default float32 model in a fresh process
    # (benchmarks/large_systems.py, water): 7.2 GiB for 80,016 edges, 14.5 GiB for 160,074 edges.
    assert estimate_call_memory_bytes(80_016, 6, 128, 4) >= 7.2 * 2**30
    assert estimate_call_memory_bytes(160_074, 6, 128, 4) >= 14.5 * 2**30


def test_other_runtime_errors_are_not_disguised(small_model, monkeypatch):
    calc = ETCalculator(small_model, device="cpu", dtype="float64")
    monkeypatch.setattr(calc, "_forward", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        calc.get_potential_energy(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]))


def test_nonfinite_forces_during_md_name_the_call_and_atoms():
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from forcefield_et.calculators.ase import NonFiniteError

    model = build_model(hidden_channels=16, num_layers=1, num_heads=2, num_rbf=8).double()
    atoms = Atoms("OHH", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    atoms.calc = ETCalculator(model, device="cpu", dtype="float64")
    dynamics = VelocityVerlet(atoms, 0.5 * units.fs)
    dynamics.run(3)

    def poison() -> None:  # the model "explodes" after a few steps
        with torch.no_grad():
            model.head.scale.fill_(float("nan"))

    dynamics.attach(poison, interval=1)
    with pytest.raises(NonFiniteError, match=r"at call \d+ .*offending atoms: 0 \(O\), 1 \(H\), 2 \(H\)"):
        dynamics.run(5)


molecules = st.integers(min_value=2, max_value=12).flatmap(
    lambda n: st.tuples(
        st.lists(st.sampled_from([1, 6, 7, 8, 9, 16, 17]), min_size=n, max_size=n),
        st.integers(min_value=0, max_value=2**31 - 1),
    )
)


@settings(max_examples=25, deadline=None)
@given(molecule=molecules)
def test_random_molecules_invariant_and_equivariant(molecule):
    """E invariant, F equivariant under random rotations, translations and permutations."""
    numbers, seed = molecule
    rng = np.random.default_rng(seed)
    n = len(numbers)
    # Random positions with no pair closer than 0.7 Å.
    pos = rng.uniform(-2.5, 2.5, size=(n, 3))
    for _ in range(200):
        distance = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(n) * 10
        if distance.min() > 0.7:
            break
        i, j = np.unravel_index(np.argmin(distance), distance.shape)
        pos[j] += rng.normal(0, 0.5, 3)
    torch.manual_seed(0)
    model = build_model(hidden_channels=16, num_layers=2, num_heads=2, num_rbf=8).double().eval()
    z = torch.tensor(numbers)
    reference = model(z, torch.tensor(pos))
    rotation = Rotation.random(random_state=seed).as_matrix()
    shift = rng.normal(0, 3, 3)
    permutation = rng.permutation(n)
    moved = model(z[permutation], torch.tensor(pos[permutation] @ rotation.T + shift))
    energy = float(reference["energy"].detach())
    assert float(moved["energy"].detach()) == pytest.approx(energy, rel=1e-9, abs=1e-9)
    expected = reference["forces"].detach().numpy()[permutation] @ rotation.T
    np.testing.assert_allclose(moved["forces"].detach().numpy(), expected, rtol=1e-7, atol=1e-9)

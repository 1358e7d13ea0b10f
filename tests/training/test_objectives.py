"""Force-centric objectives (forcefield_et.training.objectives); batching: test_batching.py.

Hand-built batches (no shared data needed): every loss is compared with a computation written
out here from the definitions in the objectives module docstring.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from forcefield_et.data.conformations import ConformationSet
from forcefield_et.training.batching import (
    ENERGY,
    ENERGY_FORCES,
    EQUILIBRIUM,
    FORCES,
    Source,
    TensorConformations,
    build_batch,
)
from forcefield_et.training.objectives import (
    ObjectiveConfig,
    compute_loss,
    count_terms,
    prepare_equilibrium,
)

F64 = torch.float64


def make_batch(n_atoms, objective, source, seed=0, pos=None, energy=None, forces=None):
    """A batch dict as build_batch makes it: frames with ``n_atoms`` atoms each."""
    g = torch.Generator().manual_seed(seed)
    n_atoms = torch.as_tensor(n_atoms, dtype=torch.long)
    total = int(n_atoms.sum())
    return {
        "z": torch.ones(total, dtype=torch.long),
        "pos": torch.randn(total, 3, generator=g, dtype=F64) * 2 if pos is None else pos,
        "forces": torch.randn(total, 3, generator=g, dtype=F64) if forces is None else forces,
        "batch": torch.repeat_interleave(torch.arange(len(n_atoms)), n_atoms),
        "energy": torch.randn(len(n_atoms), generator=g, dtype=F64) * 10 if energy is None else energy,
        "n_atoms": n_atoms,
        "objective": torch.as_tensor(objective, dtype=torch.long),
        "source": torch.as_tensor(source, dtype=torch.long),
    }


def fake_output(batch, seed=1, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    total = batch["z"].shape[0]
    out = {
        "energy": torch.randn(len(batch["n_atoms"]), generator=g, dtype=F64) * 10,
        "forces": torch.randn(total, 3, generator=g, dtype=F64),
    }
    if requires_grad:
        for v in out.values():
            v.requires_grad_(True)
    return out


def loss_of(batch, output, weights, config, seed=0):
    if "denoised" not in batch:
        prepare_equilibrium(batch, config, torch.Generator().manual_seed(seed))
    counts = count_terms(batch, len(weights))
    return compute_loss(output, batch, torch.as_tensor(weights, dtype=F64), config, counts)


# ----------------------------------------------------------------------------- forces objective
def test_forces_objective_is_force_mse_without_energy_term():
    config = ObjectiveConfig()
    batch = make_batch([3, 5, 4], [FORCES] * 3, [0, 0, 0])
    output = fake_output(batch, requires_grad=True)
    loss, parts = loss_of(batch, output, [1.0], config)

    expected = ((output["forces"] - batch["forces"]) ** 2).sum() / 3.0 / 12  # mean over atoms of |dF|^2/3
    assert torch.allclose(loss, expected, rtol=1e-12)
    assert set(parts) == {"forces"}

    # Reference energies (and predicted energies) play no role at all.
    for shift in (1e5, -97000.0, float("nan")):
        other = dict(batch)
        other["energy"] = batch["energy"] + shift
        other_output = {"energy": output["energy"] * 3 + 7, "forces": output["forces"]}
        loss2, _ = loss_of(other, other_output, [1.0], config)
        assert torch.equal(loss2, loss)
    grad_e, grad_f = torch.autograd.grad(loss, [output["energy"], output["forces"]], allow_unused=True)
    assert grad_e is None or not grad_e.any()
    assert grad_f.abs().sum() > 0


def test_forces_objective_with_a_real_model_ignores_energy_labels(small_model):
    """Same check through TensorConformations/build_batch and a real Potential."""
    rng = np.random.default_rng(0)
    n = 6
    data = ConformationSet(
        z=np.tile([6, 1, 1, 1, 8, 1], 4), pos=rng.normal(size=(24, 3)) * 1.2, n_atoms=[n] * 4,
        energy=rng.normal(size=4), forces=rng.normal(size=(24, 3)),
    )
    shifted = data.subset(np.arange(4))
    shifted.energy = shifted.energy - 97000.0
    losses = []
    for d in (data, shifted):
        source = Source("md", d, "forces")
        batch = build_batch([TensorConformations(d, F64)], [source], [np.arange(4)])
        out = small_model(batch["z"], batch["pos"], batch["batch"])
        losses.append(loss_of(batch, out, [1.0], ObjectiveConfig())[0])
    assert float(losses[0]) > 0
    assert torch.equal(losses[0], losses[1])


# ----------------------------------------------------------------------------- equilibrium objective
def test_zero_force_loss_is_mean_squared_force_over_three():
    config = ObjectiveConfig(denoise_fraction=0.0, zero_force_weight=1.0)
    # Equilibrium frames carry no force labels: reference forces may be NaN.
    no_labels = torch.full((11, 3), float("nan"), dtype=F64)
    batch = make_batch([4, 7], [EQUILIBRIUM, EQUILIBRIUM], [0, 0], forces=no_labels)
    pos_before = batch["pos"].clone()
    output = fake_output(batch)
    loss, parts = loss_of(batch, output, [1.0], config)

    assert set(parts) == {"zero_force"}
    assert torch.equal(batch["pos"], pos_before)
    assert torch.equal(batch["forces"], torch.zeros(11, 3, dtype=F64))
    expected = (output["forces"] ** 2).sum(-1).mean() / 3.0
    assert torch.allclose(loss, expected, rtol=1e-12)

    config2 = ObjectiveConfig(denoise_fraction=0.0, zero_force_weight=2.5)
    loss2, _ = loss_of(make_batch([4, 7], [EQUILIBRIUM] * 2, [0, 0]), output, [1.0], config2)
    assert torch.allclose(loss2, 2.5 * expected, rtol=1e-12)


def test_denoising_noise_has_std_sigma_and_targets_are_minus_k_eps():
    sigma, k = 0.04, 25.0
    config = ObjectiveConfig(denoise_fraction=1.0, sigma=sigma, k=k)
    n_frames, n_at = 400, 10
    # Positions at the origin: the perturbed positions ARE eps, exactly.
    batch = make_batch([n_at] * n_frames, [EQUILIBRIUM] * n_frames, [0] * n_frames,
                       pos=torch.zeros(n_frames * n_at, 3, dtype=F64))
    prepare_equilibrium(batch, config, torch.Generator().manual_seed(123))
    eps = batch["pos"]
    assert bool(batch["denoised"].all())
    assert torch.equal(batch["forces"], -k * eps)  # exactly the harmonic restoring force
    values = eps.numpy().ravel()
    n = values.size
    assert abs(values.std() / sigma - 1) < 0.05  # statistical: relative std error ~ 1/sqrt(2n) = 0.6 %
    assert abs(values.mean()) < 5 * sigma / math.sqrt(n)
    # Components independent (no x-y coupling) and every atom moved.
    corr = np.corrcoef(eps.numpy().T)
    assert np.abs(corr - np.eye(3)).max() < 0.08
    assert (eps.norm(dim=-1) > 0).all()

    # Same generator seed -> the same noise; another seed -> other noise.
    again = make_batch([n_at] * n_frames, [EQUILIBRIUM] * n_frames, [0] * n_frames,
                       pos=torch.zeros(n_frames * n_at, 3, dtype=F64))
    prepare_equilibrium(again, config, torch.Generator().manual_seed(123))
    assert torch.equal(again["pos"], eps)
    other = make_batch([n_at] * 2, [EQUILIBRIUM] * 2, [0] * 2, pos=torch.zeros(2 * n_at, 3, dtype=F64))
    prepare_equilibrium(other, config, torch.Generator().manual_seed(124))
    assert not torch.equal(other["pos"], eps[: 2 * n_at])


def test_denoising_on_real_positions_and_loss():
    config = ObjectiveConfig(denoise_fraction=1.0, sigma=0.05, k=10.0, denoise_weight=0.7)
    batch = make_batch([5, 6], [EQUILIBRIUM, EQUILIBRIUM], [0, 0])
    x_eq = batch["pos"].clone()
    prepare_equilibrium(batch, config, torch.Generator().manual_seed(0))
    eps = batch["pos"] - x_eq
    assert torch.allclose(batch["forces"], -10.0 * eps, rtol=0, atol=1e-12)
    assert 0.01 < float(eps.std()) < 0.1
    output = fake_output(batch)
    loss, parts = compute_loss(output, batch, torch.ones(1, dtype=F64), config, count_terms(batch, 1))
    assert set(parts) == {"denoise"}
    expected = 0.7 * ((output["forces"] + 10.0 * eps) ** 2).sum(-1).mean() / 3
    assert torch.allclose(loss, expected, rtol=1e-9)


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_denoise_fraction_extremes(fraction):
    config = ObjectiveConfig(denoise_fraction=fraction)
    objective = [EQUILIBRIUM, FORCES, EQUILIBRIUM, ENERGY_FORCES, EQUILIBRIUM, FORCES] * 10
    n_atoms = [3, 4, 5, 2, 6, 3] * 10
    batch = make_batch(n_atoms, objective, [0] * len(objective))
    before = {k: v.clone() for k, v in batch.items()}
    prepare_equilibrium(batch, config, torch.Generator().manual_seed(7))
    eq = torch.as_tensor(objective) == EQUILIBRIUM
    eq_atoms = eq[batch["batch"]]
    # Non-equilibrium frames are never touched.
    assert not bool(batch["denoised"][~eq].any())
    assert torch.equal(batch["pos"][~eq_atoms], before["pos"][~eq_atoms])
    assert torch.equal(batch["forces"][~eq_atoms], before["forces"][~eq_atoms])
    moved = (batch["pos"] != before["pos"]).any(-1)
    if fraction == 0.0:
        assert not bool(batch["denoised"].any())
        assert not bool(moved.any())
        assert torch.equal(batch["forces"][eq_atoms], torch.zeros(int(eq_atoms.sum()), 3, dtype=F64))
    else:
        assert torch.equal(batch["denoised"], eq)
        assert bool(moved[eq_atoms].all())


def test_denoise_fraction_half_is_a_per_frame_coin():
    config = ObjectiveConfig(denoise_fraction=0.5)
    n = 2000
    batch = make_batch([2] * n, [EQUILIBRIUM] * n, [0] * n)
    before = batch["pos"].clone()
    prepare_equilibrium(batch, config, torch.Generator().manual_seed(3))
    d = batch["denoised"]
    assert abs(float(d.double().mean()) - 0.5) < 4 * math.sqrt(0.25 / n)
    moved_atoms = (batch["pos"] != before).any(-1)
    assert torch.equal(moved_atoms, d[batch["batch"]])  # whole frames, all-or-nothing
    # zero-force frames keep zero targets, denoised frames get non-zero ones
    clean = ~d[batch["batch"]]
    assert not bool(batch["forces"][clean].any())
    assert bool((batch["forces"][~clean].norm(dim=-1) > 0).all())


def test_objective_config_rejects_bad_values():
    with pytest.raises(ValueError, match="denoise_fraction"):
        ObjectiveConfig(denoise_fraction=1.5)
    with pytest.raises(ValueError, match="sigma"):
        ObjectiveConfig(sigma=-0.1)


# ----------------------------------------------------------------------------- weights
def test_per_source_weights_scale_the_loss_linearly():
    config = ObjectiveConfig(denoise_fraction=0.0)
    objective = [FORCES, FORCES, EQUILIBRIUM, FORCES, ENERGY_FORCES]
    source = [0, 1, 1, 0, 2]
    batch = make_batch([3, 4, 5, 2, 3], objective, source)
    prepare_equilibrium(batch, config, torch.Generator().manual_seed(0))
    output = fake_output(batch)
    counts = count_terms(batch, 3)

    def loss(w):
        return float(compute_loss(output, batch, torch.tensor(w, dtype=F64), config, counts)[0])

    basis = [loss([1, 0, 0]), loss([0, 1, 0]), loss([0, 0, 1])]
    assert all(b > 0 for b in basis)
    for w in ([1, 1, 1], [2, 0.5, 3], [0, 0, 0], [10, 1, 0.1]):
        expected = sum(wi * bi for wi, bi in zip(w, basis, strict=True))
        assert loss(w) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert loss([3, 0, 0]) == pytest.approx(3 * basis[0], rel=1e-12)


def test_denominators_are_per_source_counts_and_accept_global_counts():
    """Each term of each source is a mean over that source's atoms/frames; passing counts summed
    over data-parallel workers (here: doubled) halves the loss exactly."""
    config = ObjectiveConfig()
    batch = make_batch([2, 7], [FORCES, FORCES], [0, 1])
    output = fake_output(batch)
    loss, _ = loss_of(batch, output, [1.0, 1.0], config)
    err = ((output["forces"] - batch["forces"]) ** 2).sum(-1) / 3
    expected = err[:2].mean() + err[2:].mean()  # per-source means, not one mean over 9 atoms
    assert torch.allclose(loss, expected, rtol=1e-12)
    counts = count_terms(batch, 2)
    half, _ = compute_loss(output, batch, torch.ones(2, dtype=F64), config, 2 * counts)
    assert torch.allclose(half, loss / 2, rtol=1e-12)


# ----------------------------------------------------------------------------- energy + forces
def test_energy_forces_loss_matches_hand_computation():
    config = ObjectiveConfig(energy_weight=2.0, force_weight=5.0)
    batch = make_batch(
        [2, 3], [ENERGY_FORCES, ENERGY_FORCES], [0, 0],
        energy=torch.tensor([-10.0, -20.0], dtype=F64),
        forces=torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [0, 0, 0]], dtype=F64),
    )
    output = {
        "energy": torch.tensor([-9.0, -23.0], dtype=F64),
        "forces": torch.tensor([[1, 0, 0], [0, 2, 0], [0, 0, 1], [1, 1, 1], [3, 0, 0]], dtype=F64),
    }
    loss, parts = loss_of(batch, output, [0.5], config)
    # energy: per-atom errors 1/2 and -3/3 -> mean of squares (0.25 + 1) / 2 = 0.625
    # forces: squared errors per atom 0, 1, 0, 0, 9 -> /3 -> mean over 5 atoms = 10/15
    energy_term = 0.5 * 2.0 * 0.625
    force_term = 0.5 * 5.0 * (10.0 / 15.0)
    assert parts["energy"] == pytest.approx(energy_term, rel=1e-12)
    assert parts["ef_forces"] == pytest.approx(force_term, rel=1e-12)
    assert float(loss) == pytest.approx(energy_term + force_term, rel=1e-12)


def test_stress_term_is_the_virial_per_atom_mse_of_the_labelled_periodic_frames():
    config = ObjectiveConfig(energy_weight=0.0, force_weight=0.0, stress_weight=3.0)
    batch = make_batch([2, 4, 3], [ENERGY_FORCES, ENERGY_FORCES, FORCES], [0, 0, 0])
    batch["cell"] = torch.stack([torch.eye(3, dtype=F64) * a for a in (4.0, 5.0, 6.0)])
    target = torch.zeros(3, 3, 3, dtype=F64)
    target[1] = float("nan")  # the second frame has no stress label
    batch["stress"] = target
    predicted = torch.zeros(3, 3, 3, dtype=F64)
    predicted[0, 0, 1] = predicted[0, 1, 0] = 0.01  # eV/Å³
    predicted[2, 2, 2] = 1.0  # a "forces" frame: no stress term
    output = {**fake_output(batch), "stress": predicted}
    loss, parts = loss_of(batch, output, [0.5], config)
    # frame 0 alone: virial per atom 0.01 * 64 Å³ / 2 atoms = 0.32 eV in two of nine components
    expected = 0.5 * 3.0 * (2 * 0.32**2 / 9)
    assert parts["stress"] == pytest.approx(expected, rel=1e-12)
    assert parts["energy"] == parts["ef_forces"] == 0.0  # weights 0; the third frame's forces term has weight 1
    assert float(loss) == pytest.approx(parts["stress"] + parts["forces"], rel=1e-12)
    assert count_terms(batch, 1)[-1].tolist() == [1.0]
    assert loss_of(batch, output, [0.5], ObjectiveConfig(stress_weight=0.0))[1]["stress"] == 0.0


def test_stress_labels_reach_the_batch_for_frames_periodic_in_three_directions():
    rng = np.random.default_rng(0)
    cells = np.stack([np.eye(3) * 6.0, np.diag([6.0, 6.0, 0.0])])  # a box and a slab
    stress = rng.normal(size=(2, 3, 3)) * 1e-3
    data = ConformationSet(z=np.array([8, 1, 1] * 2), pos=rng.normal(size=(6, 3)) + 3.0, n_atoms=[3, 3],
                           energy=[-1.0, -2.0], forces=rng.normal(size=(6, 3)), cell=cells,
                           properties={"stress": stress})
    batch = TensorConformations(data, F64, cutoff=5.0).gather(torch.arange(2))
    np.testing.assert_array_equal(batch["stress"][0].numpy(), stress[0])
    assert torch.isnan(batch["stress"][1]).all()  # a slab's stress is not the completed cell's derivative
    unlabelled = ConformationSet(z=data.z, pos=data.pos, n_atoms=data.n_atoms, energy=data.energy,
                                 forces=data.forces, cell=cells)
    assert torch.isnan(TensorConformations(unlabelled, F64, cutoff=5.0).gather(torch.arange(2))["stress"]).all()


def test_molecules_get_cells_that_change_nothing_and_share_a_batch_with_periodic_frames(small_model):
    rng = np.random.default_rng(2)
    box = ConformationSet(z=np.array([8, 1, 1]), pos=rng.uniform(0, 4, (3, 3)), n_atoms=[3], energy=[0.0],
                          forces=np.zeros((3, 3)), cell=np.eye(3)[None] * 5.0)
    molecule = ConformationSet(z=np.array([6, 1, 1, 1, 1]), pos=np.array(
        [[0, 0, 0], [1.09, 0, 0], [-0.36, 1.03, 0], [-0.36, -0.51, 0.89], [-0.36, -0.51, -0.89]], dtype=float),
        n_atoms=[5], forces=np.zeros((5, 3)))
    sources = [Source("boxes", box, "energy_forces"), Source("replay", molecule, "forces")]
    cutoff = float(small_model.cutoff)
    with pytest.raises(ValueError, match="periodic=True"):
        build_batch([TensorConformations(box, F64, cutoff), TensorConformations(molecule, F64, cutoff)], sources,
                    [np.arange(1), np.arange(1)])
    tensors = [TensorConformations(box, F64, cutoff), TensorConformations(molecule, F64, cutoff, periodic=True)]
    batch = build_batch(tensors, sources, [np.arange(1), np.arange(1)])
    assert batch["cell"].shape == (2, 3, 3) and torch.isnan(batch["stress"][1]).all()
    together = small_model(batch["z"], batch["pos"], batch["batch"], batch["cell"])
    alone = small_model(torch.as_tensor(molecule.z), torch.as_tensor(molecule.pos))
    torch.testing.assert_close(together["energy"][1:], alone["energy"], rtol=0, atol=1e-10)
    torch.testing.assert_close(together["forces"][3:], alone["forces"], rtol=0, atol=1e-10)


def test_a_stress_loss_trains_the_model_stress(small_model):
    """With the stress term alone, a few optimiser steps move the model's stress (1/V dE/d strain,
    differentiated twice) towards the labels of periodic boxes."""
    rng = np.random.default_rng(3)
    n_frames = 4
    cells = np.stack([np.eye(3) * 4.5] * n_frames)
    data = ConformationSet(z=np.array([8, 1, 1, 8, 1, 1] * n_frames), pos=rng.uniform(0, 4.5, size=(6 * n_frames, 3)),
                           n_atoms=[6] * n_frames, energy=np.zeros(n_frames), forces=np.zeros((6 * n_frames, 3)),
                           cell=cells, properties={"stress": rng.normal(size=(n_frames, 3, 3)) * 0.02})
    data.properties["stress"] = 0.5 * (data.properties["stress"] + data.properties["stress"].transpose(0, 2, 1))
    source = Source("boxes", data, "energy_forces")
    batch = build_batch([TensorConformations(data, F64, cutoff=5.0)], [source], [np.arange(n_frames)])
    config = ObjectiveConfig(energy_weight=0.0, force_weight=0.0, stress_weight=1.0)
    model = small_model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        out = model(batch["z"], batch["pos"], batch["batch"], batch["cell"])
        loss, parts = loss_of(dict(batch), out, [1.0], config)
        assert parts["energy"] == parts["ef_forces"] == 0.0 and parts["stress"] > 0
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses


def test_unlabelled_entries_do_not_poison_gradients(small_model):
    """An ``energy`` source (e.g. QM9 U0: no forces) mixed with a ``forces`` source whose frames
    have no energies: the missing labels (NaN) are masked out of the loss, so they must not turn
    the gradients into NaN either (0 * NaN = NaN in a backward pass through unmasked errors)."""
    rng = np.random.default_rng(1)
    mol = dict(z=np.array([6, 1, 1, 1, 1] * 2), n_atoms=[5, 5])
    energy_only = ConformationSet(pos=rng.normal(size=(10, 3)) * 1.3, energy=[-1.0, -2.0], **mol)
    forces_only = ConformationSet(pos=rng.normal(size=(10, 3)) * 1.3, forces=rng.normal(size=(10, 3)), **mol)
    sources = [Source("u0", energy_only, "energy"), Source("md", forces_only, "forces")]
    tensors = [TensorConformations(s.data, F64) for s in sources]
    batch = build_batch(tensors, sources, [np.arange(2), np.arange(2)])
    assert torch.isnan(batch["forces"]).any() and torch.isnan(batch["energy"]).any()
    model = small_model.train()
    out = model(batch["z"], batch["pos"], batch["batch"])
    loss, parts = loss_of(batch, out, [1.0, 1.0], ObjectiveConfig())
    assert set(parts) == {"energy", "forces"}
    assert math.isfinite(float(loss.detach()))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), f"non-finite gradient in {name}"


def test_count_terms_counts_atoms_and_frames_per_source():
    config = ObjectiveConfig(denoise_fraction=0.0)
    batch = make_batch([3, 4, 5, 2], [FORCES, EQUILIBRIUM, ENERGY_FORCES, ENERGY], [0, 1, 2, 2])
    prepare_equilibrium(batch, config, torch.Generator().manual_seed(0))
    counts = count_terms(batch, 3)
    # rows: forces, zero_force, denoise, ef_forces, energy, stress (no cell: no stress term)
    expected = torch.tensor([[3, 0, 0], [0, 4, 0], [0, 0, 0], [0, 0, 5], [0, 0, 2], [0, 0, 0]], dtype=F64)
    assert torch.equal(counts, expected)

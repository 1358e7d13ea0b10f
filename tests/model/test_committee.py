"""Committee: mean and spread of member potentials on one neighbour list."""

from __future__ import annotations

import copy

import pytest
import torch

from forcefield_et import build_model
from forcefield_et.model import Committee
from tests.conftest import tiny_potential


def molecule():
    torch.manual_seed(123)
    z = torch.tensor([6, 6, 8, 1, 1, 1], dtype=torch.long)
    pos = torch.tensor(
        [[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [2.2, 1.1, 0.0], [-0.5, 0.9, 0.1], [-0.4, -0.9, 0.2], [2.0, -0.9, -0.3]],
        dtype=torch.float64,
    )
    return z, pos + 0.05 * torch.randn_like(pos)


def test_identical_members_give_zero_spread_and_the_single_model_result():
    model = tiny_potential(0)
    committee = Committee([model, copy.deepcopy(model), copy.deepcopy(model)])
    z, pos = molecule()
    single = model(z, pos)
    out = committee(z, pos)
    torch.testing.assert_close(out["energy"], single["energy"])
    torch.testing.assert_close(out["forces"], single["forces"])
    assert out["forces_std"].shape == (len(z),)
    assert float(out["energy_std"].detach().abs().max()) < 1e-10
    assert float(out["forces_std"].abs().max()) < 1e-10


def test_mean_and_std_of_different_members():
    members = [tiny_potential(seed) for seed in (1, 2, 3)]
    z, pos = molecule()
    outputs = [m(z, pos) for m in members]
    energies = torch.stack([o["energy"] for o in outputs])  # [M, 1]
    forces = torch.stack([o["forces"] for o in outputs])  # [M, N, 3]
    out = Committee(members)(z, pos)
    torch.testing.assert_close(out["energy"], energies.mean(0))
    torch.testing.assert_close(out["forces"], forces.mean(0))
    torch.testing.assert_close(out["energy_std"], energies.std(0, unbiased=False))
    # per atom: sqrt(mean over members of |F_m - F_mean|^2), by an explicit loop
    for atom in range(len(z)):
        deviations = [float((forces[m, atom] - forces[:, atom].mean(0)).norm()) ** 2 for m in range(3)]
        assert float(out["forces_std"][atom]) == pytest.approx((sum(deviations) / 3) ** 0.5, rel=1e-10)
    assert float(out["forces_std"].min()) > 0  # different weights disagree
    assert out["member_forces"].shape == (3, len(z), 3)


def test_mean_forces_are_minus_the_gradient_of_the_mean_energy():
    committee = Committee([tiny_potential(seed) for seed in (4, 5)])
    z, pos = molecule()
    forces = committee(z, pos)["forces"]
    step = 1e-5
    for atom, axis in ((0, 0), (2, 1), (5, 2)):
        plus, minus = pos.clone(), pos.clone()
        plus[atom, axis] += step
        minus[atom, axis] -= step
        numeric = -(committee(z, plus)["energy"] - committee(z, minus)["energy"]) / (2 * step)
        assert float(forces[atom, axis].detach()) == pytest.approx(float(numeric.detach()), abs=1e-6)


def test_batched_committee_matches_one_structure_at_a_time_and_averages_stress():
    committee = Committee([tiny_potential(seed) for seed in (6, 7)])
    z, pos = molecule()
    pos2 = pos + 0.1 * torch.randn_like(pos)
    batch = torch.repeat_interleave(torch.arange(2), len(z))
    out = committee(torch.cat([z, z]), torch.cat([pos, pos2]), batch)
    for k, p in enumerate((pos, pos2)):
        one = committee(z, p)
        torch.testing.assert_close(out["energy"][k], one["energy"][0])
        torch.testing.assert_close(out["forces_std"][k * len(z) : (k + 1) * len(z)], one["forces_std"])
    cell = torch.eye(3, dtype=torch.float64) * 8.0
    periodic = committee(z, pos + 2.0, None, cell)
    stresses = [m(z, pos + 2.0, None, cell)["stress"] for m in committee.members]
    torch.testing.assert_close(periodic["stress"], (stresses[0] + stresses[1]) / 2)


def test_members_must_share_cutoff_and_elements():
    torch.manual_seed(0)
    other = build_model(hidden_channels=16, num_layers=1, num_heads=2, num_rbf=8, cutoff=4.0).double()
    with pytest.raises(ValueError, match="cutoff"):
        Committee([tiny_potential(0), other])
    with pytest.raises(ValueError, match="at least 2"):
        Committee([tiny_potential(0)])

"""The ZBL repulsion prior: physics (repulsive, F = -dE/dr, smooth switch-off at the covalent
radii), and that it changes nothing of models without it."""

from __future__ import annotations

import pytest
import torch

from forcefield_et import build_model, load_model
from forcefield_et.model.priors import ZBLRepulsion, covalent_radii


def pair_energy(prior, z1, z2, r, elements):
    index = {z: k for k, z in enumerate(elements)}
    distance = torch.tensor([r], dtype=torch.float64)
    return prior.pair_energies(torch.tensor([index[z1]]), torch.tensor([index[z2]]), distance)


def test_zbl_matches_the_universal_formula_and_vanishes_beyond_the_covalent_sum():
    elements = [1, 6, 8]
    prior = ZBLRepulsion(elements).double()
    # C-C at 0.5 Å, by hand: a = 0.46850 / (2 * 6^0.23), phi from the four ZBL terms, switch at 2 r_cov(C)
    r, z = 0.5, 6.0
    a = 0.46850 / (2 * z**0.23)
    phi = sum(c * torch.exp(torch.tensor(-e * r / a, dtype=torch.float64)) for c, e in
              zip((0.18175, 0.50986, 0.28022, 0.02817), (3.19980, 0.94229, 0.40290, 0.20162)))
    u = r / (2 * covalent_radii([6])[0])
    switch = 1 - 28 * u**6 + 48 * u**7 - 21 * u**8
    expected = 14.399645 * z * z / r * phi * switch
    assert float(pair_energy(prior, 6, 6, r, elements)) == pytest.approx(float(expected), rel=1e-10)
    r_cut = sum(covalent_radii([6, 8]))
    assert float(pair_energy(prior, 6, 8, r_cut, elements)) == 0.0
    assert float(pair_energy(prior, 6, 8, r_cut + 0.3, elements)) == 0.0
    # monotonically repulsive below the cut
    energies = [float(pair_energy(prior, 1, 8, r, elements)) for r in (0.2, 0.4, 0.6, 0.8)]
    assert all(a > b > 0 for a, b in zip(energies, energies[1:]))


def test_switch_is_smooth_at_the_cut():
    """Energy and force fall to zero at r_cut as (r_cut - r)^3 and (r_cut - r)^2: no kink or jump."""
    prior = ZBLRepulsion([6]).double()
    r_cut = 2 * covalent_radii([6])[0]

    def energy_and_force(gap):
        r = torch.tensor([r_cut - gap], dtype=torch.float64, requires_grad=True)
        energy = prior.pair_energies(torch.tensor([0]), torch.tensor([0]), r)
        (grad,) = torch.autograd.grad(energy.sum(), r)
        return float(energy.detach()), float(-grad)

    (e1, f1), (e2, f2) = energy_and_force(2e-3), energy_and_force(1e-3)
    assert 0 < e1 < 1e-6 and 0 < f1 < 1e-3
    assert e1 / e2 == pytest.approx(8.0, rel=0.01) and f1 / f2 == pytest.approx(4.0, rel=0.01)


def test_model_with_zbl_pushes_fused_atoms_apart_and_forces_are_the_gradient():
    torch.manual_seed(0)
    model = build_model(hidden_channels=16, num_layers=1, num_heads=2, num_rbf=8, zbl=True).double().eval()
    z = torch.tensor([6, 6, 1])
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.05, 0.0], [0.1, 1.0, 0.2]], dtype=torch.float64)
    out = model(z, pos)
    assert float(out["forces"][0, 0]) < -100 and float(out["forces"][1, 0]) > 100  # C-C at 0.3 Å repelled
    step = 1e-5
    for atom, axis in ((0, 0), (2, 1)):
        shifted = []
        for sign in (1, -1):
            p = pos.clone()
            p[atom, axis] += sign * step
            shifted.append(float(model(z, p)["energy"].detach()))
        numeric = -(shifted[0] - shifted[1]) / (2 * step)
        assert float(out["forces"][atom, axis]) == pytest.approx(numeric, rel=1e-6, abs=1e-6)


def test_zbl_is_off_by_default_and_adds_no_state():
    model = load_model("pretrained")
    assert not model.use_zbl and "zbl" not in model.hyperparameters
    reference = build_model(**{k: v for k, v in model.hyperparameters.items()})
    assert sorted(reference.state_dict()) == sorted(model.state_dict())
    z = torch.tensor([8, 1, 1])
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    before = model(z, pos)
    model.set_zbl(True)
    with_zbl = model(z, pos)
    model.set_zbl(False)
    after = model(z, pos)
    assert torch.equal(before["energy"], after["energy"]) and torch.equal(before["forces"], after["forces"])
    # O-H at 0.96 Å is within r_cov(O) + r_cov(H) = 0.97 Å: a small, positive repulsion
    assert 0 < float((with_zbl["energy"] - before["energy"]).detach()) < 1e-3


def test_zbl_model_round_trips_through_checkpoint_and_torchscript(tmp_path):
    from forcefield_et.checkpoint import save_checkpoint

    torch.manual_seed(1)
    model = build_model(hidden_channels=16, num_layers=1, num_heads=2, num_rbf=8, zbl=True).eval()
    save_checkpoint(tmp_path / "m.pt", model)
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.use_zbl
    z = torch.tensor([6, 6])
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.7, 0.0, 0.0]])
    scripted = torch.jit.script(loaded)
    assert torch.allclose(scripted(z, pos)["energy"], model(z, pos)["energy"])
    assert torch.allclose(scripted(z, pos)["forces"], model(z, pos)["forces"])


def test_radius_scale_moves_the_switching_distance():
    prior = ZBLRepulsion([6, 8], radius_scale=0.75).double()
    r_cut = 0.75 * sum(covalent_radii([6, 8]))
    c, o = torch.tensor([0]), torch.tensor([1])
    at = torch.tensor([r_cut, r_cut - 0.05], dtype=torch.float64)
    energies = prior.pair_energies(torch.cat([c, c]), torch.cat([o, o]), at)
    assert float(energies[0]) == 0.0 and float(energies[1]) > 0.0
    with pytest.raises(ValueError, match="radius_scale"):
        ZBLRepulsion([6], radius_scale=0.0)
    model = build_model(hidden_channels=16, num_layers=1, num_heads=2, num_rbf=8, zbl=0.75)
    assert model.hyperparameters["zbl"] == 0.75 and model.use_zbl
    model.set_zbl(True)
    assert model.hyperparameters["zbl"] is True

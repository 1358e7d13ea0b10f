"""Output heads (``forcefield_et.model.heads``): per-structure sums, the energy zero of isolated
atoms, and the symmetry of the property and dipole heads on ET features of a real molecule
(the bundled aspirin geometry; random weights, float64)."""

from __future__ import annotations

import math

import pytest
import torch
from ase.io import read

from forcefield_et.model import DipoleHead, EnergyHead, EquivariantTransformer, ScalarPropertyHead
from forcefield_et.model.heads import sum_per_structure
from forcefield_et.neighbors import radius_graph
from forcefield_et.structures import structure_path


def _rotation(seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q * torch.sign(torch.linalg.det(q))  # proper rotation


def _features(pos: torch.Tensor, element: torch.Tensor, batch: torch.Tensor, n_elements: int, seed: int = 0):
    """ET features of ``pos`` [N, 3] (Å): x [N, F] and vec [N, 3, F]."""
    torch.manual_seed(seed)
    et = EquivariantTransformer(n_elements, hidden_channels=32, num_layers=2, num_heads=4, num_rbf=16).double()
    edge_index, _ = radius_graph(pos, 5.0, batch)
    edge_vectors = pos[edge_index[1]] - pos[edge_index[0]]
    return et(element, edge_index, edge_vectors, True)


@pytest.fixture(scope="module")
def two_aspirins():
    """Two aspirin copies (the second one rotated and shifted) as one batch of 42 atoms."""
    atoms = read(structure_path("aspirin.xyz"))
    pos = torch.tensor(atoms.positions, dtype=torch.float64)
    z = torch.tensor(atoms.numbers)
    elements = sorted(set(z.tolist()))
    element = torch.tensor([elements.index(v) for v in z.tolist()])
    second = pos @ _rotation(1).T + torch.tensor([20.0, 0.0, 0.0], dtype=torch.float64)
    batch = torch.cat([torch.zeros(len(z), dtype=torch.long), torch.ones(len(z), dtype=torch.long)])
    return torch.cat([pos, second]), torch.cat([element, element]), batch, len(elements)


def test_sum_per_structure_matches_a_loop_for_scalars_and_vectors():
    batch = torch.tensor([0, 0, 2, 2, 2, 1])
    values = torch.arange(6.0, dtype=torch.float64)
    vectors = torch.arange(18.0, dtype=torch.float64).reshape(6, 3)
    assert sum_per_structure(values, batch, 4).tolist() == [1.0, 5.0, 9.0, 0.0]
    expected = torch.stack([vectors[batch == b].sum(0) for b in range(4)])
    torch.testing.assert_close(sum_per_structure(vectors, batch, 4), expected)
    scripted = torch.jit.script(sum_per_structure)
    torch.testing.assert_close(scripted(vectors, batch, 4), expected)


def test_energy_head_gives_isolated_atoms_exactly_shift_plus_reference_energy():
    torch.manual_seed(0)
    head = EnergyHead(16, num_elements=3).double()
    head.scale.fill_(2.5)
    head.shift.fill_(-0.3)
    head.atomic_energies.copy_(torch.tensor([-13.6, -1030.0, -2040.0]))
    x_isolated = torch.randn(3, 16, dtype=torch.float64)
    element = torch.tensor([2, 0, 1, 0])
    x = x_isolated[element]  # each atom looks exactly like its isolated reference
    energies = head(x, element, torch.tensor([0, 0, 1, 1]), 2, x_isolated)
    expected = torch.tensor([-2040.0 - 13.6 - 0.6, -1030.0 - 13.6 - 0.6], dtype=torch.float64)
    torch.testing.assert_close(energies, expected)


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_scalar_property_head_is_invariant_and_reduces_per_molecule(two_aspirins, reduce):
    pos, element, batch, n_elements = two_aspirins
    x, vec = _features(pos, element, batch, n_elements)
    torch.manual_seed(1)
    head = ScalarPropertyHead(32, n_elements, reduce=reduce).double()
    values = head(x, vec, element, pos, batch, 2)
    assert values.shape == (2,)
    # the second copy is the first one rotated and moved: the same molecule, the same property
    torch.testing.assert_close(values[0], values[1], rtol=1e-9, atol=1e-9)
    single = head(x[:21], vec[:21], element[:21], pos[:21], batch[:21], 1)
    torch.testing.assert_close(single, values[:1])
    per_atom = head.mlp(x[:21]).squeeze(-1) * head.scale + head.atomic_offsets[element[:21]]
    total = per_atom.sum() / (21 if reduce == "mean" else 1) + head.shift
    torch.testing.assert_close(values[0], total)


def test_scalar_property_head_rejects_an_unknown_reduction():
    with pytest.raises(ValueError, match="'sum' or 'mean'"):
        ScalarPropertyHead(16, 3, reduce="max")


def test_dipole_head_is_rotation_equivariant_and_translation_invariant(two_aspirins):
    pos, element, batch, n_elements = two_aspirins
    rotation = _rotation(1)
    x, vec = _features(pos, element, batch, n_elements)
    torch.manual_seed(2)
    head = DipoleHead(32).double()
    dipoles = head(x, vec, element, pos, batch, 2)
    assert dipoles.shape == (2, 3)
    norms = dipoles.detach().norm(dim=1)
    assert math.isfinite(float(norms.sum())) and float(norms.min()) > 0
    # copy 1 is copy 0 rotated (and translated): its dipole is copy 0's, rotated
    torch.testing.assert_close(dipoles[1], rotation @ dipoles[0], rtol=1e-8, atol=1e-10)
    # charges are neutralised per molecule, so a rigid shift of one molecule changes nothing
    shifted = pos.clone()
    shifted[:21] += torch.tensor([3.0, -7.0, 11.0], dtype=torch.float64)
    x2, vec2 = _features(shifted, element, batch, n_elements)
    torch.testing.assert_close(head(x2, vec2, element, shifted, batch, 2), dipoles, rtol=1e-8, atol=1e-10)

"""Tests of ``forcefield_et.neighbors``: radius graphs against independent references.

References used here:
- ``_numpy_reference``: an independent all-pairs numpy implementation (non-periodic, any batch
  order), written here so that it shares no code with ``forcefield_et.neighbors``;
- ``matscipy.neighbours.neighbour_list('ijS')`` for periodic structures (same convention:
  D = pos[j] - pos[i] + S @ cell);
- ``brute_force_reference`` from the package (O(N^2 images)).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from matscipy.neighbours import neighbour_list

from forcefield_et.neighbors import (
    brute_force_reference,
    edges_as_set,
    radius_graph,
    torch_cluster_radius_graph,
)
from tests.conftest import shared_path

CUTOFF = 5.0


# ----------------------------------------------------------------------------- helpers


def _numpy_reference(pos: np.ndarray, cutoff: float, batch: np.ndarray | None = None) -> set:
    """All (i, j, 0, 0, 0) with i != j in the same structure and |pos[j] - pos[i]| < cutoff."""
    pos = np.asarray(pos, dtype=np.float64)
    batch = np.zeros(len(pos), dtype=np.int64) if batch is None else np.asarray(batch)
    out = set()
    for s in np.unique(batch):
        idx = np.nonzero(batch == s)[0]
        d2 = ((pos[idx][None, :, :] - pos[idx][:, None, :]) ** 2).sum(-1)
        ii, jj = np.nonzero(d2 < cutoff * cutoff)
        for a, b in zip(idx[ii].tolist(), idx[jj].tolist(), strict=True):
            if a != b:
                out.add((a, b, 0, 0, 0))
    return out


def _matscipy_set(pos: np.ndarray, cell: np.ndarray, cutoff: float, offset: int = 0) -> set:
    i, j, S = neighbour_list(
        "ijS",
        positions=np.asarray(pos, np.float64),
        cell=np.asarray(cell, np.float64),
        pbc=[True, True, True],
        cutoff=cutoff,
    )
    return {(a + offset, b + offset, *s) for a, b, s in zip(i.tolist(), j.tolist(), S.tolist(), strict=True)}


def _matscipy_batched(pos: np.ndarray, cell: np.ndarray, batch: np.ndarray, cutoff: float) -> set:
    """matscipy per structure, atom indices mapped back to the (possibly unsorted) batch."""
    out = set()
    for s in range(cell.shape[0]):
        idx = np.nonzero(batch == s)[0]
        for a, b, *shift in _matscipy_set(pos[idx], cell[s], cutoff):
            out.add((int(idx[a]), int(idx[b]), *shift))
    return out


def _graph_set(pos, cutoff, batch=None, cell=None, method="auto") -> set:
    edge_index, shifts = radius_graph(pos, cutoff, batch, cell, method)
    _check_output_contract(pos, cutoff, batch, cell, edge_index, shifts)
    return edges_as_set(edge_index, shifts)


def _check_output_contract(pos, cutoff, batch, cell, edge_index, shifts) -> None:
    """Shapes/dtypes, integer shifts, every edge vector shorter than the cutoff, no duplicates."""
    assert edge_index.dtype == torch.long and edge_index.dim() == 2 and edge_index.shape[0] == 2
    assert shifts.shape == (edge_index.shape[1], 3) and shifts.dtype == pos.dtype
    assert torch.equal(shifts, shifts.round()), "shifts must be integer-valued"
    if cell is None:
        assert not bool(shifts.any()), "shifts must be zero without a cell"
    if edge_index.shape[1] == 0:
        return
    if batch is None:
        batch = torch.zeros(pos.shape[0], dtype=torch.long)
    i, j = edge_index
    assert torch.equal(batch[i], batch[j]), "edge between different structures"
    vec = pos[j] - pos[i]
    if cell is not None:
        c = cell if cell.dim() == 3 else cell.unsqueeze(0)
        vec = vec + torch.bmm(shifts.unsqueeze(1), c[batch[i]]).squeeze(1)
    dist = vec.norm(dim=-1)
    assert float(dist.max()) < cutoff * (1 + 1e-9)
    assert len(edges_as_set(edge_index, shifts)) == edge_index.shape[1], "duplicate edges"


def _random_molecules(rng: np.random.Generator, sizes, box: float = 8.0):
    pos = np.concatenate([rng.uniform(0.0, box, size=(n, 3)) for n in sizes])
    batch = np.concatenate([np.full(n, s) for s, n in enumerate(sizes)])
    return torch.tensor(pos), torch.tensor(batch, dtype=torch.long)


def _water_box():
    """(pos [192, 3] float64 Å, as stored: partly outside the cell; cell [3, 3])."""
    folder = shared_path("water", "data_0")
    coord = np.load(folder / "set.000" / "coord.npy")[0].reshape(-1, 3)
    box = np.load(folder / "set.000" / "box.npy")[0].reshape(3, 3)
    return torch.tensor(coord, dtype=torch.float64), torch.tensor(box, dtype=torch.float64)


def _triclinic_cell() -> torch.Tensor:
    return torch.tensor([[9.0, 0.0, 0.0], [3.1, 8.2, 0.0], [-2.0, 2.5, 8.7]], dtype=torch.float64)


def _assert_symmetric(edge_set: set) -> None:
    """Every (i, j, S) has its partner (j, i, -S); no self pair without a shift."""
    for i, j, sx, sy, sz in edge_set:
        assert (j, i, -sx, -sy, -sz) in edge_set
        assert not (i == j and sx == 0 and sy == 0 and sz == 0)


# ----------------------------------------------------------------------------- non-periodic


@pytest.mark.parametrize("method", ["auto", "brute", "cell"])
def test_random_molecules_batched_match_references(method):
    rng = np.random.default_rng(1)
    pos, batch = _random_molecules(rng, [3, 21, 1, 40, 12, 2])
    expected = _numpy_reference(pos.numpy(), CUTOFF, batch.numpy())
    assert len(expected) > 500
    assert _graph_set(pos, CUTOFF, batch, method=method) == expected
    assert edges_as_set(*brute_force_reference(pos, CUTOFF, batch)) == expected


@pytest.mark.parametrize("method", ["auto", "brute", "cell"])
def test_unsorted_batch_vector(method):
    """Atoms of different structures interleaved (batch not sorted): no cross-structure edges."""
    rng = np.random.default_rng(2)
    pos, batch = _random_molecules(rng, [15, 9, 30, 4])
    perm = torch.tensor(rng.permutation(pos.shape[0]))
    pos, batch = pos[perm], batch[perm]
    assert not bool((batch[1:] >= batch[:-1]).all())
    expected = _numpy_reference(pos.numpy(), CUTOFF, batch.numpy())
    assert _graph_set(pos, CUTOFF, batch, method=method) == expected


def test_brute_force_reference_unsorted_batch():
    """The test reference itself must also accept an unsorted batch vector."""
    rng = np.random.default_rng(3)
    pos, batch = _random_molecules(rng, [6, 7, 5])
    perm = torch.tensor(rng.permutation(pos.shape[0]))
    pos, batch = pos[perm], batch[perm]
    expected = _numpy_reference(pos.numpy(), CUTOFF, batch.numpy())
    assert edges_as_set(*brute_force_reference(pos, CUTOFF, batch)) == expected


def test_cell_method_equals_brute_method():
    rng = np.random.default_rng(4)
    for trial in range(5):
        sizes = rng.integers(1, 60, size=rng.integers(1, 6)).tolist()
        pos, batch = _random_molecules(rng, sizes, box=float(rng.uniform(3.0, 15.0)))
        cutoff = float(rng.uniform(1.5, 6.0))
        brute = _graph_set(pos, cutoff, batch, method="brute")
        cell = _graph_set(pos, cutoff, batch, method="cell")
        assert brute == cell, f"trial {trial}"
        assert brute == _numpy_reference(pos.numpy(), cutoff, batch.numpy())


def _sorted_pair_keys(edge_index: torch.Tensor, n_atoms: int) -> torch.Tensor:
    return torch.sort(edge_index[0] * n_atoms + edge_index[1]).values


def test_large_nonperiodic_cell_list_equals_brute():
    """5000 atoms (liquid density): the O(N) cell list gives exactly the brute-force pairs."""
    gen = torch.Generator().manual_seed(5)
    n = 5000
    box = (n / 0.1) ** (1.0 / 3.0)
    pos = torch.rand(n, 3, generator=gen, dtype=torch.float32) * box
    auto = radius_graph(pos, CUTOFF)  # 5000 > brute_force_max_atoms: cell list
    cell = radius_graph(pos, CUTOFF, method="cell")
    brute = radius_graph(pos, CUTOFF, method="brute")
    reference = _sorted_pair_keys(brute[0], n)
    assert torch.equal(_sorted_pair_keys(cell[0], n), reference)
    assert torch.equal(_sorted_pair_keys(auto[0], n), reference)
    assert torch.unique(reference).shape == reference.shape
    assert brute[0].shape[1] > 40 * n  # ~52 neighbours per atom in the bulk at this density
    assert not bool(cell[1].any())


def test_non_periodic_edge_cases():
    pos = torch.zeros((0, 3), dtype=torch.float64)
    edge_index, shifts = radius_graph(pos, CUTOFF)
    assert edge_index.shape == (2, 0) and shifts.shape == (0, 3)
    one = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    assert radius_graph(one, CUTOFF)[0].shape == (2, 0)
    far = torch.tensor(
        [[0.0, 0.0, 0.0], [CUTOFF + 1e-6, 0.0, 0.0], [0.0, CUTOFF - 1e-6, 0.0]], dtype=torch.float64
    )
    for method in ("brute", "cell"):
        assert edges_as_set(*radius_graph(far, CUTOFF, method=method)) == {(0, 2, 0, 0, 0), (2, 0, 0, 0, 0)}
    with pytest.raises(ValueError, match="method"):
        radius_graph(far, CUTOFF, method="kdtree")


# ----------------------------------------------------------------------------- periodic


def test_water_box_matches_matscipy():
    pos, cell = _water_box()
    frac = pos @ torch.linalg.inv(cell)
    assert bool(((frac < 0) | (frac >= 1)).any()), "the stored water coordinates are unwrapped"
    expected = _matscipy_set(pos.numpy(), cell.numpy(), CUTOFF)
    got = _graph_set(pos, CUTOFF, cell=cell.unsqueeze(0))
    assert len(expected) > 5000
    assert got == expected
    assert edges_as_set(*brute_force_reference(pos, CUTOFF, cell=cell.unsqueeze(0))) == expected
    _assert_symmetric(got)


def test_triclinic_cell_matches_matscipy_and_reference():
    rng = np.random.default_rng(6)
    cell = _triclinic_cell()
    pos = torch.tensor(rng.uniform(0.0, 1.0, size=(60, 3))) @ cell
    expected = _matscipy_set(pos.numpy(), cell.numpy(), CUTOFF)
    got = _graph_set(pos, CUTOFF, cell=cell.unsqueeze(0))
    assert got == expected
    assert edges_as_set(*brute_force_reference(pos, CUTOFF, cell=cell.unsqueeze(0))) == expected
    _assert_symmetric(got)


def test_cell_smaller_than_twice_the_cutoff():
    """4 Å box (slightly sheared), cutoff 5 Å: every atom sees many images of itself and others."""
    rng = np.random.default_rng(7)
    cell = torch.tensor([[4.0, 0.0, 0.0], [0.5, 4.2, 0.0], [0.3, -0.4, 3.9]], dtype=torch.float64)
    # Two atoms at fractional x = 0.05 and 0.95 are 4.4 Å apart through the shift (-2, 0, 0).
    frac = np.concatenate([[[0.05, 0.5, 0.5], [0.95, 0.5, 0.5]], rng.uniform(0.0, 1.0, size=(6, 3))])
    pos = torch.tensor(frac) @ cell
    expected = _matscipy_set(pos.numpy(), cell.numpy(), CUTOFF)
    got = _graph_set(pos, CUTOFF, cell=cell.unsqueeze(0))
    assert got == expected
    assert edges_as_set(*brute_force_reference(pos, CUTOFF, cell=cell.unsqueeze(0))) == expected
    assert (0, 1, -2, 0, 0) in got and (1, 0, 2, 0, 0) in got
    assert sum(1 for e in got if e[0] == e[1]) > 0  # self-images
    _assert_symmetric(got)
    # A single atom in a 3 Å cubic cell: its own images within 5 Å (6 + 12 = 18 of them; 3*sqrt(3) > 5).
    cubic = 3.0 * torch.eye(3, dtype=torch.float64)
    single = _graph_set(torch.zeros(1, 3, dtype=torch.float64), CUTOFF, cell=cubic)
    assert len(single) == 18 and all(e[0] == e[1] == 0 for e in single)


def test_positions_outside_the_cell():
    """Unwrapped coordinates (several cells away): shifts refer to the positions as given."""
    rng = np.random.default_rng(8)
    cell = _triclinic_cell()
    frac = rng.uniform(0.0, 1.0, size=(50, 3))
    wrapped = torch.tensor(frac) @ cell
    offsets = torch.tensor(rng.integers(-3, 4, size=(50, 3)), dtype=torch.float64)
    unwrapped = wrapped + offsets @ cell
    got = _graph_set(unwrapped, CUTOFF, cell=cell.unsqueeze(0))
    assert got == _matscipy_set(unwrapped.numpy(), cell.numpy(), CUTOFF)
    # Same geometry as the wrapped structure: map shifts back.
    expected = set()
    for i, j, *s in _graph_set(wrapped, CUTOFF, cell=cell.unsqueeze(0)):
        shift = np.array(s) + offsets[i].long().numpy() - offsets[j].long().numpy()
        expected.add((i, j, *shift.tolist()))
    assert got == expected


def test_batched_periodic_structures_unsorted():
    """Three periodic structures with different cells, atoms interleaved in the batch."""
    rng = np.random.default_rng(9)
    cells = torch.stack(
        [_triclinic_cell(), 4.5 * torch.eye(3, dtype=torch.float64), 11.0 * torch.eye(3, dtype=torch.float64)]
    )
    sizes = [30, 5, 70]
    pos = torch.cat(
        [torch.tensor(rng.uniform(-0.5, 1.5, size=(n, 3))) @ cells[s] for s, n in enumerate(sizes)]
    )
    batch = torch.cat([torch.full((n,), s, dtype=torch.long) for s, n in enumerate(sizes)])
    expected_sorted = _matscipy_batched(pos.numpy(), cells.numpy(), batch.numpy(), CUTOFF)
    assert _graph_set(pos, CUTOFF, batch, cells) == expected_sorted
    perm = torch.tensor(rng.permutation(pos.shape[0]))
    pos, batch = pos[perm], batch[perm]
    expected = _matscipy_batched(pos.numpy(), cells.numpy(), batch.numpy(), CUTOFF)
    got = _graph_set(pos, CUTOFF, batch, cells)
    assert got == expected
    assert edges_as_set(*brute_force_reference(pos, CUTOFF, batch, cells)) == expected
    _assert_symmetric(got)


def test_large_periodic_water_matches_matscipy():
    """3x3x3 supercell of the water box (5184 atoms), slightly perturbed, vs matscipy."""
    pos, cell = _water_box()
    reps = torch.tensor(list(itertools.product(range(3), repeat=3)), dtype=torch.float64)
    big = (pos.unsqueeze(0) + (reps @ cell).unsqueeze(1)).reshape(-1, 3)
    gen = torch.Generator().manual_seed(10)
    big = big + 0.05 * torch.randn(big.shape, generator=gen, dtype=torch.float64)
    big_cell = 3.0 * cell
    assert big.shape[0] >= 5000
    expected = _matscipy_set(big.numpy(), big_cell.numpy(), CUTOFF)
    edge_index, shifts = radius_graph(big, CUTOFF, cell=big_cell.unsqueeze(0))
    _check_output_contract(big, CUTOFF, None, big_cell.unsqueeze(0), edge_index, shifts)
    assert edges_as_set(edge_index, shifts) == expected


def test_no_self_pairs_and_both_directions():
    rng = np.random.default_rng(11)
    pos, batch = _random_molecules(rng, [25, 30])
    for method in ("brute", "cell"):
        _assert_symmetric(_graph_set(pos, CUTOFF, batch, method=method))
    cell = _triclinic_cell()
    pos = torch.tensor(rng.uniform(0.0, 1.0, size=(40, 3))) @ cell
    _assert_symmetric(_graph_set(pos, CUTOFF, cell=cell.unsqueeze(0)))


def test_cell_with_wrong_number_of_structures():
    pos = torch.rand(6, 3, dtype=torch.float64)
    batch = torch.tensor([0, 0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="one cell per structure"):
        radius_graph(pos, CUTOFF, batch, 10.0 * torch.eye(3, dtype=torch.float64).unsqueeze(0))


# ----------------------------------------------------------------------------- TorchScript


def test_torchscript_radius_graph_identical():
    scripted = torch.jit.script(radius_graph)
    rng = np.random.default_rng(12)
    pos, batch = _random_molecules(rng, [10, 35, 3])
    for method in ("auto", "brute", "cell"):
        a = radius_graph(pos, CUTOFF, batch, None, method)
        b = scripted(pos, CUTOFF, batch, None, method)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    cell = _triclinic_cell()
    pos = torch.tensor(rng.uniform(-1.0, 2.0, size=(40, 3))) @ cell
    a = radius_graph(pos, CUTOFF, None, cell.unsqueeze(0))
    b = scripted(pos, CUTOFF, None, cell.unsqueeze(0))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape[1] > 0


# ----------------------------------------------------------------------------- property test


@st.composite
def _structures(draw):
    n = draw(st.integers(2, 40))
    frac = draw(hnp.arrays(np.float64, (n, 3), elements=st.floats(-0.5, 1.5, allow_nan=False)))
    lengths = draw(hnp.arrays(np.float64, 3, elements=st.floats(2.5, 12.0)))
    tilt = draw(hnp.arrays(np.float64, (3, 3), elements=st.floats(-0.4, 0.4)))
    lattice = np.diag(lengths) @ (np.eye(3) + tilt)
    periodic = draw(st.booleans())
    cutoff = draw(st.floats(1.0, 6.0))
    return frac @ lattice, lattice, periodic, cutoff


@settings(max_examples=30, deadline=None)
@given(_structures())
def test_property_random_structures_match_reference(structure):
    pos_np, lattice, periodic, cutoff = structure
    assume(np.linalg.cond(lattice) < 6.0 and abs(np.linalg.det(lattice)) > 10.0)
    pos = torch.tensor(pos_np)
    if periodic:
        cell = torch.tensor(lattice).unsqueeze(0)
        # Avoid pairs whose distance is within rounding of the cutoff (ties are implementation-defined).
        assume(_matscipy_set(pos_np, lattice, cutoff - 1e-7) == _matscipy_set(pos_np, lattice, cutoff + 1e-7))
        expected = _matscipy_set(pos_np, lattice, cutoff)
        assert _graph_set(pos, cutoff, cell=cell) == expected
        assert edges_as_set(*brute_force_reference(pos, cutoff, cell=cell)) == expected
    else:
        assume(_numpy_reference(pos_np, cutoff - 1e-7) == _numpy_reference(pos_np, cutoff + 1e-7))
        expected = _numpy_reference(pos_np, cutoff)
        assert _graph_set(pos, cutoff, method="brute") == expected
        assert _graph_set(pos, cutoff, method="cell") == expected


# ----------------------------------------------------------------------------- optional backends


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA is not available (torch.cuda.is_available() is False)"
)
def test_cuda_matches_cpu():
    rng = np.random.default_rng(13)
    pos, batch = _random_molecules(rng, [20, 500])
    for method in ("brute", "cell"):
        cpu = radius_graph(pos, CUTOFF, batch, None, method)
        gpu = radius_graph(pos.cuda(), CUTOFF, batch.cuda(), None, method)
        assert gpu[0].is_cuda
        assert edges_as_set(*cpu) == edges_as_set(gpu[0].cpu(), gpu[1].cpu())
    cell = _triclinic_cell()
    pos = torch.tensor(rng.uniform(0.0, 1.0, size=(300, 3))) @ cell
    cpu = radius_graph(pos, CUTOFF, None, cell.unsqueeze(0))
    gpu = radius_graph(pos.cuda(), CUTOFF, None, cell.unsqueeze(0).cuda())
    assert edges_as_set(*cpu) == edges_as_set(gpu[0].cpu(), gpu[1].cpu())


def test_torch_cluster_matches():
    try:
        import torch_cluster  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"torch-cluster is not installed: {exc}")
    rng = np.random.default_rng(14)
    pos, batch = _random_molecules(rng, [30, 12, 50])
    edge_index = torch_cluster_radius_graph(pos, CUTOFF, batch)
    assert edges_as_set(edge_index, torch.zeros(edge_index.shape[1], 3)) == _numpy_reference(
        pos.numpy(), CUTOFF, batch.numpy()
    )

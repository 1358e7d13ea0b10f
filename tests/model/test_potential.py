"""Physics tests of ``forcefield_et.Potential`` (randomly initialised weights: the properties
tested here hold for any weights).

float64 unless stated; the small model (hidden 32, 2 layers) is used for speed, plus one test
on the default size. Real structures: rMD17 molecules and the 64-water periodic box.
"""

from __future__ import annotations

import copy
import itertools
import re

import numpy as np
import pytest
import torch

from forcefield_et import Potential, build_model
from tests.conftest import shared_path

RMD17_MOLECULES = ("aspirin", "ethanol", "naphthalene", "salicylic", "uracil")


# ----------------------------------------------------------------------------- helpers


def _rmd17(molecule: str, frame: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    data = np.load(shared_path("rmd17", f"rmd17_{molecule}_train_01.npz"))
    z = torch.tensor(data["nuclear_charges"], dtype=torch.long)
    return z, torch.tensor(data["coords"][frame], dtype=torch.float64)


def _water_box(frame: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """64 H2O in a periodic cubic box of 12.44 Å: z [192], pos [192, 3] (unwrapped), cell [1, 3, 3]."""
    folder = shared_path("water", "data_0")
    symbols = (folder / "type_map.raw").read_text().split()
    numbers = {"H": 1, "O": 8}
    types = np.loadtxt(folder / "type.raw", dtype=np.int64)
    z = torch.tensor([numbers[symbols[t]] for t in types], dtype=torch.long)
    pos = np.load(folder / "set.000" / "coord.npy")[frame].reshape(-1, 3)
    cell = np.load(folder / "set.000" / "box.npy")[frame].reshape(1, 3, 3)
    return z, torch.tensor(pos, dtype=torch.float64), torch.tensor(cell, dtype=torch.float64)


def _small_triclinic() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A water-like molecule and a methane-like fragment in a sheared ~4.3 Å cell (smaller than
    twice the 5 Å cutoff, so atoms see several images of themselves and of each other)."""
    cell = torch.tensor([[[4.2, 0.0, 0.0], [0.8, 4.0, 0.0], [-0.5, 0.6, 4.4]]], dtype=torch.float64)
    frac = torch.tensor(
        [[0.10, 0.20, 0.30], [0.30, 0.22, 0.35], [0.05, 0.40, 0.28], [0.60, 0.65, 0.70], [0.78, 0.62, 0.75]],
        dtype=torch.float64,
    )
    z = torch.tensor([8, 1, 1, 6, 1])
    return z, frac @ cell[0], cell


def _periodic_structure(name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _water_box() if name == "water" else _small_triclinic()


def _rotation(gen: torch.Generator) -> torch.Tensor:
    """Uniform random proper rotation (QR of a Gaussian matrix, det = +1)."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||."""
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


def _random_molecules(gen: torch.Generator, sizes, min_distance: float = 0.95):
    """Random 'molecules' (H C N O, atoms >= min_distance apart, ~liquid density), batched."""
    zs, ps = [], []
    for n in sizes:
        box = max(2.0, (n / 0.08) ** (1.0 / 3.0))
        pos = torch.empty(0, 3, dtype=torch.float64)
        while pos.shape[0] < n:
            trial = torch.rand(1, 3, generator=gen, dtype=torch.float64) * box
            if pos.shape[0] == 0 or float(torch.cdist(trial, pos).min()) >= min_distance:
                pos = torch.cat([pos, trial])
        ps.append(pos)
        zs.append(torch.tensor([1, 6, 7, 8])[torch.randint(0, 4, (n,), generator=gen)])
    batch = torch.cat([torch.full((n,), s, dtype=torch.long) for s, n in enumerate(sizes)])
    return torch.cat(zs), torch.cat(ps), batch


def _evaluate(model, z, pos, batch=None, cell=None) -> dict[str, torch.Tensor]:
    out = model(z, pos, batch, cell)
    return {k: v.detach() for k, v in out.items()}


def _energy(model, z, pos, cell=None) -> float:
    return float(model(z, pos, None, cell)["energy"].detach().sum())


def _fd_forces(model, z, pos, indices, h: float = 1e-5) -> torch.Tensor:
    """Central finite differences -dE/dx for the (atom, component) pairs in ``indices``."""
    values = []
    for atom, comp in indices:
        plus, minus = pos.clone(), pos.clone()
        plus[atom, comp] += h
        minus[atom, comp] -= h
        values.append(-(_energy(model, z, plus) - _energy(model, z, minus)) / (2 * h))
    return torch.tensor(values, dtype=torch.float64)


def _fd_indices(gen: torch.Generator, n_atoms: int, count: int) -> list[tuple[int, int]]:
    atoms = torch.randperm(n_atoms, generator=gen)[:count].tolist()
    return [(0, 0), (0, 1), (0, 2)] + [(a, int(torch.randint(0, 3, (1,), generator=gen))) for a in atoms]


def _set_reference_energies(model: Potential) -> None:
    """Non-trivial E0 per element, shift and scale, so that the tests see them."""
    with torch.no_grad():
        e0 = model.head.atomic_energies
        e0.copy_(-10.5 * torch.arange(1, e0.shape[0] + 1, dtype=e0.dtype))
        model.head.shift.fill_(0.37)
        model.head.scale.fill_(1.7)


# ----------------------------------------------------------------------------- symmetries


def test_invariance_and_equivariance_aspirin(small_model, aspirin_frame):
    z, pos = aspirin_frame
    gen = torch.Generator().manual_seed(0)
    ref = _evaluate(small_model, z, pos)
    assert ref["energy"].shape == (1,) and ref["forces"].shape == pos.shape
    assert float(ref["forces"].abs().max()) > 1e-3  # non-trivial forces
    for _ in range(3):
        rot = _rotation(gen)
        shift = 10.0 * torch.randn(3, generator=gen, dtype=torch.float64)
        perm = torch.randperm(pos.shape[0], generator=gen)
        new_pos = (pos @ rot.T + shift)[perm]
        out = _evaluate(small_model, z[perm], new_pos)
        assert abs(float(out["energy"] - ref["energy"])) <= 1e-6 * abs(float(ref["energy"]))
        assert _rel(out["forces"], (ref["forces"] @ rot.T)[perm]) <= 1e-6


def test_invariance_and_equivariance_random_batch(small_model):
    """Independent rotation/translation/permutation of every molecule of a batch."""
    gen = torch.Generator().manual_seed(1)
    sizes = [5, 17, 2, 30, 11]
    z, pos, batch = _random_molecules(gen, sizes)
    ref = _evaluate(small_model, z, pos, batch)
    assert ref["energy"].shape == (len(sizes),)
    new_pos, new_z, expected_forces = pos.clone(), z.clone(), torch.empty_like(ref["forces"])
    start = 0
    for n in sizes:
        sl = slice(start, start + n)
        rot = _rotation(gen)
        shift = 20.0 * torch.randn(3, generator=gen, dtype=torch.float64)
        perm = torch.randperm(n, generator=gen)
        new_pos[sl] = (pos[sl] @ rot.T + shift)[perm]
        new_z[sl] = z[sl][perm]
        expected_forces[sl] = (ref["forces"][sl] @ rot.T)[perm]
        start += n
    out = _evaluate(small_model, new_z, new_pos, batch)
    assert torch.allclose(out["energy"], ref["energy"], rtol=1e-6, atol=0.0)
    assert _rel(out["forces"], expected_forces) <= 1e-6


def test_periodic_rotation_translation_wrapping(small_model):
    """Water box: rotating positions and cell together leaves E invariant and rotates F and the
    stress (sigma' = R sigma R^T); translating and re-wrapping atoms into the cell changes nothing."""
    z, pos, cell = _water_box()
    ref = _evaluate(small_model, z, pos, None, cell)
    gen = torch.Generator().manual_seed(2)
    rot = _rotation(gen)
    out = _evaluate(small_model, z, pos @ rot.T, None, cell @ rot.T)
    assert abs(float(out["energy"] - ref["energy"])) <= 1e-6 * abs(float(ref["energy"]))
    assert _rel(out["forces"], ref["forces"] @ rot.T) <= 1e-6
    assert _rel(out["stress"][0], rot @ ref["stress"][0] @ rot.T) <= 1e-6
    frac = (pos + torch.tensor([3.3, -7.1, 25.0], dtype=torch.float64)) @ torch.linalg.inv(cell[0])
    wrapped = (frac - torch.floor(frac)) @ cell[0]
    out = _evaluate(small_model, z, wrapped, None, cell)
    assert abs(float(out["energy"] - ref["energy"])) <= 1e-6 * abs(float(ref["energy"]))
    assert _rel(out["forces"], ref["forces"]) <= 1e-6
    assert _rel(out["stress"], ref["stress"]) <= 1e-6


# ----------------------------------------------------------------------------- forces = -dE/dr


def test_forces_match_finite_differences(small_model, aspirin_frame):
    z, pos = aspirin_frame
    forces = _evaluate(small_model, z, pos)["forces"]
    indices = _fd_indices(torch.Generator().manual_seed(3), pos.shape[0], 12)
    analytic = torch.stack([forces[a, c] for a, c in indices])
    assert _rel(_fd_forces(small_model, z, pos, indices), analytic) <= 1e-5


@pytest.mark.parametrize("structure", ["water", "small_triclinic"])
def test_forces_match_finite_differences_periodic(small_model, structure):
    """Periodic structures: forces include the contributions through periodic images."""
    z, pos, cell = _periodic_structure(structure)
    forces = _evaluate(small_model, z, pos, None, cell)["forces"]
    indices = _fd_indices(torch.Generator().manual_seed(4), pos.shape[0], 6)
    h = 1e-5
    fd = []
    for atom, comp in indices:
        plus, minus = pos.clone(), pos.clone()
        plus[atom, comp] += h
        minus[atom, comp] -= h
        fd.append(-(_energy(small_model, z, plus, cell) - _energy(small_model, z, minus, cell)) / (2 * h))
    analytic = torch.stack([forces[a, c] for a, c in indices])
    assert _rel(torch.tensor(fd, dtype=torch.float64), analytic) <= 1e-5


def test_default_size_model_aspirin():
    """The default-size model (128 channels, 6 layers): invariance and finite-difference forces."""
    z, pos = _rmd17("aspirin")
    torch.manual_seed(0)
    model = build_model().double().eval()
    assert model.hyperparameters["hidden_channels"] == 128 and model.hyperparameters["num_layers"] == 6
    ref = _evaluate(model, z, pos)
    gen = torch.Generator().manual_seed(5)
    rot = _rotation(gen)
    perm = torch.randperm(pos.shape[0], generator=gen)
    out = _evaluate(model, z[perm], (pos @ rot.T + 3.0)[perm])
    assert abs(float(out["energy"] - ref["energy"])) <= 1e-6 * abs(float(ref["energy"]))
    assert _rel(out["forces"], (ref["forces"] @ rot.T)[perm]) <= 1e-6
    indices = _fd_indices(gen, pos.shape[0], 6)
    analytic = torch.stack([ref["forces"][a, c] for a, c in indices])
    assert _rel(_fd_forces(model, z, pos, indices), analytic) <= 1e-5


# ----------------------------------------------------------------------------- batching


def test_batch_equals_individual_molecules(small_model):
    molecules = [_rmd17(name, frame=7) for name in RMD17_MOLECULES]
    z = torch.cat([m[0] for m in molecules])
    pos = torch.cat([m[1] for m in molecules])
    batch = torch.cat([torch.full((m[0].shape[0],), s, dtype=torch.long) for s, m in enumerate(molecules)])
    out = _evaluate(small_model, z, pos, batch)
    assert out["energy"].shape == (len(molecules),)
    start = 0
    for s, (zm, pm) in enumerate(molecules):
        alone = _evaluate(small_model, zm, pm)
        n = zm.shape[0]
        assert abs(float(out["energy"][s] - alone["energy"][0])) <= 1e-10
        assert torch.allclose(out["forces"][start : start + n], alone["forces"], rtol=0.0, atol=1e-10)
        start += n


def test_unsorted_batch_equals_sorted(small_model):
    """Atoms of different molecules interleaved in the batch vector (allowed by the contract)."""
    molecules = [_rmd17(name) for name in ("ethanol", "uracil", "salicylic")]
    z = torch.cat([m[0] for m in molecules])
    pos = torch.cat([m[1] for m in molecules])
    batch = torch.cat([torch.full((m[0].shape[0],), s, dtype=torch.long) for s, m in enumerate(molecules)])
    ref = _evaluate(small_model, z, pos, batch)
    perm = torch.randperm(z.shape[0], generator=torch.Generator().manual_seed(6))
    out = _evaluate(small_model, z[perm], pos[perm], batch[perm])
    assert torch.allclose(out["energy"], ref["energy"], rtol=0.0, atol=1e-10)
    assert torch.allclose(out["forces"], ref["forces"][perm], rtol=0.0, atol=1e-10)


def test_periodic_batch_equals_individual(small_model):
    frames = [_water_box(0), _water_box(5)]
    z = torch.cat([f[0] for f in frames])
    pos = torch.cat([f[1] for f in frames])
    cell = torch.cat([f[2] for f in frames])
    batch = torch.cat([torch.full((f[0].shape[0],), s, dtype=torch.long) for s, f in enumerate(frames)])
    out = _evaluate(small_model, z, pos, batch, cell)
    n = frames[0][0].shape[0]
    for s, (zf, pf, cf) in enumerate(frames):
        alone = _evaluate(small_model, zf, pf, None, cf)
        scale = max(1.0, abs(float(alone["energy"][0])))
        assert abs(float(out["energy"][s] - alone["energy"][0])) <= 1e-10 * scale
        assert torch.allclose(out["forces"][s * n : (s + 1) * n], alone["forces"], rtol=0.0, atol=1e-10)
        assert torch.allclose(out["stress"][s], alone["stress"][0], rtol=0.0, atol=1e-12)


# ----------------------------------------------------------------------------- TorchScript, compile


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_torchscript_matches_eager(small_model, dtype):
    model = copy.deepcopy(small_model).to(dtype)
    scripted = torch.jit.script(model)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    z, pos = _rmd17("aspirin")
    zw, pw, cw = _water_box()
    cases = [
        (z, pos.to(dtype), None, None),
        (zw, pw.to(dtype), None, cw.to(dtype)),
    ]
    for zc, pc, bc, cc in cases:
        eager = _evaluate(model, zc, pc, bc, cc)
        script = {k: v.detach() for k, v in scripted(zc, pc, bc, cc).items()}
        assert set(script) == set(eager)
        for key in eager:
            assert script[key].dtype == dtype
            assert _rel(script[key], eager[key]) <= tol, key
    assert "stress" in script


@pytest.mark.slow
def test_torch_compile_matches_eager(small_model):
    """torch.compile (default inductor backend; needs gcc) on the float32 model. The first
    compilation takes ~15 s with a warm inductor cache and ~60 s cold on a small CPU."""
    model = copy.deepcopy(small_model).float()
    compiled = torch.compile(model)
    z, pos = _rmd17("aspirin")
    pos = pos.float()
    for p in (pos, pos + 0.01):
        eager = _evaluate(model, z, p)
        out = _evaluate(compiled, z, p)
        assert _rel(out["energy"], eager["energy"]) <= 1e-5
        assert _rel(out["forces"], eager["forces"]) <= 1e-5


# ----------------------------------------------------------------------------- periodic physics


@pytest.mark.parametrize("structure", ["water", "small_triclinic"])
def test_supercell_energy_is_extensive(small_model, structure):
    """E(2x2x2 supercell) = 8 E(box); supercell forces = the box forces tiled; same stress."""
    z, pos, cell = _periodic_structure(structure)
    box = _evaluate(small_model, z, pos, None, cell)
    reps = torch.tensor(list(itertools.product(range(2), repeat=3)), dtype=torch.float64)
    super_pos = (pos.unsqueeze(0) + (reps @ cell[0]).unsqueeze(1)).reshape(-1, 3)
    super_z = z.repeat(8)
    sup = _evaluate(small_model, super_z, super_pos, None, 2.0 * cell)
    assert abs(float(sup["energy"][0] - 8.0 * box["energy"][0])) <= 1e-6 * abs(float(8.0 * box["energy"][0]))
    assert _rel(sup["forces"], box["forces"].repeat(8, 1)) <= 1e-8
    assert _rel(sup["stress"], box["stress"]) <= 1e-6  # intensive


@pytest.mark.parametrize("structure", ["water", "small_triclinic"])
def test_stress_matches_finite_difference_strain(small_model, structure):
    """stress_ab = (1/V) dE/d(eps_ab) for a symmetric strain applied to cell and positions."""
    z, pos, cell = _periodic_structure(structure)
    out = _evaluate(small_model, z, pos, None, cell)
    stress = out["stress"][0]
    assert out["stress"].shape == (1, 3, 3)
    assert torch.allclose(stress, stress.T, rtol=0.0, atol=1e-12)
    volume = float(torch.abs(torch.det(cell[0])))
    h = 1e-5

    def energy_at(eps: torch.Tensor) -> float:
        deform = torch.eye(3, dtype=torch.float64) + eps
        return _energy(small_model, z, pos @ deform, cell @ deform)

    fd = torch.zeros(3, 3, dtype=torch.float64)
    for a in range(3):
        for b in range(a, 3):
            eps = torch.zeros(3, 3, dtype=torch.float64)
            eps[a, b] += 0.5 * h
            eps[b, a] += 0.5 * h
            fd[a, b] = fd[b, a] = (energy_at(eps) - energy_at(-eps)) / (2 * h) / volume
    assert float(stress.abs().max()) > 1e-6  # non-trivial
    assert _rel(stress, fd) <= 1e-5


# ----------------------------------------------------------------------------- isolated atoms


@pytest.mark.parametrize("layout", ["single_atom", "beyond_cutoff"])
def test_isolated_atoms_have_reference_energy(small_model, layout):
    """Contract: an atom with no neighbour within the cutoff contributes exactly its reference
    energy head.atomic_energies[element] + head.shift, and feels no force."""
    model = copy.deepcopy(small_model)
    _set_reference_energies(model)
    elements = torch.tensor(model.elements, dtype=torch.long)
    reference = model.head.atomic_energies + model.head.shift
    if layout == "single_atom":
        cases = [(elements[k : k + 1], torch.zeros(1, 3, dtype=torch.float64), float(reference[k]))
                 for k in range(len(model.elements))]
    else:
        spacing = model.cutoff + 0.5
        z = elements
        pos = spacing * torch.stack([torch.arange(len(z)), torch.arange(len(z)) % 2, torch.zeros(len(z))], 1)
        cases = [(z, pos.double(), float(reference.sum()))]
    for z, pos, expected in cases:
        out = _evaluate(model, z, pos)
        assert torch.equal(out["forces"], torch.zeros_like(pos))
        assert abs(float(out["energy"][0]) - expected) <= 1e-10, (
            f"isolated-atom energy {float(out['energy'][0]):.6f} != reference {expected:.6f}"
        )


def test_atoms_beyond_cutoff_are_independent(small_model):
    """Separability: atoms farther apart than the cutoff give the sum of single-atom energies
    and zero forces; likewise molecules beyond the cutoff, and an atom alone in a large cell."""
    model = copy.deepcopy(small_model)
    _set_reference_energies(model)
    elements = model.elements
    single = {
        e: float(_evaluate(model, torch.tensor([e]), torch.zeros(1, 3, dtype=torch.float64))["energy"][0])
        for e in elements
    }
    spacing = model.cutoff + 1e-3
    z = torch.tensor(elements + elements, dtype=torch.long)
    pos = spacing * torch.tensor([[k, 0.0, 0.0] for k in range(len(z))], dtype=torch.float64)
    out = _evaluate(model, z, pos)
    assert torch.equal(out["forces"], torch.zeros_like(pos))
    assert abs(float(out["energy"][0]) - 2 * sum(single.values())) <= 1e-10
    # Two molecules 10 Å apart = the sum of the molecules.
    z1, p1 = _rmd17("ethanol")
    z2, p2 = _rmd17("uracil")
    p2 = p2 - p2.min(0).values + p1.max(0).values + model.cutoff + 0.1
    both = _evaluate(model, torch.cat([z1, z2]), torch.cat([p1, p2]))
    e1, e2 = _evaluate(model, z1, p1), _evaluate(model, z2, p2)
    assert abs(float(both["energy"][0] - e1["energy"][0] - e2["energy"][0])) <= 1e-10
    assert torch.allclose(both["forces"], torch.cat([e1["forces"], e2["forces"]]), rtol=0.0, atol=1e-12)
    # One O atom in a periodic cubic cell larger than the cutoff: no neighbours, no stress.
    cell = (model.cutoff + 1.0) * torch.eye(3, dtype=torch.float64).unsqueeze(0)
    out = _evaluate(model, torch.tensor([8]), torch.full((1, 3), 0.3, dtype=torch.float64), None, cell)
    assert abs(float(out["energy"][0]) - single[8]) <= 1e-10
    assert torch.equal(out["stress"], torch.zeros_like(out["stress"]))


def test_dimer_smooth_at_cutoff(small_model):
    """The energy and force of a dimer go continuously to the separated limit at the cutoff."""
    z = torch.tensor([6, 8])
    cutoff = small_model.cutoff
    far = torch.tensor([[0.0, 0, 0], [cutoff + 0.1, 0, 0]], dtype=torch.float64)
    separated = _evaluate(small_model, z, far)
    for delta in (1e-2, 1e-3):
        pos = torch.tensor([[0.0, 0, 0], [cutoff - delta, 0, 0]], dtype=torch.float64)
        out = _evaluate(small_model, z, pos)
        assert abs(float(out["energy"] - separated["energy"])) < 1e-2 * delta
        assert float(out["forces"].abs().max()) < 1.0 * delta
        assert torch.allclose(out["forces"][0], -out["forces"][1], rtol=0.0, atol=1e-12)  # Newton's 3rd law


# ----------------------------------------------------------------------------- precision


def test_float32_agrees_with_float64(small_model, aspirin_frame):
    z, pos = aspirin_frame
    model32 = copy.deepcopy(small_model).float()
    out64 = _evaluate(small_model, z, pos)
    out32 = _evaluate(model32, z, pos.float())
    assert out32["energy"].dtype == torch.float32 and out32["forces"].dtype == torch.float32
    assert _rel(out32["energy"].double(), out64["energy"]) <= 1e-4
    assert _rel(out32["forces"].double(), out64["forces"]) <= 1e-4
    zw, pw, cw = _water_box()
    out64 = _evaluate(small_model, zw, pw, None, cw)
    out32 = _evaluate(model32, zw, pw.float(), None, cw.float())
    assert _rel(out32["energy"].double(), out64["energy"]) <= 1e-4
    assert _rel(out32["forces"].double(), out64["forces"]) <= 1e-4
    assert _rel(out32["stress"].double(), out64["stress"]) <= 1e-4


# ----------------------------------------------------------------------------- input validation


def _error_cases():
    z = torch.tensor([6, 1, 1, 8])
    pos = torch.tensor(
        [[0.0, 0.0, 0.0], [1.1, 0.0, 0.0], [0.0, 1.1, 0.0], [0.0, 0.0, 1.3]], dtype=torch.float64
    )
    cell = 10.0 * torch.eye(3, dtype=torch.float64).unsqueeze(0)
    nan_pos, inf_pos, same = pos.clone(), pos.clone(), pos.clone()
    nan_pos[1, 2] = float("nan")
    inf_pos[2, 0] = float("inf")
    same[3] = same[0]
    flat = torch.tensor([[[10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [10.0, 10.0, 0.0]]], dtype=torch.float64)
    return {
        "unknown_element": ((torch.tensor([6, 1, 1, 92]), pos, None, None), "does not support"),
        "nan_positions": ((z, nan_pos, None, None), "NaN or inf"),
        "inf_positions": ((z, inf_pos, None, None), "NaN or inf"),
        "empty_structure": ((z[:0], pos[:0], None, None), "empty structure"),
        "same_position": ((z, same, None, None), "same position"),
        "same_position_periodic": ((z, same, None, cell), "same position"),
        "degenerate_cell": ((z, pos, None, flat), "degenerate"),
        "nan_cell": ((z, pos, None, cell * float("nan")), "NaN or inf"),
        "cell_count": ((z, pos, torch.tensor([0, 0, 1, 1]), cell), "one [3, 3] cell per structure"),
        "int_positions": ((z, pos.long(), None, None), "dtype"),
        "float32_positions": ((z, pos.float(), None, None), "dtype"),
        "pos_n_by_2": ((z, pos[:, :2], None, None), "shape [N, 3]"),
        "pos_length": ((z, pos[:3], None, None), "shape [N, 3]"),
        "z_2d": ((z.unsqueeze(0), pos, None, None), "1-D torch.long"),
        "z_float": ((z.double(), pos, None, None), "1-D torch.long"),
        "batch_length": ((z, pos, torch.tensor([0, 0, 0]), None), "batch must be"),
    }


ERROR_CASES = list(_error_cases())


@pytest.mark.parametrize("case", ERROR_CASES)
def test_invalid_inputs_raise_value_error(small_model, case):
    args, fragment = _error_cases()[case]
    with pytest.raises(ValueError, match=re.escape(fragment)):
        small_model(*args)


@pytest.mark.parametrize("case", ERROR_CASES)
def test_invalid_inputs_raise_in_torchscript(small_model, case):
    """TorchScript turns the ValueError into torch.jit.Error (not a RuntimeError subclass in
    torch 2.9) whose message contains the same text."""
    scripted = torch.jit.script(small_model)
    args, fragment = _error_cases()[case]
    with pytest.raises((torch.jit.Error, RuntimeError), match=re.escape(fragment)):
        scripted(*args)


def test_build_model_rejects_unknown_hyperparameters():
    with pytest.raises(TypeError, match="bogus"):
        build_model(bogus=1)
    model = build_model(hidden_channels=16, num_layers=1, num_heads=2, num_rbf=8, cutoff=4.0)
    assert isinstance(model, Potential) and model.cutoff == 4.0


# ----------------------------------------------------------------------------- edge chunking


def _edge_inputs(model, z, pos, cell=None):
    """(element indices incl. the references, edge_index, edge_vectors [E, 3] as a leaf)."""
    from forcefield_et.neighbors import radius_graph

    batch = torch.zeros(z.shape[0], dtype=torch.long)
    edge_index, shifts = radius_graph(pos, model.cutoff, batch, cell)
    vectors = pos[edge_index[1]] - pos[edge_index[0]]
    if cell is not None:
        vectors = vectors + shifts.to(pos.dtype) @ cell[0]
    element = torch.cat([model.element_index[z], torch.arange(len(model.elements))])
    return element, edge_index, vectors.requires_grad_(True)


@pytest.mark.parametrize("structure", ["water", "aspirin"])
def test_edge_chunking_matches_all_edges(small_model, structure):
    """64-edge chunks (over 150 of them on the water box): energy, forces and stress equal the
    all-edges path to 1e-12 relative; switching back gives the all-edges path bit for bit."""
    z, pos, cell = _water_box() if structure == "water" else (*_rmd17("aspirin"), None)
    _set_reference_energies(small_model)
    reference = _evaluate(small_model, z, pos, None, cell)
    small_model.set_edge_chunking(64)
    assert small_model.edge_chunk_size == 64
    chunked = _evaluate(small_model, z, pos, None, cell)
    small_model.set_edge_chunking(None)
    again = _evaluate(small_model, z, pos, None, cell)
    assert set(chunked) == set(reference)
    for key in reference:
        assert _rel(chunked[key], reference[key]) <= 1e-12, key
        assert torch.equal(again[key], reference[key]), key


def test_edge_chunking_gradients_of_every_input_and_parameter(small_model):
    """Through the representation alone (vector output on, so every chunked branch runs): the
    gradients with respect to the edge vectors and to every parameter match the all-edges path."""
    z, pos, cell = _water_box()
    element, edge_index, vectors = _edge_inputs(small_model, z, pos, cell)
    params = list(small_model.representation.parameters())
    results = []
    for chunk in (None, 100):
        small_model.set_edge_chunking(chunk)
        x, vec = small_model.representation(element, edge_index, vectors, True)
        loss = x.pow(2).sum() + vec.pow(2).sum()
        results.append([loss.detach()] + list(torch.autograd.grad(loss, [vectors] + params)))
    for index, (a, b) in enumerate(zip(*results)):  # some are exactly zero (layer 0's vec_proj)
        assert float(torch.linalg.norm(b - a)) <= 1e-12 * float(torch.linalg.norm(a)), index


def test_edge_chunking_is_inference_only_and_validated(small_model, aspirin_frame):
    z, pos = aspirin_frame
    small_model.set_edge_chunking(32)
    small_model.train()
    with pytest.raises(RuntimeError, match="edge chunking is for inference only"):
        small_model(z, pos)
    small_model.eval()
    for bad in (0, -5, 1.5, True, "8192"):
        with pytest.raises(ValueError, match="positive int or None"):
            small_model.set_edge_chunking(bad)
    assert small_model.edge_chunk_size == 32
    assert not any("chunk" in key for key in small_model.state_dict())


def test_torchscript_ignores_edge_chunking(small_model):
    """Scripting a model with chunking switched on compiles the all-edges path (TorchForce)."""
    z, pos, cell = _water_box()
    reference = _evaluate(small_model, z, pos, None, cell)
    small_model.set_edge_chunking(64)
    scripted = torch.jit.script(small_model)
    assert "chunk" not in scripted.representation.code + scripted.representation.neighbor_embedding.code
    out = {k: v.detach() for k, v in scripted(z, pos, None, cell).items()}
    for key in reference:
        assert _rel(out[key], reference[key]) <= 1e-10, key

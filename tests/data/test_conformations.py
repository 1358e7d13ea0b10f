"""Tests of the ConformationSet container (no data files needed)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forcefield_et.data import ConformationSet, DataFormatError


def make_set(
    n_atoms: list[int] | np.ndarray,
    seed: int = 0,
    mol_id: list[int] | np.ndarray | None = None,
    cell: bool = False,
    source: str = "test",
) -> ConformationSet:
    """A random but fully labelled set: z, pos, energy, forces, properties (+ cell)."""
    rng = np.random.default_rng(seed)
    n_atoms = np.asarray(n_atoms, dtype=np.int64)
    n_frames, total = len(n_atoms), int(n_atoms.sum())
    return ConformationSet(
        z=rng.integers(1, 10, size=total),
        pos=rng.normal(size=(total, 3)),
        n_atoms=n_atoms,
        energy=rng.normal(size=n_frames),
        forces=rng.normal(size=(total, 3)),
        cell=np.stack([np.eye(3) * (10 + i) for i in range(n_frames)]) if cell else None,
        mol_id=mol_id,
        properties={"q": np.arange(n_frames, dtype=np.float64), "dip": rng.normal(size=(n_frames, 3))},
        source=source,
        atom_properties={"charge": rng.normal(size=total)},
    )


def reference_subset_frames(cs: ConformationSet, idx: list[int]) -> list[dict]:
    return [cs.frame(i) for i in idx]


def assert_frame_equal(a: dict, b: dict) -> None:
    np.testing.assert_array_equal(a["z"], b["z"])
    np.testing.assert_array_equal(a["pos"], b["pos"])
    np.testing.assert_array_equal(a["forces"], b["forces"])
    assert a["energy"] == b["energy"]
    assert a["mol_id"] == b["mol_id"]
    assert a["equilibrium"] == b["equilibrium"]
    for k in a["properties"]:
        np.testing.assert_array_equal(a["properties"][k], b["properties"][k])
    for k in a["atom_properties"]:
        np.testing.assert_array_equal(a["atom_properties"][k], b["atom_properties"][k])


# --------------------------------------------------------------------------- construction
def test_post_init_coerces_dtypes_and_fills_defaults() -> None:
    cs = ConformationSet(
        z=np.array([8, 1, 1, 6], dtype=np.uint8),
        pos=np.zeros((4, 3), dtype=np.float32),
        n_atoms=[3, 1],
        energy=[[1.0], [2.0]],
        forces=np.ones((4, 3), dtype=np.float32),
        cell=np.arange(18).reshape(2, 9),
    )
    assert cs.z.dtype == np.int64 and cs.pos.dtype == np.float64 and cs.n_atoms.dtype == np.int64
    assert cs.energy.shape == (2,) and cs.energy.dtype == np.float64
    assert cs.forces.dtype == np.float64
    assert cs.cell.shape == (2, 3, 3) and cs.cell[1, 0, 0] == 9.0
    np.testing.assert_array_equal(cs.equilibrium, [False, False])
    assert cs.equilibrium.dtype == bool
    np.testing.assert_array_equal(cs.mol_id, [0, 1])
    assert cs.mol_id.dtype == np.int64
    assert len(cs) == cs.n_frames == 2 and cs.n_total_atoms == 4
    np.testing.assert_array_equal(cs.offsets, [0, 3, 4])
    np.testing.assert_array_equal(cs.elements, [1, 6, 8])
    cs.validate()


def test_frame_returns_the_right_slices() -> None:
    cs = make_set([2, 3, 1], cell=True)
    fr = cs.frame(1)
    np.testing.assert_array_equal(fr["z"], cs.z[2:5])
    np.testing.assert_array_equal(fr["pos"], cs.pos[2:5])
    np.testing.assert_array_equal(fr["forces"], cs.forces[2:5])
    assert fr["energy"] == cs.energy[1]
    np.testing.assert_array_equal(fr["cell"], np.eye(3) * 11)
    assert fr["mol_id"] == 1 and not fr["equilibrium"] and fr["n_atoms"] == 3
    assert fr["properties"]["q"] == 1.0 and fr["properties"]["dip"].shape == (3,)
    np.testing.assert_array_equal(fr["atom_properties"]["charge"], cs.atom_properties["charge"][2:5])
    last = cs.frame(-1)
    np.testing.assert_array_equal(last["z"], cs.z[5:6])
    with pytest.raises(IndexError):
        cs.frame(3)


def test_frame_without_labels() -> None:
    cs = ConformationSet(z=[1, 1], pos=np.zeros((2, 3)), n_atoms=[2])
    fr = cs.frame(0)
    assert fr["energy"] is None and fr["forces"] is None and fr["cell"] is None
    assert not cs.has_energy.any() and not cs.has_forces.any()


# --------------------------------------------------------------------------- subset
def test_subset_matches_per_frame_reference() -> None:
    cs = make_set([3, 1, 4, 1, 5, 9, 2, 6], cell=True)
    idx = [5, 0, 5, 7, 2]
    sub = cs.subset(idx)
    sub.validate()
    assert len(sub) == 5
    np.testing.assert_array_equal(sub.n_atoms, cs.n_atoms[idx])
    for i, ref in enumerate(reference_subset_frames(cs, idx)):
        assert_frame_equal(sub.frame(i), ref)
    np.testing.assert_array_equal(sub.cell, cs.cell[idx])
    # negative indices and boolean masks
    np.testing.assert_array_equal(cs.subset([-1]).z, cs.frame(7)["z"])
    mask = np.zeros(len(cs), dtype=bool)
    mask[[1, 4]] = True
    np.testing.assert_array_equal(cs.subset(mask).z, np.concatenate([cs.frame(1)["z"], cs.frame(4)["z"]]))
    empty = cs.subset([])
    assert len(empty) == 0 and empty.pos.shape == (0, 3)
    with pytest.raises(IndexError):
        cs.subset([8])
    with pytest.raises(TypeError):
        cs.subset([0.5])


def test_subset_is_vectorised_on_a_large_set() -> None:
    n_frames = 90_000
    cs = ConformationSet(
        z=np.ones(n_frames * 12, dtype=np.int64),
        pos=np.zeros((n_frames * 12, 3)),
        n_atoms=np.full(n_frames, 12),
        forces=np.zeros((n_frames * 12, 3)),
        energy=np.arange(n_frames, dtype=np.float64),
    )
    idx = np.random.default_rng(0).permutation(n_frames)
    t0 = time.perf_counter()
    sub = cs.subset(idx)
    elapsed = time.perf_counter() - t0
    np.testing.assert_array_equal(sub.energy, idx)
    assert elapsed < 2.0, f"subset of 90k frames took {elapsed:.2f} s"


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(1, 6), min_size=1, max_size=12),
    st.randoms(use_true_random=False),
)
def test_subset_permutation_roundtrip(n_atoms: list[int], rnd) -> None:
    cs = make_set(n_atoms, seed=len(n_atoms))
    perm = list(range(len(n_atoms)))
    rnd.shuffle(perm)
    back = cs.subset(perm).subset(np.argsort(perm))
    np.testing.assert_array_equal(back.z, cs.z)
    np.testing.assert_array_equal(back.pos, cs.pos)
    np.testing.assert_array_equal(back.forces, cs.forces)
    np.testing.assert_array_equal(back.energy, cs.energy)
    np.testing.assert_array_equal(back.atom_properties["charge"], cs.atom_properties["charge"])


# --------------------------------------------------------------------------- concatenate
def test_concatenate_offsets_mol_ids_and_fills_missing_labels() -> None:
    a = make_set([2, 3], mol_id=[0, 0], source="a")
    b = ConformationSet(
        z=[6, 1, 1], pos=np.ones((3, 3)), n_atoms=[3], mol_id=[0], cell=np.eye(3) * 5, source="b"
    )
    c = make_set([1, 1, 2], mol_id=[4, 2, 4], source="a")
    cs = ConformationSet.concatenate([a, b, c])
    cs.validate()
    assert len(cs) == 6 and cs.n_total_atoms == 5 + 3 + 4
    np.testing.assert_array_equal(cs.mol_id, [0, 0, 1, 2 + 4, 2 + 2, 2 + 4])
    # energy / forces of b are missing -> NaN; cells of a, c are missing -> zeros
    assert np.isnan(cs.energy[2]) and np.isfinite(cs.energy[[0, 1, 3, 4, 5]]).all()
    assert np.isnan(cs.forces[5:8]).all() and np.isfinite(cs.forces[:5]).all()
    np.testing.assert_array_equal(cs.has_forces, [True, True, False, True, True, True])
    np.testing.assert_array_equal(cs.cell[2], np.eye(3) * 5)
    assert not cs.cell[[0, 1, 3, 4, 5]].any()
    assert np.isnan(cs.properties["q"][2]) and cs.properties["q"][3] == 0.0
    assert cs.properties["dip"].shape == (6, 3)
    assert cs.source == "a+b"
    np.testing.assert_array_equal(cs.frame(3)["pos"], c.frame(0)["pos"])


def test_concatenate_rejects_inconsistent_property_shapes() -> None:
    a = ConformationSet(z=[1], pos=np.zeros((1, 3)), n_atoms=[1], properties={"p": np.zeros((1, 2))})
    b = ConformationSet(z=[1], pos=np.zeros((1, 3)), n_atoms=[1], properties={"p": np.zeros((1, 3))})
    with pytest.raises(DataFormatError, match="'p'"):
        ConformationSet.concatenate([a, b])
    with pytest.raises(ValueError):
        ConformationSet.concatenate([])


# --------------------------------------------------------------------------- splits
def test_split_by_molecule_holds_out_whole_molecules() -> None:
    mol_id = np.repeat(np.arange(20), 5)
    cs = make_set(np.full(100, 3), mol_id=mol_id)
    train, valid = cs.split_by_molecule(0.2, seed=1)
    assert len(train) + len(valid) == 100
    assert set(train.mol_id).isdisjoint(set(valid.mol_id))
    assert len(set(valid.mol_id)) == 4 and len(valid) == 20
    # every frame appears exactly once, in the original order within each part
    all_q = np.sort(np.concatenate([train.properties["q"], valid.properties["q"]]))
    np.testing.assert_array_equal(all_q, np.arange(100))
    assert np.all(np.diff(train.properties["q"]) > 0)
    # deterministic for a seed; another seed gives another split
    t2, v2 = cs.split_by_molecule(0.2, seed=1)
    np.testing.assert_array_equal(v2.mol_id, valid.mol_id)
    others = {tuple(np.unique(cs.split_by_molecule(0.2, seed=s)[1].mol_id)) for s in range(2, 6)}
    assert len(others | {tuple(np.unique(valid.mol_id))}) > 1
    with pytest.raises(ValueError, match="split_random"):
        make_set([2, 2], mol_id=[0, 0]).split_by_molecule(0.5)
    with pytest.raises(ValueError):
        cs.split_by_molecule(1.5)


def test_split_random_is_a_partition() -> None:
    cs = make_set(np.full(50, 2))
    train, valid = cs.split_random(0.1, seed=3)
    assert (len(train), len(valid)) == (45, 5)
    q = np.concatenate([train.properties["q"], valid.properties["q"]])
    np.testing.assert_array_equal(np.sort(q), np.arange(50))
    np.testing.assert_array_equal(cs.split_random(0.1, seed=3)[1].properties["q"], valid.properties["q"])


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "change, key",
    [
        (lambda d: d.update(pos=np.zeros((5, 3))), "pos"),
        (lambda d: d["pos"].__setitem__((1, 2), np.nan), "pos"),
        (lambda d: d.update(n_atoms=np.array([2, 3])), "n_atoms"),
        (lambda d: d["z"].__setitem__(0, 0), "z"),
        (lambda d: d["forces"].__setitem__((0, 0), np.nan), "forces"),
        (lambda d: d.update(forces=np.zeros((6, 2))), "forces"),
        (lambda d: d.update(energy=np.zeros(3)), "energy"),
        (lambda d: d.update(cell=np.full((2, 3, 3), np.nan)), "cell"),
        (lambda d: d.update(cell=np.zeros((3, 3, 3))), "cell"),
        (lambda d: d.update(mol_id=np.array([0, -1])), "mol_id"),
        (lambda d: d.update(properties={"p": np.zeros(3)}), "properties[p]"),
    ],
)
def test_validate_names_the_bad_array(change, key: str) -> None:
    rng = np.random.default_rng(0)
    d = dict(
        z=np.array([1, 6, 1, 8, 1, 1]),
        pos=rng.normal(size=(6, 3)),
        n_atoms=np.array([2, 4]),
        energy=np.zeros(2),
        forces=np.zeros((6, 3)),
        source="my_file.npz",
    )
    change(d)
    cs = ConformationSet(**d)
    with pytest.raises(DataFormatError) as err:
        cs.validate()
    assert "my_file.npz" in str(err.value) and f"'{key}'" in str(err.value)


def test_validate_accepts_whole_frames_of_missing_forces() -> None:
    cs = make_set([2, 2])
    cs.forces[2:4] = np.nan
    cs.validate()
    np.testing.assert_array_equal(cs.has_forces, [True, False])


# --------------------------------------------------------------------------- ASE interop
def test_to_ase_from_ase_roundtrip() -> None:
    cs = make_set([3, 2], mol_id=[7, 9], cell=True)
    cs.equilibrium[1] = True
    atoms = [cs.to_ase(i) for i in range(len(cs))]
    assert atoms[0].pbc.all()
    assert atoms[1].get_potential_energy() == pytest.approx(cs.energy[1])
    np.testing.assert_allclose(atoms[0].get_forces(), cs.forces[:3])
    back = ConformationSet.from_ase(atoms, source="rt")
    back.validate()
    np.testing.assert_array_equal(back.z, cs.z)
    np.testing.assert_allclose(back.pos, cs.pos)
    np.testing.assert_allclose(back.energy, cs.energy)
    np.testing.assert_allclose(back.forces, cs.forces)
    np.testing.assert_allclose(back.cell, cs.cell)
    np.testing.assert_array_equal(back.mol_id, [7, 9])
    np.testing.assert_array_equal(back.equilibrium, [False, True])
    np.testing.assert_allclose(back.properties["dip"], cs.properties["dip"])
    np.testing.assert_allclose(back.atom_properties["charge"], cs.atom_properties["charge"])


def test_from_ase_units_and_missing_keys() -> None:
    from ase import Atoms

    a = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.074]])  # nm
    a.info["E_kcal"] = 10.0
    a.arrays["F_kcal"] = np.ones((2, 3))
    cs = ConformationSet.from_ase(
        [a], energy_key="E_kcal", forces_key="F_kcal", energy_unit="kcal/mol", length_unit="nm"
    )
    from forcefield_et.units import KCAL_PER_MOL_TO_EV

    assert cs.pos[1, 2] == pytest.approx(0.74)
    assert cs.energy[0] == pytest.approx(10 * KCAL_PER_MOL_TO_EV)
    assert cs.forces[0, 0] == pytest.approx(KCAL_PER_MOL_TO_EV / 10.0)
    assert cs.cell is None and cs.mol_id.tolist() == [0]
    with pytest.raises(KeyError, match="nope"):
        ConformationSet.from_ase([a], energy_key="nope")

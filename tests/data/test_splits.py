"""Train/validation splits: disjoint, complete, order-keeping and deterministic; splits by molecule id
hold out the same molecules in every source that shares the ids."""

from __future__ import annotations

import numpy as np
import pytest

from forcefield_et.data import ConformationSet
from forcefield_et.data.splits import split_by_molecule, split_by_molecule_id, split_random


def _frames(mol_id: np.ndarray, atoms_per_frame: int = 3) -> ConformationSet:
    n = len(mol_id)
    rng = np.random.default_rng(len(mol_id))
    return ConformationSet(
        z=np.tile([6, 1, 8], n)[: n * atoms_per_frame], pos=rng.normal(size=(n * atoms_per_frame, 3)),
        n_atoms=np.full(n, atoms_per_frame), energy=np.arange(n, dtype=float), mol_id=np.asarray(mol_id),
    )


def _check_partition(data: ConformationSet, train: ConformationSet, valid: ConformationSet) -> None:
    """Every frame in exactly one part, each part in the original order (energies are frame indices)."""
    assert len(train) + len(valid) == len(data) and len(train) > 0 and len(valid) > 0
    assert np.all(np.diff(train.energy) > 0) and np.all(np.diff(valid.energy) > 0)
    assert set(train.energy.tolist()).isdisjoint(valid.energy.tolist())
    assert len(train.z) == int(train.n_atoms.sum()) and len(valid.pos) == int(valid.n_atoms.sum())


@pytest.mark.parametrize("split", [split_random, split_by_molecule])
def test_fixed_seed_splits_partition_the_frames_deterministically(split):
    data = _frames(np.repeat(np.arange(10), 4))
    train, valid = split(data, 0.2, seed=3)
    _check_partition(data, train, valid)
    again_train, again_valid = split(data, 0.2, seed=3)
    np.testing.assert_array_equal(valid.energy, again_valid.energy)
    np.testing.assert_array_equal(train.pos, again_train.pos)
    assert any(not np.array_equal(valid.energy, split(data, 0.2, seed=s)[1].energy) for s in range(4, 10))


def test_split_by_molecule_holds_out_whole_molecules():
    data = _frames(np.repeat(np.arange(10), 4))
    train, valid = split_by_molecule(data, 0.3, seed=1)
    _check_partition(data, train, valid)
    assert set(train.mol_id.tolist()).isdisjoint(valid.mol_id.tolist())
    assert len(np.unique(valid.mol_id)) == 3


def test_split_random_sizes_are_clamped_to_leave_both_parts_non_empty():
    data = _frames(np.zeros(5, dtype=int))
    assert len(split_random(data, 0.01)[1]) == 1
    assert len(split_random(data, 0.99)[0]) == 1


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_fractions_outside_the_open_interval_are_refused(fraction):
    data = _frames(np.repeat(np.arange(4), 2))
    for split in (split_random, split_by_molecule):
        with pytest.raises(ValueError, match="valid_fraction"):
            split(data, fraction)


def test_too_small_sets_are_refused_with_the_alternative_named():
    with pytest.raises(ValueError, match="split_random"):
        split_by_molecule(_frames(np.zeros(4, dtype=int)))
    with pytest.raises(ValueError, match="at least 2 frames"):
        split_random(_frames(np.zeros(1, dtype=int)))


def test_split_by_molecule_id_decides_per_id_so_sources_sharing_ids_agree():
    ids = np.arange(200)
    relaxed = _frames(ids)  # one frame per molecule, as the corpus's relaxed kind
    trajectories = _frames(np.repeat(ids[::-1], 3))  # another source over the same ids, in another order
    held_relaxed = set(split_by_molecule_id(relaxed, 0.1, seed=7)[1].mol_id.tolist())
    train, valid = split_by_molecule_id(trajectories, 0.1, seed=7)
    _check_partition(trajectories, train, valid)
    assert set(valid.mol_id.tolist()) == held_relaxed
    assert set(train.mol_id.tolist()).isdisjoint(held_relaxed)
    assert 5 <= len(held_relaxed) <= 40  # about 10 % of 200 ids


def test_split_by_molecule_id_holds_out_at_least_one_molecule_and_splits_one_molecule_by_frame():
    train, valid = split_by_molecule_id(_frames(np.arange(3)), 1e-9, seed=0)
    assert len(valid) == 1 and len(train) == 2
    single = _frames(np.zeros(10, dtype=int))
    train, valid = split_by_molecule_id(single, 0.2, seed=0)
    _check_partition(single, train, valid)
    assert len(valid) == 2

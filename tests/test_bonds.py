"""forcefield_et.bonds: the bond definition, lengths under PBC, and what changed in a frame."""

from __future__ import annotations

import numpy as np
from ase.build import molecule

from forcefield_et.bonds import bond_changes, bond_changes_text, bond_lengths, find_bonds, max_bond_deviation


def _ethanol_trajectory(n_frames: int = 12, seed: int = 0):
    atoms = molecule("CH3CH2OH")
    rng = np.random.default_rng(seed)
    frames = atoms.positions[None] + rng.normal(scale=0.01, size=(n_frames, len(atoms), 3))
    return atoms, frames


def test_find_bonds_ethanol():
    atoms, _ = _ethanol_trajectory()
    bonds = find_bonds(atoms.numbers, atoms.positions)
    assert len(bonds) == 8  # C-C, C-O, O-H, 5 C-H
    assert (bonds[:, 0] < bonds[:, 1]).all()


def test_bond_changes_tell_proton_transfer_from_dissociation():
    # O0-H1 ... O2 along x: one O-H bond; the second oxygen is 2.9 Å away, beyond bonding range
    numbers = np.array([8, 1, 8])
    start = np.array([[0.0, 0.0, 0.0], [0.97, 0.0, 0.0], [2.9, 0.0, 0.0]])
    bonds = find_bonds(numbers, start)
    assert bonds.tolist() == [[0, 1]]
    reference = bond_lengths(start, bonds)

    away = start.copy()
    away[1] = [0.0, 4.0, 0.0]  # the H leaves: one stretched bond, nothing formed
    changes = bond_changes(numbers, away, bonds, reference)
    assert changes == {"stretched": [{"atoms": [0, 1], "bond": "O0-H1", "length_A": 4.0, "reference_A": 0.97}],
                       "formed": []}
    assert bond_changes_text(changes) == "O0-H1 4.00 Å (ref 0.97)"

    transfer = start.copy()
    transfer[1] = [1.93, 0.0, 0.0]  # the H moves to the other oxygen: O0-H1 stretched, H1-O2 formed
    changes = bond_changes(numbers, transfer, bonds, reference)
    assert [b["bond"] for b in changes["stretched"]] == ["O0-H1"]
    assert changes["formed"] == [{"atoms": [1, 2], "bond": "H1-O2", "length_A": 0.97}]
    assert bond_changes_text(changes) == "O0-H1 1.93 Å (ref 0.97); formed H1-O2 0.97 Å"
    # with reference frames, a formed bond states how close that pair ever came in them
    changes = bond_changes(numbers, transfer, bonds, reference, reference_frames=np.stack([start, away]))
    assert changes["formed"] == [{"atoms": [1, 2], "bond": "H1-O2", "length_A": 0.97, "reference_min_A": 1.93}]
    assert bond_changes_text(changes) == "O0-H1 1.93 Å (ref 0.97); formed H1-O2 0.97 Å (ref ≥ 1.93)"
    assert bond_changes(numbers, start, bonds, reference) == {"stretched": [], "formed": []}


def test_bond_lengths_use_the_minimum_image_under_pbc():
    # an O-H pair split across the boundary of a 10 Å cubic box: 0.97 Å apart through the wall
    numbers, cell, pbc = np.array([8, 1]), np.eye(3) * 10.0, [True, True, True]
    positions = np.array([[0.2, 5.0, 5.0], [9.23, 5.0, 5.0]])
    bonds = find_bonds(numbers, positions, cell, pbc)
    assert bonds.tolist() == [[0, 1]]
    assert find_bonds(numbers, positions).tolist() == []  # 9.03 Å apart without PBC
    np.testing.assert_allclose(bond_lengths(positions, bonds, cell, pbc), [0.97])
    trajectory = np.stack([positions, positions + [[0.0, 0.0, 0.0], [-0.3, 0.0, 0.0]]])
    deviation = max_bond_deviation(trajectory, bonds, np.array([0.97]), cell, pbc)
    np.testing.assert_allclose(deviation, [0.0, 0.3], atol=1e-12)


def test_max_bond_deviation_is_inf_for_non_finite_frames_and_zero_without_bonds():
    atoms, frames = _ethanol_trajectory(n_frames=3)
    bonds = find_bonds(atoms.numbers, frames[0])
    frames[1, 0] = np.nan
    deviation = max_bond_deviation(frames, bonds, bond_lengths(frames[0], bonds))
    assert deviation[0] < 0.1 and np.isinf(deviation[1])
    assert max_bond_deviation(frames[0], np.zeros((0, 2), dtype=np.int64), np.zeros(0)) == 0.0

"""Covalent bonds of a structure, and how far MD frames have moved from them (lengths in Å).

A machine-learned potential can break a molecule without any error: the energy stays finite
while a bond stretches to 2 Å. This module is the check that ``forcefield-et md`` runs on every
saved frame, and the collapse criterion of ``python -m benchmarks.md_stability`` (MDsim,
Fu et al. 2022): a structure has collapsed when any bond of the start structure deviates by
more than 0.5 Å from its reference length.

Bonds are MDsim's definition: the pairs that ASE's ``NeighborList(natural_cutoffs(atoms),
self_interaction=False)`` connects, i.e. d_ij < r_cov,i + r_cov,j + 0.6 Å (ASE's default skin
of 0.3 Å per atom). Under periodic boundary conditions (a ``cell`` and ``pbc``), lengths use
the minimum image.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

BondChanges = Dict[str, List[Dict[str, Any]]]


def find_bonds(
    numbers: Sequence[int], positions: np.ndarray, cell: np.ndarray | None = None, pbc: Sequence[bool] | None = None
) -> np.ndarray:
    """Bonded pairs [B, 2] (i < j, int64) of one structure: numbers [N], positions [N, 3] Å,
    optional cell [3, 3] Å (rows) with pbc [3]."""
    from ase import Atoms
    from ase.neighborlist import NeighborList, natural_cutoffs

    atoms = Atoms(numbers=np.asarray(numbers), positions=np.asarray(positions, dtype=np.float64),
                  cell=cell, pbc=False if pbc is None else pbc)
    neighbours = NeighborList(natural_cutoffs(atoms), self_interaction=False, bothways=False)
    neighbours.update(atoms)
    i, j = neighbours.get_connectivity_matrix(sparse=True).nonzero()  # sparse: O(N) memory for big systems
    pairs = np.sort(np.stack([i, j], axis=1), axis=1) if len(i) else np.zeros((0, 2), dtype=np.int64)
    return np.unique(pairs, axis=0).astype(np.int64)


def bond_lengths(
    positions: np.ndarray, bonds: np.ndarray, cell: np.ndarray | None = None, pbc: Sequence[bool] | None = None
) -> np.ndarray:
    """Bond lengths (Å): [F, B] for a trajectory [F, N, 3], [B] for one frame [N, 3]. With a cell
    and any periodic direction, each bond vector is reduced to its minimum image."""
    pos = np.asarray(positions, dtype=np.float64)
    delta = pos[..., bonds[:, 0], :] - pos[..., bonds[:, 1], :]
    if cell is not None and pbc is not None and np.any(pbc) and delta.size:
        from ase.geometry import find_mic

        flat, _ = find_mic(delta.reshape(-1, 3), np.asarray(cell, dtype=np.float64), pbc)
        delta = flat.reshape(delta.shape)
    return np.linalg.norm(delta, axis=-1)


def max_bond_deviation(
    positions: np.ndarray, bonds: np.ndarray, reference_lengths: np.ndarray,
    cell: np.ndarray | None = None, pbc: Sequence[bool] | None = None,
) -> np.ndarray:
    """Largest |bond length - reference length| (Å) per frame ([F] or a scalar array); inf for
    a frame with non-finite positions, 0 when there are no bonds."""
    lengths = bond_lengths(positions, bonds, cell, pbc)
    deviation = np.abs(lengths - reference_lengths).max(axis=-1) if bonds.size else np.zeros(lengths.shape[:-1])
    return np.where(np.isfinite(deviation), deviation, np.inf)


def bond_changes(
    numbers: Sequence[int], frame: np.ndarray, bonds: np.ndarray, reference_lengths: np.ndarray,
    threshold: float = 0.5, reference_frames: np.ndarray | None = None,
    cell: np.ndarray | None = None, pbc: Sequence[bool] | None = None,
) -> BondChanges:
    """What changed in one frame [N, 3]: ``stretched``, the bonds deviating by more than
    ``threshold`` Å from their reference lengths (``length_A``, ``reference_A``), and ``formed``,
    the pairs that the bond definition connects in this frame but that are not in ``bonds``, with
    the shortest distance of that pair over ``reference_frames`` [F, N, 3] when given
    (``reference_min_A``: did the reference data ever bring them this close?). A proton transfer
    shows as one stretched X-H bond and one formed Y-H bond; a dissociation as a stretched bond
    alone. Atoms are named by element and 0-based index, e.g. ``O3-H10``."""
    from ase.data import chemical_symbols

    numbers = np.asarray(numbers)
    frame = np.asarray(frame, dtype=np.float64)

    def describe(i: int, j: int, **values: float) -> Dict[str, Any]:
        name = f"{chemical_symbols[numbers[i]]}{i}-{chemical_symbols[numbers[j]]}{j}"
        return {"atoms": [int(i), int(j)], "bond": name, **{k: round(float(v), 3) for k, v in values.items()}}

    lengths = bond_lengths(frame, bonds, cell, pbc)
    stretched = [describe(i, j, length_A=length, reference_A=ref)
                 for (i, j), length, ref in zip(bonds, lengths, reference_lengths) if abs(length - ref) > threshold]
    known = {tuple(b) for b in np.asarray(bonds).tolist()}
    formed = []
    for i, j in find_bonds(numbers, frame, cell, pbc).tolist():
        if (i, j) in known:
            continue
        pair = np.array([[i, j]])
        values = {"length_A": bond_lengths(frame, pair, cell, pbc)[0]}
        if reference_frames is not None:
            values["reference_min_A"] = bond_lengths(reference_frames, pair, cell, pbc).min()
        formed.append(describe(i, j, **values))
    return {"stretched": stretched, "formed": formed}


def bond_changes_text(changes: BondChanges | None) -> str:
    """'O3-H10 1.52 Å (ref 1.01); formed O8-H10 1.03 Å (ref ≥ 1.23)' from :func:`bond_changes`."""
    if not changes:
        return ""
    parts = [f"{b['bond']} {b['length_A']:.2f} Å (ref {b['reference_A']:.2f})" for b in changes["stretched"]]
    formed = [f"{b['bond']} {b['length_A']:.2f} Å" + (f" (ref ≥ {b['reference_min_A']:.2f})"
                                                       if "reference_min_A" in b else "") for b in changes["formed"]]
    if formed:
        parts.append("formed " + ", ".join(formed))
    return "; ".join(parts)


class BondWatch:
    """The covalent bonds of a starting structure, and how far later frames move them (Å): the
    check that ``forcefield-et md`` and the OpenMM ``BondCheckReporter`` run on every saved frame.

    Args:
        numbers: atomic numbers [N].
        positions: the starting structure [N, 3], Å.
        cell: [3, 3] Å with ``pbc`` for periodic systems (minimum image); None otherwise.
        bonds: pairs [B, 2] to watch; None: :func:`find_bonds` on the starting structure.
    """

    def __init__(self, numbers: Sequence[int], positions: np.ndarray, cell: np.ndarray | None = None,
                 pbc: Sequence[bool] | None = None, bonds: np.ndarray | None = None) -> None:
        self.numbers = np.asarray(numbers)
        self.pbc = pbc
        self.bonds = find_bonds(numbers, positions, cell, pbc) if bonds is None else np.asarray(bonds, dtype=np.int64)
        self.start_lengths = bond_lengths(positions, self.bonds, cell, pbc)

    def change(self, positions: np.ndarray, cell: np.ndarray | None = None) -> float:
        """Largest |length - start length| (Å) of the watched bonds in one frame [N, 3] (``cell``:
        the frame's current cell, for periodic systems)."""
        return float(max_bond_deviation(positions, self.bonds, self.start_lengths, cell, self.pbc))

    def broken(self, positions: np.ndarray, threshold: float, cell: np.ndarray | None = None
               ) -> Tuple[BondChanges, str] | None:
        """None when no bond changed by more than ``threshold`` Å; else the :func:`bond_changes`
        dict and a one-line reason, 'a bond changed by 0.81 Å > 0.5 Å: C11-O12 2.22 Å (ref 1.41)'."""
        change = self.change(positions, cell)
        if not change > threshold:
            return None
        changes = bond_changes(self.numbers, positions, self.bonds, self.start_lengths, threshold,
                               cell=cell, pbc=self.pbc)
        return changes, f"a bond changed by {change:.2f} Å > {threshold:g} Å: {bond_changes_text(changes)}"


__all__ = ["BondWatch", "bond_changes", "bond_changes_text", "bond_lengths", "find_bonds", "max_bond_deviation"]

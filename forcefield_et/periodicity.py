"""Structures periodic in one or two directions (wires, slabs, surfaces) as the fully periodic cell
that the model and its neighbour lists take.

The model knows one kind of periodicity: all three lattice vectors. A structure with
``pbc=[True, True, False]`` (a slab) or ``[True, False, False]`` (a wire) is given a cell whose
periodic vectors are the structure's own and whose non-periodic vectors are replaced by orthogonal
ones, longer than the structure's extent along them plus the cutoff. No periodic image along a
replaced vector then lies within the cutoff of any atom, so the neighbour pairs, the energy and the
forces are exactly those of the structure without periodicity in those directions, whatever its own
cell says there (vacuum thinner than the cutoff, or a zero vector as ASE's surface builders leave).

Stress of such a structure is the strain derivative over the volume of its own cell, as ASE
calculators report it for slabs; it is defined only where that cell has a volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

# Extra length (Å) of a replaced lattice vector beyond the structure's extent plus the cutoff.
CLEARANCE_A = 1.0
# Below this (Å³), a cell has no volume: no stress, and no cell at all where every direction is periodic.
MIN_VOLUME_A3 = 1e-6

# Below this volume per atom (Å³) a periodic cell is an input error (the densest solids have about 5).
MIN_VOLUME_PER_ATOM_A3 = 1.0

PbcLike = Union[bool, Sequence[bool], np.ndarray, None]


@dataclass(frozen=True)
class ModelCell:
    """The cell the model gets for one structure.

    cell: [3, 3] Å, rows a, b, c, periodic in every direction; None for a structure without
        periodicity.
    stress_volume: Å³, the volume of the structure's own cell, or None where stress is undefined
        (no periodicity, or a cell without volume).
    model_volume: Å³, the volume of ``cell`` (the model divides its strain derivative by it).
    replaced: True where some lattice vectors were replaced (a slab or a wire).
    """

    cell: np.ndarray | None
    stress_volume: float | None
    model_volume: float | None
    replaced: bool

    def stress_factor(self) -> float | None:
        """What the model's stress is multiplied by to give the structure's (None: undefined)."""
        if self.stress_volume is None or self.model_volume is None:
            return None
        return self.model_volume / self.stress_volume


def normalise_pbc(pbc: PbcLike, cell: np.ndarray | None) -> np.ndarray:
    """pbc as a [3] bool array; None means every direction periodic where a cell is given."""
    if pbc is None:
        return np.full(3, cell is not None)
    flags = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    return flags.copy()


def _independent(vectors: np.ndarray) -> bool:
    """Whether the rows of ``vectors`` [k, 3] (Å) are non-zero and linearly independent."""
    if len(vectors) == 0:
        return True
    scale = max(float(np.abs(vectors).max()), 1.0)
    return int(np.linalg.matrix_rank(vectors, tol=1e-6 * scale)) == len(vectors)


def _orthonormal_complement(vectors: np.ndarray) -> np.ndarray:
    """Unit vectors [3 - k, 3] orthogonal to the k independent rows of ``vectors`` and to each other."""
    if len(vectors) == 2:
        normal = np.cross(vectors[0], vectors[1])
        return (normal / np.linalg.norm(normal))[None]
    axis = vectors[0] / np.linalg.norm(vectors[0])
    helper = np.eye(3)[int(np.argmin(np.abs(axis)))]  # the Cartesian axis least aligned with the wire
    first = np.cross(axis, helper)
    first /= np.linalg.norm(first)
    return np.stack([first, np.cross(axis, first)])


def model_cell(
    positions: np.ndarray, cell: np.ndarray | None, pbc: PbcLike, cutoff: float, owner: str = "ETCalculator"
) -> ModelCell:
    """The fully periodic cell for ``positions`` [N, 3] Å in ``cell`` [3, 3] Å (rows; may be None or
    zero where not periodic) with periodicity ``pbc`` [3], for a model of ``cutoff`` Å.

    Raises ValueError for a periodic direction whose lattice vector is zero or not independent of the
    other periodic ones (the message names ``owner``)."""
    flags = normalise_pbc(pbc, cell)
    if not flags.any():
        return ModelCell(None, None, None, False)
    if cell is None:
        raise ValueError(f"{owner}: periodic structure (pbc={flags.tolist()}) without a cell")
    lattice = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    if not np.isfinite(lattice).all():
        raise ValueError(f"{owner}: the cell contains NaN or inf")
    own_volume = abs(float(np.linalg.det(lattice)))
    n_atoms = len(np.asarray(positions).reshape(-1, 3))
    if flags.all():
        if own_volume < MIN_VOLUME_A3:
            raise ValueError(f"{owner}: periodic structure without a valid cell (zero or degenerate volume)")
        if n_atoms and own_volume / n_atoms < MIN_VOLUME_PER_ATOM_A3:
            raise ValueError(
                f"{owner}: {n_atoms} atoms in a periodic cell of {own_volume:.3g} Å³ "
                f"({own_volume / n_atoms:.3g} Å³ per atom) is far denser than any material; check the cell "
                "(lattice vectors as rows, in Å)"
            )
        return ModelCell(lattice, own_volume, own_volume, False)
    if not _independent(lattice[flags]):
        names = ", ".join("abc"[k] for k in np.flatnonzero(flags))
        raise ValueError(
            f"{owner}: the lattice vectors of the periodic directions ({names}; pbc={flags.tolist()}) must be "
            "non-zero and independent"
        )
    completed = _completed(positions, lattice, flags, cutoff)
    model_volume = abs(float(np.linalg.det(completed)))
    stress_volume = own_volume if own_volume >= MIN_VOLUME_A3 else None
    return ModelCell(completed, stress_volume, model_volume, True)


def _completed(positions: np.ndarray, lattice: np.ndarray, flags: np.ndarray, cutoff: float) -> np.ndarray:
    """``lattice`` [3, 3] Å with the rows of its open directions (``flags`` False) replaced by
    orthogonal vectors longer than the extent of ``positions`` [N, 3] Å along them plus ``cutoff``."""
    periodic = lattice[flags]
    directions = np.eye(3) if len(periodic) == 0 else _orthonormal_complement(periodic)
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    completed = lattice.copy()
    for row, direction in zip(np.flatnonzero(~flags), directions):
        along = positions @ direction
        extent = float(along.max() - along.min()) if len(along) else 0.0
        completed[row] = direction * (extent + cutoff + CLEARANCE_A)
    return completed


def complete_open_directions(
    cells: np.ndarray, positions: np.ndarray, offsets: np.ndarray, cutoff: float | None
) -> np.ndarray:
    """The cells [F, 3, 3] Å of a frame set (a :class:`~forcefield_et.data.ConformationSet`: all
    positions [A, 3] Å, frame ``k`` at ``offsets[k]:offsets[k + 1]``), where a zero lattice vector
    marks a direction without periodicity and an all-zero cell a frame without any, with every such
    row completed as :func:`model_cell` does for a model of ``cutoff`` Å. Cells without zero rows
    are returned as they are."""
    open_rows = np.linalg.norm(cells, axis=2) == 0.0
    frames = np.flatnonzero(open_rows.any(axis=1))
    if len(frames) == 0:
        return cells
    if cutoff is None:
        raise ValueError(
            f"{len(frames)} frame(s) are periodic in fewer than three directions (zero lattice vectors); "
            "completing their cells needs the model's cutoff"
        )
    completed = np.array(cells, dtype=np.float64, copy=True)
    for k in frames:
        flags = ~open_rows[k]
        if not _independent(completed[k][flags]):
            raise ValueError(f"frame {k}: the lattice vectors of its periodic directions are not independent")
        completed[k] = _completed(positions[offsets[k]:offsets[k + 1]], completed[k], flags, cutoff)
    return completed

"""Frames to label next: the ones a committee is most unsure of, kept diverse.

``forcefield-et select`` evaluates a committee on every frame of a file (e.g. the
``trajectory.traj`` of ``forcefield-et md``), scores each frame by its largest per-atom force std
(eV/Å), and picks frames greedily from the highest score down, skipping a frame that is closer
than ``min_distance`` to one already picked. The distance between two frames of the same atoms
(same atomic numbers in the same order) is the root-mean-square difference of all their
interatomic distances (Å; minimum image under periodic boundaries): invariant to translation and
rotation, and zero for a repeated geometry. Frames of different atoms are always far apart.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np
from ase import Atoms


def pair_distances(atoms: Atoms) -> np.ndarray:
    """All interatomic distances i < j of a frame (Å, [N(N-1)/2]), minimum image when periodic."""
    distances = atoms.get_all_distances(mic=bool(atoms.pbc.any()))
    upper = np.triu_indices(len(atoms), k=1)
    return distances[upper]


def frame_distance(a: Atoms, b: Atoms, a_pairs: np.ndarray | None = None, b_pairs: np.ndarray | None = None) -> float:
    """RMS difference of the interatomic distances of two frames (Å); inf when their atoms differ."""
    if len(a) != len(b) or not np.array_equal(a.numbers, b.numbers):
        return float("inf")
    a_pairs = pair_distances(a) if a_pairs is None else a_pairs
    b_pairs = pair_distances(b) if b_pairs is None else b_pairs
    return float(np.sqrt(np.mean((a_pairs - b_pairs) ** 2))) if len(a_pairs) else 0.0


def select_frames(
    frames: Sequence[Atoms],
    force_std: Sequence[np.ndarray],
    count: int,
    min_distance: float = 0.0,
    min_force_std: float = 0.0,
) -> List[Dict[str, Any]]:
    """Pick up to ``count`` frames by largest per-atom force std (``force_std``: one [N] array of
    eV/Å per frame), from the highest down, skipping frames below ``min_force_std`` (eV/Å) and
    frames closer than ``min_distance`` (Å, see the module docstring) to a frame already picked.
    Returns ``{"index", "max_force_std_eV_A", "atom"}`` per picked frame, in the order picked."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"select: the number of frames must be a positive integer, got {count!r}")
    if not min_distance >= 0 or not min_force_std >= 0:
        raise ValueError("select: min_distance and min_force_std must be >= 0")
    if len(frames) != len(force_std):
        raise ValueError(f"select: {len(frames)} frames but {len(force_std)} force std arrays")
    scores = np.array([float(np.max(s)) for s in force_std])
    picked: List[Dict[str, Any]] = []
    picked_pairs: List[np.ndarray] = []
    for index in np.argsort(-scores, kind="stable"):
        if len(picked) == count or scores[index] < min_force_std:
            break
        frame = frames[index]
        pairs = pair_distances(frame) if min_distance > 0 else None
        if min_distance > 0 and any(
            frame_distance(frame, frames[p["index"]], pairs, q) < min_distance for p, q in zip(picked, picked_pairs)
        ):
            continue
        picked.append({"index": int(index), "max_force_std_eV_A": float(scores[index]),
                       "atom": int(np.argmax(force_std[index]))})
        picked_pairs.append(pairs)
    return picked


__all__ = ["frame_distance", "pair_distances", "select_frames"]

"""Train/validation splits of a :class:`~forcefield_et.data.ConformationSet`: by frame, by
molecule, and by molecule id with a decision that depends only on the id (so that sources sharing
ids hold out the same molecules). Every split is deterministic for its seed and keeps frame order."""

from __future__ import annotations

from typing import Tuple

import numpy as np

from .conformations import ConformationSet


def split_by_molecule(
    data: ConformationSet, valid_fraction: float = 0.1, seed: int = 0
) -> Tuple[ConformationSet, ConformationSet]:
    """Hold out whole molecules: returns (train, valid), deterministic for ``seed``.

    ``valid_fraction`` is the fraction of distinct ``mol_id`` values put in valid (at least
    one molecule, at most all but one). Frame order is preserved within each part.
    Raises ValueError if the set has fewer than two molecules (use ``split_random``).
    """
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    mols = np.unique(data.mol_id)
    if len(mols) < 2:
        raise ValueError(
            f"{data.source or 'ConformationSet'}: split_by_molecule needs >= 2 molecules, "
            f"found {len(mols)}; use split_random for a single-molecule set"
        )
    rng = np.random.default_rng(seed)
    n_valid = min(max(int(round(valid_fraction * len(mols))), 1), len(mols) - 1)
    valid_mols = rng.permutation(mols)[:n_valid]
    is_valid = np.isin(data.mol_id, valid_mols)
    return data.subset(np.flatnonzero(~is_valid)), data.subset(np.flatnonzero(is_valid))


def split_random(
    data: ConformationSet, valid_fraction: float = 0.1, seed: int = 0
) -> Tuple[ConformationSet, ConformationSet]:
    """Random frame-level split (train, valid), deterministic for ``seed``; frame order preserved."""
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    n = len(data)
    if n < 2:
        raise ValueError("split_random needs at least 2 frames")
    n_valid = min(max(int(round(valid_fraction * n)), 1), n - 1)
    rng = np.random.default_rng(seed)
    is_valid = np.zeros(n, dtype=bool)
    is_valid[rng.permutation(n)[:n_valid]] = True
    return data.subset(np.flatnonzero(~is_valid)), data.subset(np.flatnonzero(is_valid))


def split_by_molecule_id(
    data: ConformationSet, valid_fraction: float, seed: int
) -> Tuple[ConformationSet, ConformationSet]:
    """Hold out whole molecules: molecule ``m`` is in validation iff a uniform draw seeded by
    (seed, m) is below ``valid_fraction``. The decision depends only on the id, so sources that
    share molecule ids (the xTB corpus kinds, and QM9 whose row i is xTB start i) hold out the
    same molecules. A single-molecule source is split by frame instead."""
    ids = np.unique(data.mol_id)
    if len(ids) < 2:
        return split_random(data, valid_fraction, seed)
    held = np.array([np.random.default_rng([seed, int(m)]).random() < valid_fraction for m in ids])
    if not held.any():
        held[np.random.default_rng(seed).integers(len(ids))] = True
    is_valid = np.isin(data.mol_id, ids[held])
    return data.subset(np.flatnonzero(~is_valid)), data.subset(np.flatnonzero(is_valid))


__all__ = ["split_by_molecule", "split_by_molecule_id", "split_random"]

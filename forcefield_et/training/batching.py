"""Turning conformations into model batches, and mixing several sources deterministically.

Batch composition is a pure function of (seed, step): each source draws its share of the
batch from a per-epoch permutation seeded by (seed, source, epoch). A resumed run therefore
sees exactly the batches the uninterrupted run would have seen, with no sampler state to save.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np
import torch
from torch import Tensor

from ..data.conformations import ConformationSet
from ..periodicity import complete_open_directions

# Objective codes per frame.
FORCES, EQUILIBRIUM, ENERGY_FORCES, ENERGY = 0, 1, 2, 3
OBJECTIVE_CODES = {"forces": FORCES, "equilibrium": EQUILIBRIUM, "energy_forces": ENERGY_FORCES, "energy": ENERGY}


class TensorConformations:
    """A ConformationSet converted once to torch tensors for fast batch gathering."""

    def __init__(self, data: ConformationSet, dtype: torch.dtype = torch.float32, cutoff: float | None = None,
                 periodic: bool = False) -> None:
        """``cutoff`` (Å, the model's): completes the cells of frames periodic in fewer than three
        directions (zero lattice vectors; :func:`~forcefield_et.periodicity.complete_open_directions`),
        which a set of periodic and non-periodic frames, or of slabs, needs. ``periodic``: give a set
        without cells such completed cells too (no images within the cutoff: the same energies and
        forces), so that its frames can share a batch with periodic ones."""
        self.n_frames = len(data)
        self.z = torch.as_tensor(data.z, dtype=torch.long)
        self.pos = torch.as_tensor(data.pos, dtype=dtype)
        self.n_atoms = torch.as_tensor(data.n_atoms, dtype=torch.long)
        self.offsets = torch.as_tensor(data.offsets, dtype=torch.long)
        nan_atoms = torch.full((len(data.z), 3), float("nan"), dtype=dtype)
        self.forces = torch.as_tensor(data.forces, dtype=dtype) if data.forces is not None else nan_atoms
        nan_frames = torch.full((self.n_frames,), float("nan"), dtype=torch.float64)
        self.energy = torch.as_tensor(data.energy, dtype=torch.float64) if data.energy is not None else nan_frames
        self.cell = self.stress = None
        if data.cell is not None or periodic:
            cells = np.zeros((self.n_frames, 3, 3)) if data.cell is None else np.asarray(data.cell)
            cells = complete_open_directions(cells, np.asarray(data.pos), np.asarray(data.offsets), cutoff)
            self.cell = torch.as_tensor(cells, dtype=dtype)
            self.stress = torch.as_tensor(data.stress_labels, dtype=dtype)  # NaN without a cell

    def gather(self, frames: Tensor) -> Dict[str, Tensor]:
        """Concatenate the given frames: z [A], pos [A,3], forces [A,3], batch [A], energy [B]
        (float64, NaN where missing), n_atoms [B], and if periodic cell [B,3,3] (Å) and stress
        [B,3,3] (eV/Å³, ASE's sign, NaN where missing)."""
        counts = self.n_atoms[frames]
        starts = self.offsets[frames]
        total = int(counts.sum())
        run_start = torch.cumsum(counts, 0) - counts
        local = torch.arange(total) - torch.repeat_interleave(run_start, counts)
        atoms = torch.repeat_interleave(starts, counts) + local
        out = {
            "z": self.z[atoms],
            "pos": self.pos[atoms],
            "forces": self.forces[atoms],
            "batch": torch.repeat_interleave(torch.arange(len(frames)), counts),
            "energy": self.energy[frames],
            "n_atoms": counts,
        }
        if self.cell is not None:
            out["cell"] = self.cell[frames]
            out["stress"] = self.stress[frames]
        return out


@dataclass
class Source:
    """One training data source with its objective, loss weight and share of each batch."""

    name: str
    data: ConformationSet
    objective: str = "forces"
    weight: float = 1.0
    ratio: float = 1.0

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVE_CODES:
            raise ValueError(f"source {self.name!r}: objective must be one of {sorted(OBJECTIVE_CODES)}")
        if len(self.data) == 0:
            raise ValueError(f"source {self.name!r} has no frames")
        if self.objective in ("forces", "energy_forces") and self.data.forces is None:
            raise ValueError(f"source {self.name!r}: objective {self.objective!r} needs forces, the data has none")
        if self.objective in ("energy_forces", "energy") and self.data.energy is None:
            raise ValueError(f"source {self.name!r}: objective {self.objective!r} needs energies, the data has none")


def batch_shares(ratios: Sequence[float], batch_size: int) -> List[int]:
    """Split ``batch_size`` over sources in proportion to ``ratios`` (largest remainder,
    every source with a positive ratio gets at least one frame)."""
    ratios = np.asarray(ratios, dtype=float)
    if (ratios < 0).any() or ratios.sum() <= 0:
        raise ValueError("source ratios must be non-negative and not all zero")
    if batch_size < int((ratios > 0).sum()):
        raise ValueError(f"batch_size {batch_size} is smaller than the number of sources in use")
    raw = ratios / ratios.sum() * batch_size
    shares = np.floor(raw).astype(int)
    shares[(ratios > 0) & (shares == 0)] = 1
    while shares.sum() > batch_size:
        shares[np.argmax(shares)] -= 1
    order = np.argsort(-(raw - np.floor(raw)), kind="stable")
    k = 0
    while shares.sum() < batch_size:
        if ratios[order[k % len(order)]] > 0:
            shares[order[k % len(order)]] += 1
        k += 1
    return shares.tolist()


class MixedBatchSampler:
    """Deterministic mixed batches: ``frames(step)`` -> list of (source index, frame indices)."""

    def __init__(self, sizes: Sequence[int], shares: Sequence[int], seed: int) -> None:
        self.sizes = list(sizes)
        self.shares = list(shares)
        self.seed = int(seed)
        self._perm_cache: Dict[tuple, np.ndarray] = {}

    def _permutation(self, source: int, epoch: int) -> np.ndarray:
        key = (source, epoch)
        if key not in self._perm_cache:
            if len(self._perm_cache) > 4 * len(self.sizes):
                self._perm_cache.clear()
            rng = np.random.default_rng([self.seed, source, epoch])
            self._perm_cache[key] = rng.permutation(self.sizes[source])
        return self._perm_cache[key]

    def frames(self, step: int) -> List[np.ndarray]:
        out = []
        for s, (size, share) in enumerate(zip(self.sizes, self.shares)):
            draws = np.arange(step * share, (step + 1) * share)
            epochs, within = np.divmod(draws, size)
            picked = np.empty(share, dtype=np.int64)
            for epoch in np.unique(epochs):
                mask = epochs == epoch
                picked[mask] = self._permutation(s, int(epoch))[within[mask]]
            out.append(picked)
        return out


def build_batch(
    tensors: Sequence[TensorConformations],
    sources: Sequence[Source],
    picks: Sequence[np.ndarray],
) -> Dict[str, Tensor]:
    """Concatenate the picked frames of every source into one batch with per-frame
    ``objective`` codes and ``source`` indices."""
    parts = []
    for s, frames in enumerate(picks):
        if len(frames) == 0:
            continue
        part = tensors[s].gather(torch.as_tensor(frames, dtype=torch.long))
        part["objective"] = torch.full((len(frames),), OBJECTIVE_CODES[sources[s].objective], dtype=torch.long)
        part["source"] = torch.full((len(frames),), s, dtype=torch.long)
        parts.append(part)
    return concatenate_batches(parts)


def concatenate_batches(parts: Sequence[Dict[str, Tensor]]) -> Dict[str, Tensor]:
    """Join batches, renumbering ``batch`` indices. Parts with cells and parts without may not mix
    (a non-periodic set gets cells with ``TensorConformations(..., periodic=True)``)."""
    has_cell = ["cell" in p for p in parts]
    if any(has_cell) and not all(has_cell):
        raise ValueError("cannot mix periodic and non-periodic structures in one batch: build the non-periodic "
                         "ones' TensorConformations with periodic=True")
    out: Dict[str, Tensor] = {}
    offset = 0
    batches = []
    for p in parts:
        batches.append(p["batch"] + offset)
        offset += len(p["n_atoms"])
    out["batch"] = torch.cat(batches)
    for key in parts[0]:
        if key != "batch":
            out[key] = torch.cat([p[key] for p in parts])
    return out

"""Screening of training data before step 1: frames without the labels their objective needs, and
energy / force outliers by robust z-score.

- **Invalid labels.** A frame whose objective needs an energy (``energy_forces``, ``energy``) and
  whose energy is missing, NaN or inf, or whose objective needs forces (``forces``,
  ``energy_forces``) and which has any missing / NaN / inf force component, is rejected with a
  :class:`InvalidFramesError` naming the file and the frame index in it; with the source option
  ``drop_invalid_frames`` (``finetune --drop-invalid-frames``) such frames are dropped instead and
  the count per file is reported.
- **Outliers.** The energy per atom after removing a least-squares per-element reference, and the
  largest atomic force norm of each frame, are scored by the robust z-score
  ``0.6745 |x - median| / MAD``. Frames above :data:`REPORT_Z` (or the drop threshold, when lower)
  are reported with their indices; with the source option ``drop_outliers: Z``
  (``finetune --drop-outliers Z``) frames above ``Z`` are dropped from training and validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import numpy as np

from .conformations import ConformationSet
from .errors import DataFormatError
from .labels import REQUIRED_LABELS, invalid_label_frames

REPORT_Z = 6.0  # frames with a robust z-score above this are listed before training
MAX_LISTED = 12  # frame indices listed per report line
MAD_TO_SIGMA = 0.6745  # MAD of a normal distribution is 0.6745 standard deviations

__all__ = [
    "InvalidFramesError",
    "FrameOrigin",
    "REPORT_Z",
    "outlier_scores",
    "robust_z_scores",
    "screen_labels",
    "screen_outliers",
]


class InvalidFramesError(DataFormatError):
    """Training or validation frames lack a label their objective needs (NaN/inf or missing)."""


@dataclass
class FrameOrigin:
    """Where each frame of a data set came from: ``files`` [K] and, per frame, the index of its
    file (``file_index`` [F]) and its frame index in that file (``frame_index`` [F]), counted as the
    file's reader returns its frames (for an xTB corpus read with ``kinds``, among those kinds)."""

    files: List[Path]
    file_index: np.ndarray
    frame_index: np.ndarray

    @classmethod
    def of_parts(cls, files: Sequence[Path], lengths: Sequence[int]) -> FrameOrigin:
        return cls(
            list(files),
            np.concatenate([np.full(n, k, dtype=np.int64) for k, n in enumerate(lengths)] or [np.zeros(0, np.int64)]),
            np.concatenate([np.arange(n, dtype=np.int64) for n in lengths] or [np.zeros(0, np.int64)]),
        )

    def subset(self, indices: np.ndarray) -> FrameOrigin:
        return FrameOrigin(self.files, self.file_index[indices], self.frame_index[indices])

    def describe(self, frames: np.ndarray) -> str:
        """'a.xyz frames 3, 17; b.xyz frame 2' for frame indices [k] of the data set."""
        parts = []
        for k, path in enumerate(self.files):
            mine = self.frame_index[frames[self.file_index[frames] == k]]
            if len(mine):
                listed = ", ".join(str(int(i)) for i in mine[:MAX_LISTED]) + (", ..." if len(mine) > MAX_LISTED else "")
                parts.append(f"{path.name} frame{'s' if len(mine) > 1 else ''} {listed}")
        return "; ".join(parts)


_LABEL_PROBLEM = {
    "energy": "a missing or non-finite (NaN/inf) energy",
    "forces": "missing or non-finite (NaN/inf) forces",
}


def screen_labels(
    data: ConformationSet,
    origin: FrameOrigin,
    objective: str,
    source_name: str,
    drop: bool,
    report: Callable[[str], None],
) -> tuple[ConformationSet, FrameOrigin]:
    """Apply the invalid-label rule (see the module docstring) to ``data``: raise
    InvalidFramesError for the first invalid frame, or with ``drop`` return the set without them
    (reporting how many left which file)."""
    if objective not in REQUIRED_LABELS:
        return data, origin  # the Source reports an unknown objective
    # a label absent from the whole set is reported by the Source ("needs forces, the data has none")
    invalid = {k: m for k, m in invalid_label_frames(data, objective).items() if getattr(data, k) is not None}
    bad = np.zeros(len(data), dtype=bool)
    for mask in invalid.values():
        bad |= mask
    if not bad.any():
        return data, origin
    if not drop:
        first = int(np.argmax(bad))
        label = next(name for name, mask in invalid.items() if mask[first])
        raise InvalidFramesError(
            f"{origin.files[origin.file_index[first]]}: frame {int(origin.frame_index[first])} has "
            f"{_LABEL_PROBLEM[label]}, which objective {objective!r} of source {source_name!r} needs "
            f"({int(bad.sum())} such frame(s)); fix the file, or drop such frames with --drop-invalid-frames "
            "(config: drop_invalid_frames: true)"
        )
    counts = [(path, int((bad & (origin.file_index == k)).sum())) for k, path in enumerate(origin.files)]
    report(
        f"source {source_name!r}: dropped {int(bad.sum())} frame(s) without the labels objective {objective!r} "
        "needs: " + ", ".join(f"{n} of {path}" for path, n in counts if n)
    )
    keep = np.flatnonzero(~bad)
    if len(keep) == 0:
        raise InvalidFramesError(
            f"source {source_name!r}: no frame of {', '.join(str(p) for p in origin.files)} has the labels "
            f"objective {objective!r} needs ({', '.join(REQUIRED_LABELS[objective])})"
        )
    return data.subset(keep), origin.subset(keep)


def robust_z_scores(values: np.ndarray) -> np.ndarray:
    """|x - median| / (MAD / 0.6745) for each entry of ``values`` [n] (NaN entries stay NaN and are
    ignored); zeros where the spread is zero."""
    values = np.asarray(values, dtype=np.float64)
    z = np.full(values.shape, np.nan)
    ok = np.isfinite(values)
    if not ok.any():
        return z
    deviation = np.abs(values[ok] - np.median(values[ok]))
    mad = np.median(deviation)
    if mad <= 0:  # more than half the values equal: fall back on the mean absolute deviation
        mad = np.mean(deviation) * MAD_TO_SIGMA / 0.7979
    z[ok] = MAD_TO_SIGMA * deviation / mad if mad > 0 else 0.0
    return z


def outlier_scores(data: ConformationSet, objective: str) -> Dict[str, np.ndarray]:
    """Robust z-scores [F] of each frame's ``"energy"`` (per atom, after a least-squares
    per-element reference; only for objectives with an energy term) and ``"force"`` (largest
    atomic force norm, eV/Å; only for objectives with a force term). NaN where a frame has no label."""
    needs = REQUIRED_LABELS.get(objective, ())
    scores: Dict[str, np.ndarray] = {}
    if len(data) == 0:
        return scores
    if "energy" in needs and data.energy is not None:
        elements, element_index = np.unique(data.z, return_inverse=True)
        counts = np.zeros((len(data), len(elements)))
        np.add.at(counts, (np.repeat(np.arange(len(data)), data.n_atoms), element_index), 1.0)
        ok = np.isfinite(data.energy)
        residual = np.full(len(data), np.nan)
        if ok.any():
            reference, *_ = np.linalg.lstsq(counts[ok], data.energy[ok], rcond=None)
            residual[ok] = (data.energy[ok] - counts[ok] @ reference) / data.n_atoms[ok]
        scores["energy"] = robust_z_scores(residual)
    if "forces" in needs and data.forces is not None:
        norms = np.linalg.norm(data.forces, axis=1)
        largest = np.maximum.reduceat(norms, data.offsets[:-1])
        scores["force"] = robust_z_scores(largest)
    return scores


def screen_outliers(
    data: ConformationSet,
    origin: FrameOrigin,
    objective: str,
    source_name: str,
    drop_z: float | None,
    report: Callable[[str], None],
) -> tuple[ConformationSet, FrameOrigin]:
    """Report the energy and force outliers of ``data`` (robust z above :data:`REPORT_Z`, or above
    ``drop_z`` when that is lower) and, with ``drop_z``, return the set without the frames above it."""
    scores = outlier_scores(data, objective)
    threshold = REPORT_Z if drop_z is None else min(REPORT_Z, drop_z)
    drop = np.zeros(len(data), dtype=bool)
    what = {"energy": "energy per atom (after per-element references)", "force": "largest atomic force"}
    for kind, z in scores.items():
        listed = np.flatnonzero(z > threshold)
        if len(listed) == 0:
            continue
        order = listed[np.argsort(-z[listed])]
        if drop_z is not None:
            drop |= z > drop_z
        action = f"dropped those above {drop_z:g}" if drop_z is not None else "kept (drop with --drop-outliers Z)"
        report(
            f"source {source_name!r}: {len(listed)} {kind} outlier(s) by robust z-score of the {what[kind]} "
            f"(z > {threshold:g}; largest {float(z[order[0]]):.1f}): {origin.describe(order)}; {action}"
        )
    if not drop.any():
        return data, origin
    keep = np.flatnonzero(~drop)
    if len(keep) == 0:
        raise DataFormatError(f"source {source_name!r}: --drop-outliers {drop_z:g} would drop every frame")
    return data.subset(keep), origin.subset(keep)

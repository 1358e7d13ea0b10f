"""Which frames lack the labels a training objective needs, and the switch that lets readers pass
non-finite labels through so that the trainer can drop those frames (``drop_invalid_frames``)."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from .conformations import ConformationSet

__all__ = ["REQUIRED_LABELS", "accept_nonfinite_labels", "invalid_label_frames", "nonfinite_labels_accepted"]

# Training objective -> the labels each of its frames must have (finite).
REQUIRED_LABELS = {
    "forces": ("forces",),
    "energy_forces": ("energy", "forces"),
    "energy": ("energy",),
    "equilibrium": (),
}

_ACCEPT_NONFINITE = contextvars.ContextVar("forcefield_et_accept_nonfinite_labels", default=False)


@contextmanager
def accept_nonfinite_labels(accept: bool = True) -> Iterator[None]:
    """Within this block, readers keep frames with NaN/inf energies or forces instead of raising
    (positions and cells are still checked); the caller must screen the frames itself."""
    token = _ACCEPT_NONFINITE.set(bool(accept))
    try:
        yield
    finally:
        _ACCEPT_NONFINITE.reset(token)


def nonfinite_labels_accepted() -> bool:
    """Whether readers are inside :func:`accept_nonfinite_labels`."""
    return _ACCEPT_NONFINITE.get()


def invalid_label_frames(data: ConformationSet, objective: str) -> dict[str, np.ndarray]:
    """For each label ``objective`` needs ("energy", "forces"), a bool [F] mask of the frames whose
    label is missing or not finite (a NaN/inf energy; any NaN/inf force component)."""
    if objective not in REQUIRED_LABELS:
        raise ValueError(f"unknown objective {objective!r}; known: {sorted(REQUIRED_LABELS)}")
    out: dict[str, np.ndarray] = {}
    for label in REQUIRED_LABELS[objective]:
        if label == "energy":
            out[label] = ~data.has_energy
        else:
            out[label] = ~data.has_forces
    return out

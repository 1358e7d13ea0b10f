"""forcefield_et: force-centric pre-trained Equivariant Transformer potentials.

Data path: structure -> neighbours (``neighbors``) -> ET (``model.et``) -> energy
(``model.heads``) -> autograd forces (``model.potential``) -> calculators (ASE, OpenMM).
Units inside: Å and eV (``units``).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .checkpoint import CheckpointError, save_checkpoint
from .model import Committee, Potential, build_model
from .registry import load_committee, load_model

__all__ = [
    "CheckpointError",
    "Committee",
    "ETCalculator",
    "Potential",
    "__version__",
    "build_model",
    "load_committee",
    "load_model",
    "save_checkpoint",
]


def __getattr__(name: str):
    if name == "ETCalculator":
        from .calculators.ase import ETCalculator

        return ETCalculator
    raise AttributeError(f"module 'forcefield_et' has no attribute {name!r}")

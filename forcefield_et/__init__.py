"""forcefield_et: force-centric pre-trained Equivariant Transformer potentials.

Data path: structure -> neighbours (``neighbors``) -> ET (``model.et``) -> energy
(``model.heads``) -> autograd forces (``model.potential``) -> calculators (ASE, OpenMM).
Units inside: Å and eV (``units``).

Imported before torch, the package sets ``OMP_WAIT_POLICY=PASSIVE`` (unless the environment
already sets it): idle OpenMP threads then sleep instead of spinning, which keeps multi-threaded
calls fast when other processes share the cores. OpenMP reads the variable once, when torch
loads it, so the setting has no effect in a process that imported torch first.
"""

from __future__ import annotations

import os as _os
import sys as _sys

if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

from . import runtime as _runtime  # noqa: E402
from .checkpoint import CheckpointError, save_checkpoint  # noqa: E402
from .domain import DomainWarning  # noqa: E402
from .model import Committee, Potential, build_model  # noqa: E402
from .registry import load_committee, load_model  # noqa: E402

_runtime._record_torch_threads()

__all__ = [
    "CheckpointError",
    "Committee",
    "DomainWarning",
    "ETCalculator",
    "Evaluator",
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
    if name == "Evaluator":
        from .inference import Evaluator

        return Evaluator
    raise AttributeError(f"module 'forcefield_et' has no attribute {name!r}")

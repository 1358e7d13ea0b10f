"""A model's errors on the rMD17 test split: the one test evaluation of the fine-tuning benchmarks.

Every benchmark that reports a "test force MAE" reads ``rmd17_<molecule>_test_01.npz`` here and
scores it with :func:`forcefield_et.evaluation.error_metrics`, so that their figures are comparable."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

from forcefield_et.data import ConformationSet, read_rmd17
from forcefield_et.evaluation import error_metrics, predict
from forcefield_et.model import Potential

from .paths import DATA_ROOT, rmd17_file


def rmd17_test_set(molecule: str, data_root: Path = DATA_ROOT, frames: int | None = None,
                   stride: int = 1) -> ConformationSet:
    """The first ``frames`` frames (all 1000 with None) of ``molecule``'s rMD17 test_01 split, every
    ``stride``-th of them."""
    if stride < 1:
        raise ValueError(f"the test-frame stride must be at least 1, got {stride}")
    test = read_rmd17(rmd17_file(molecule, "test", data_root))
    if frames is not None and frames < len(test):
        test = test.subset(np.arange(frames))
    return test.subset(np.arange(0, len(test), stride)) if stride > 1 else test


def rmd17_test_errors(model: Potential | str | Path, molecule: str, data_root: Path = DATA_ROOT,
                      frames: int | None = None) -> Dict[str, Any]:
    """:func:`~forcefield_et.evaluation.error_metrics` of ``model`` (a loaded potential, or a checkpoint
    evaluated in float32) on :func:`rmd17_test_set`; ``frames`` in the result is the number scored.
    Energies in meV, forces in meV/Å."""
    if not isinstance(model, Potential):
        from forcefield_et import load_model

        model = load_model(model, dtype="float32")
    test = rmd17_test_set(molecule, data_root, frames)
    with torch.enable_grad():
        return error_metrics(test, predict(model, test))

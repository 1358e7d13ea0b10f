"""Shared test fixtures. Tests that need ../shared/data skip with a clear message when it is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()

# Tests run on small CPUs (2 cores, often shared with a background job): one intra-op thread.
torch.set_num_threads(1)


def shared_path(*parts: str) -> Path:
    """Path inside ../shared/data; skips the calling test when it is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"../shared/data not found ({path}): this test needs the project's reference data")
    return path


@pytest.fixture
def aspirin_frame():
    """(z [21] long, pos [21,3] float64 Å) of rMD17 aspirin train frame 0."""
    data = np.load(shared_path("rmd17", "rmd17_aspirin_train_01.npz"))
    return torch.tensor(data["nuclear_charges"], dtype=torch.long), torch.tensor(data["coords"][0], dtype=torch.float64)


def tiny_potential(seed: int = 0):
    """A tiny, randomly initialised float64 potential in eval mode (1 layer, 16 channels), seeded."""
    from forcefield_et import build_model

    torch.manual_seed(seed)
    return build_model(hidden_channels=16, num_layers=1, num_heads=2, num_rbf=8).double().eval()


@pytest.fixture
def small_model():
    """A small, randomly initialised float64 potential (fast; same code path as the default size)."""
    from forcefield_et import build_model

    torch.manual_seed(0)
    return build_model(hidden_channels=32, num_layers=2, num_heads=4, num_rbf=16).double().eval()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A checkpoint of a tiny, randomly initialised potential (1 layer, 16 channels, cutoff 4 Å)."""
    from forcefield_et import build_model, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, build_model(hidden_channels=16, num_layers=1, num_heads=2, num_rbf=8, cutoff=4.0).eval())
    return path


@pytest.fixture
def calc(small_model):
    """An :class:`~forcefield_et.ETCalculator` over ``small_model`` (float64, CPU)."""
    from forcefield_et import ETCalculator

    return ETCalculator(small_model, device="cpu", dtype="float64")

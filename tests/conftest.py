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


# The files a test that asks for a whole dataset folder (shared_path("rmd17")) may read: a partial
# copy of the folder skips such a test instead of failing it half-way.
RMD17_MOLECULES = ("aspirin", "azobenzene", "benzene", "ethanol", "malonaldehyde", "naphthalene", "paracetamol",
                   "salicylic", "toluene", "uracil")
DATASET_FILES = {
    "rmd17": [f"rmd17_{m}_{split}_01.npz" for m in RMD17_MOLECULES for split in ("train", "test")],
    "xtb": ["starts.npz", "xtb_shard0.npz", "xtb_druglike_shard0.npz", "xtb_druglike_shard1.npz"],
    "water": ["data_0"],
    "combustion": ["C1H4O2", "C3H3O4", "C4H3O1"],
}


def shared_path(*parts: str) -> Path:
    """Path inside ../shared/data; skips the calling test when it is missing (for a dataset folder of
    :data:`DATASET_FILES`, when any of its files is)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"../shared/data not found ({path}): this test needs the project's reference data")
    missing = [name for name in DATASET_FILES.get("/".join(parts), []) if not (path / name).exists()]
    if missing:
        pytest.skip(f"{path} is incomplete (missing {', '.join(missing)}): this test needs the project's data")
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

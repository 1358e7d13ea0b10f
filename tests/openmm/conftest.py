"""Fixtures for the OpenMM tests: optional-dependency guards, a small model file, the water box."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import shared_path

# One intra-op thread (small, shared CPUs); the repo-wide conftest does the same.
torch.set_num_threads(1)

ASPIRIN_PDB = Path(__file__).resolve().parents[2] / "forcefield_et" / "structures" / "aspirin.pdb"


def require_openmm():
    """The openmm module, or skip the test with the exact import error."""
    try:
        import openmm
    except Exception as error:  # a broken binary install raises OSError, not only ImportError
        pytest.skip(f"openmm cannot be imported: {type(error).__name__}: {error}")
    return openmm


def require_openmmtorch():
    """The openmmtorch module, or skip the test with the exact import/load error."""
    require_openmm()
    try:
        import openmmtorch
    except Exception as error:
        pytest.skip(f"openmmtorch cannot be loaded: {type(error).__name__}: {error}")
    return openmmtorch


def require_openmmml():
    """openmmml.MLPotential, or skip the test with the exact import error."""
    require_openmm()
    try:
        from openmmml import MLPotential
    except Exception as error:
        pytest.skip(f"openmmml cannot be imported: {type(error).__name__}: {error}")
    return MLPotential


@pytest.fixture(scope="session")
def small_model_file(tmp_path_factory) -> Path:
    """Checkpoint of a small randomly initialised model (32 channels, 2 layers)."""
    from forcefield_et import build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model(hidden_channels=32, num_layers=2, num_heads=4, num_rbf=16).eval()
    return save_checkpoint(tmp_path_factory.mktemp("model") / "small.pt", model)


@pytest.fixture
def water_box():
    """(z [192] long, pos [192, 3] float64 Å, cell [3, 3] float64 Å) of frame 0 of the
    periodic 64-water box (DeePMD layout, ../shared/data/water/data_0)."""
    root = shared_path("water", "data_0")
    type_map = (root / "type_map.raw").read_text().split()
    types = np.loadtxt(root / "type.raw", dtype=int).reshape(-1)
    symbols = [type_map[t] for t in types]
    from forcefield_et.elements import number

    z = torch.tensor([number(s) for s in symbols], dtype=torch.long)
    coord = np.load(root / "set.000" / "coord.npy")[0].reshape(-1, 3)
    box = np.load(root / "set.000" / "box.npy")[0].reshape(3, 3)
    return z, torch.tensor(coord, dtype=torch.float64), torch.tensor(box, dtype=torch.float64)


@pytest.fixture
def aspirin_pdb():
    """openmm.app.PDBFile of the bundled aspirin structure."""
    require_openmm()
    from openmm.app import PDBFile

    return PDBFile(str(ASPIRIN_PDB))

"""benchmarks.rmd17_errors: the test split every fine-tuning benchmark scores, and the errors on it."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.rmd17_errors import rmd17_test_errors, rmd17_test_set
from forcefield_et import build_model, save_checkpoint
from forcefield_et.data import read_rmd17
from tests.conftest import shared_path


def test_the_test_set_is_the_first_frames_of_test_01():
    data_root = shared_path("rmd17").parent
    everything = read_rmd17(shared_path("rmd17", "rmd17_ethanol_test_01.npz"))
    first = rmd17_test_set("ethanol", data_root, frames=4)
    assert len(everything) == 1000 and len(rmd17_test_set("ethanol", data_root)) == 1000
    assert len(first) == 4
    np.testing.assert_array_equal(first.pos, everything.pos[: 4 * 9])
    np.testing.assert_array_equal(first.forces, everything.forces[: 4 * 9])


def test_errors_are_the_mean_absolute_errors_in_meV(tmp_path):
    data_root = shared_path("rmd17").parent
    model = build_model(hidden_channels=16, num_layers=1, num_heads=2, num_rbf=8)
    path = save_checkpoint(tmp_path / "model.pt", model)
    test = rmd17_test_set("ethanol", data_root, frames=3)
    errors = rmd17_test_errors(path, "ethanol", data_root, frames=3)
    from forcefield_et.evaluation import predict

    prediction = predict(model.float(), test)
    assert errors["frames"] == 3
    force_mae = 1000 * np.abs(prediction["forces"] - test.forces).mean()
    energy_mae = 1000 * np.abs(prediction["energy"] - test.energy).mean()
    assert errors["force_mae_meV_A"] == pytest.approx(force_mae, rel=1e-5)
    assert errors["energy_mae_meV"] == pytest.approx(energy_mae, rel=1e-5)
    assert rmd17_test_errors(model, "ethanol", data_root, frames=3)["force_mae_meV_A"] == pytest.approx(
        errors["force_mae_meV_A"], rel=1e-6)


def test_test_set_stride_takes_every_kth_frame_of_the_first():
    data_root = shared_path("rmd17").parent
    every = rmd17_test_set("ethanol", data_root, frames=20)
    strided = rmd17_test_set("ethanol", data_root, frames=20, stride=5)
    assert len(strided) == 4
    assert np.array_equal(strided.pos.reshape(4, -1, 3), every.pos.reshape(20, -1, 3)[::5])
    with pytest.raises(ValueError, match="stride"):
        rmd17_test_set("ethanol", data_root, stride=0)

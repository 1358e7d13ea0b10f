"""benchmarks.rmd17_models: exported rMD17 models, and the ZBL prior switched on at export only where
it leaves every training frame unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.paths import rmd17_file
from benchmarks.rmd17_models import closest_pair_ratio, export_rmd17_model
from forcefield_et import build_model, load_model, save_checkpoint
from forcefield_et.checkpoint import read_checkpoint
from forcefield_et.data import read_rmd17
from forcefield_et.evaluation import predict
from tests.conftest import shared_path


def test_closest_pair_ratio_is_the_smallest_distance_over_covalent_radii_sum():
    from ase.data import covalent_radii

    data_root = shared_path("rmd17").parent
    frames = read_rmd17(rmd17_file("ethanol", "train", data_root), max_frames=3)
    expected = min(
        np.linalg.norm(frame[a] - frame[b]) / (covalent_radii[frames.z[a]] + covalent_radii[frames.z[b]])
        for frame in frames.pos.reshape(3, 9, 3) for a in range(9) for b in range(a + 1, 9)
    )
    assert closest_pair_ratio("ethanol", data_root, n_train=3) == pytest.approx(expected, rel=1e-12)


def test_zbl_added_at_export_leaves_training_frames_unchanged_and_repels_fused_pairs(tmp_path):
    data_root = shared_path("rmd17").parent
    torch.manual_seed(0)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_checkpoint(run_dir / "best.pt", build_model(hidden_channels=16, num_layers=1, num_heads=2, num_rbf=8))
    ratio = closest_pair_ratio("ethanol", data_root, n_train=50)
    with pytest.raises(ValueError, match=r"acts on the training frames \(ethanol;"):
        export_rmd17_model(run_dir, tmp_path / "no.pt", "ethanol", {"name": "no"}, 50, data_root, zbl=ratio + 0.01)
    assert not (tmp_path / "no.pt").exists()

    path = export_rmd17_model(run_dir, tmp_path / "with-zbl.pt", "ethanol", {"name": "with-zbl"}, 50, data_root,
                              zbl=0.75)
    meta = read_checkpoint(path)["metadata"]
    assert meta["priors"]["zbl_radius_scale"] == 0.75 and meta["priors"]["closest_training_pair"] == round(ratio, 4)
    assert meta["training_domain"]["compositions"] == ["C2H6O"] and "PBE/def2-SVP" in meta["level_of_theory"]
    # frames trained on beside the target's (replay) count too
    replayed = closest_pair_ratio("malonaldehyde", data_root, n_train=10**9)
    with pytest.raises(ValueError, match="ethanol, malonaldehyde"):
        export_rmd17_model(run_dir, tmp_path / "no.pt", "ethanol", {"name": "no"}, 50, data_root,
                           zbl=replayed + 0.001, also_trained_on=["malonaldehyde"])
    source, exported = load_model(run_dir / "best.pt", dtype="float64"), load_model(path, dtype="float64")
    assert exported.use_zbl and not source.use_zbl
    frames = read_rmd17(rmd17_file("ethanol", "train", data_root), max_frames=50)
    before, after = predict(source, frames), predict(exported, frames)
    for key in ("energy", "forces"):  # zero prior on every training pair: the same numbers, bit for bit
        np.testing.assert_array_equal(np.asarray(after[key]), np.asarray(before[key]))
    fused = frames.subset(np.arange(1))
    fused.pos[1] = fused.pos[0] + 0.3 * (fused.pos[1] - fused.pos[0]) / np.linalg.norm(fused.pos[1] - fused.pos[0])
    repulsion = np.asarray(predict(exported, fused)["energy"]) - np.asarray(predict(source, fused)["energy"])
    assert repulsion[0] > 1.0  # eV: two atoms 0.3 Å apart

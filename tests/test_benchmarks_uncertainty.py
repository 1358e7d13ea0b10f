"""benchmarks.uncertainty: calibration measures and the --quick pipeline (a 2-member committee)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from benchmarks.uncertainty import CONFIDENCE_LEVELS, calibration_curve, main, miscalibration_area
from tests.conftest import shared_path


def test_calibration_of_gaussian_errors_with_the_right_and_wrong_sigma():
    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.05, 0.5, 200_000)
    errors = rng.normal(0.0, sigma)
    observed = calibration_curve(errors, sigma)
    np.testing.assert_allclose(observed, CONFIDENCE_LEVELS, atol=0.01)
    assert miscalibration_area(observed) < 0.005
    overconfident = calibration_curve(errors, sigma / 4)  # predicted spread far too small
    assert np.all(overconfident <= observed + 1e-12) and miscalibration_area(overconfident) > 0.2
    assert miscalibration_area(np.ones_like(CONFIDENCE_LEVELS)) == pytest.approx(0.5, abs=0.01)


def test_quick_benchmark_writes_results_and_resumes(tmp_path, capsys, monkeypatch):
    import benchmarks.xtb_md

    monkeypatch.setattr(benchmarks.xtb_md, "CACHE_DIR", tmp_path / "xtb_md")
    data_root = shared_path("rmd17").parent
    main(["--quick", "--data-root", str(data_root), "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "uncertainty.json").read_text())
    assert summary["members"] == 2 and summary["test_frames"] == 20
    assert summary["trained_steps"] == 4 and summary["molecule"] == "aspirin" and summary["atoms_per_frame"] == 21
    assert -1 <= summary["spearman_atom_std_vs_error"] <= 1
    assert 0 <= summary["miscalibration_area"] <= 0.5 and summary["validation_std_scale"] > 0
    assert {"displaced_0.05A", "displaced_0.1A"} <= set(summary["out_of_distribution"])
    if importlib.util.find_spec("tblite") is not None:  # the new 1000 K GFN2-xTB frames, kept for the next call
        assert summary["out_of_distribution"]["xtb_md_1000K_fresh"]["frames"] == 4
        assert (tmp_path / "xtb_md" / "aspirin_1000K_seed1_4.npz").is_file()
    assert (tmp_path / "uncertainty.png").stat().st_size > 1000
    assert json.loads((tmp_path / "runs" / "committee.json").read_text())["members"][1] == "member_1/best.pt"
    capsys.readouterr()
    # Members are finished: a second call trains nothing. (Its evaluation is the one checked above;
    # it is replaced here by the stored summary, so the resume check does not evaluate twice.)
    import benchmarks.uncertainty as bench

    monkeypatch.setattr(bench, "evaluate", lambda *args, **kwargs: summary)
    main(["--quick", "--data-root", str(data_root), "--out", str(tmp_path)])
    assert capsys.readouterr().out.count("is finished; skipped") == 2


@pytest.mark.parametrize(("molecule", "atoms"), [("aspirin", 21), ("ethanol", 9)])
def test_hot_frames_are_the_molecules_own_langevin_frames(molecule, atoms):
    from benchmarks.paths import rmd17_file
    from benchmarks.uncertainty import hot_frames

    data_root = shared_path("xtb").parent
    for path in (data_root / "xtb" / "starts.npz", data_root / "xtb" / "xtb_shard0.npz",
                 rmd17_file(molecule, "test", data_root)):
        shared_path(*path.relative_to(data_root).parts)  # skips with a message when a file is absent
    frames = hot_frames(data_root, molecule)
    assert frames is not None and len(frames) == 96
    assert set(frames.n_atoms.tolist()) == {atoms}
    reference = read_rmd17_first_frame(data_root, molecule)
    for k in range(len(frames)):  # the same molecule: the same elements in the same order
        np.testing.assert_array_equal(frames.z[k * atoms:(k + 1) * atoms], reference)


def read_rmd17_first_frame(data_root, molecule):
    from benchmarks.paths import rmd17_file
    from forcefield_et.data import read_rmd17

    return read_rmd17(rmd17_file(molecule, "test", data_root)).subset(np.array([0])).z

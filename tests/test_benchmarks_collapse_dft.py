"""``benchmarks.collapse_dft``: the frames up to an MD collapse, relabelled with DFT and set against the
run's model; labels resume frame by frame."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import shared_path

pytest.importorskip("pyscf", reason="benchmarks.collapse_dft needs PySCF (the dft extra)")


def _collapsed_run(tmp_path, model_path):
    """An md_stability results folder and work folder holding one collapsed run: three rMD17 ethanol test
    frames as its trajectory, "collapsed" at the second."""
    from forcefield_et.data import read_rmd17

    test = read_rmd17(shared_path("rmd17", "rmd17_ethanol_test_01.npz"), max_frames=3)
    positions = test.pos.reshape(3, 9, 3)
    md_results, md_work = tmp_path / "md_results", tmp_path / "md_work"
    (md_results / "runs" / "ethanol__tiny").mkdir(parents=True)
    (md_work / "ethanol__tiny").mkdir(parents=True)
    np.savez(md_work / "ethanol__tiny" / "trajectory.npz", positions=positions.astype(np.float32),
             numbers=test.z[:9].astype(np.uint8), time_ps=np.array([0.0, 0.05, 0.1]),
             temperature_K=np.full(3, 500.0))
    result = {"molecule": "ethanol", "model": "tiny", "model_description": "a random tiny ET",
              "model_path": str(model_path), "collapsed": True, "collapse_frame": 1, "stability_ps": 0.05,
              "collapse_reason": "bond deviation 0.51 A > 0.5 A",
              "collapse_bonds": {"stretched": [{"atoms": [2, 8], "bond": "O2-H8", "length_A": 1.5,
                                                "reference_A": 0.97}],
                                 "formed": [{"atoms": [0, 8], "bond": "C0-H8", "length_A": 1.2,
                                             "reference_min_A": 2.5}]}}
    (md_results / "runs" / "ethanol__tiny" / "result.json").write_text(json.dumps(result))
    # the molecule's other models: one (the same checkpoint under another name) whose run stayed stable,
    # one whose checkpoint is gone
    stable = {**result, "model": "tiny-again", "collapsed": False, "collapse_frame": None, "simulated_ps": 0.1,
              "stability_ps": 0.1}
    lost = {**stable, "model": "lost", "model_path": str(tmp_path / "gone.pt")}
    for name, run in (("ethanol__stable", stable), ("ethanol__lost", lost)):
        (md_results / "runs" / name).mkdir()
        (md_results / "runs" / name / "result.json").write_text(json.dumps(run))
    # the stable run's trajectory: the collapse's new bond O0-H8 shortest in its second frame
    (md_work / "ethanol__stable").mkdir()
    np.savez(md_work / "ethanol__stable" / "trajectory.npz", positions=positions[::-1].astype(np.float32),
             numbers=test.z[:9].astype(np.uint8), time_ps=np.array([0.0, 0.05, 0.1]))
    return md_results, md_work, test


def test_quick_check_follows_the_dft_energy_profile_and_resumes(tmp_path, tiny_model, capsys, monkeypatch):
    import benchmarks.collapse_dft as collapse_dft

    md_results, md_work, test = _collapsed_run(tmp_path, tiny_model)
    out = tmp_path / "out"
    argv = ["--md-results", str(md_results), "--md-work", str(md_work), "--out", str(out), "--quick"]
    collapse_dft.main(argv)
    summary = json.loads((out / "collapse_dft.json").read_text())
    assert list(summary["runs"]) == ["ethanol__tiny"]  # the stable run is not checked
    check = summary["runs"]["ethanol__tiny"]
    frames = check["frames"]
    assert [f["frame"] for f in frames] == [0, 1]  # the window ends at the collapse frame
    assert frames[0]["dft_energy_eV"] == 0.0 and frames[0]["model_energy_eV"] == 0.0
    # PySCF at rMD17's level of theory reproduces rMD17's energy difference between the two frames
    rmd17_difference = float(test.energy[1] - test.energy[0])
    assert abs(frames[1]["dft_energy_eV"] - rmd17_difference) < 0.02, (frames[1]["dft_energy_eV"], rmd17_difference)
    expected_length = float(np.linalg.norm(test.pos[9 + 2] - test.pos[9 + 8]))
    assert frames[1]["bond_lengths_A"]["O2-H8"] == pytest.approx(expected_length, abs=1e-5)
    assert check["force_mae_meV_A"] > 0 and (out / "collapse_dft.png").stat().st_size > 1000
    assert "| ethanol / tiny | 0.05 | O2-H8" in (out / "collapse_dft.md").read_text()
    assert check["at_collapse"]["force_mae_meV_A"] == frames[1]["force_mae_meV_A"]
    assert check["before_collapse"]["force_mae_meV_A"] == frames[0]["force_mae_meV_A"]
    # the molecule's other model on the same frames: the same checkpoint gives the same profile and errors
    other = check["other_models"]["tiny-again"]
    assert other["energy_eV"] == pytest.approx([f["model_energy_eV"] for f in frames], abs=1e-9)
    assert other["at_collapse"] == pytest.approx(check["at_collapse"], abs=1e-6)
    positions = test.pos.reshape(3, 9, 3)
    lengths = np.linalg.norm(positions[:, 0] - positions[:, 8], axis=1)
    assert other["own_run"] == {"collapsed": False, "stability_ps": 0.1, "simulated_ps": 0.1, "closest_approach": {
        "C0-H8": {"shortest_A": pytest.approx(lengths.min(), abs=1e-5), "saved_frames": 3,
                  "frames_shorter_than_reference": int((lengths < 2.5).sum()), "reference_min_A": 2.5}}}
    assert "gone.pt" in check["other_models_skipped"]["lost"]
    assert "| ethanol / tiny-again on the frames of tiny (its own run stable for 0.1 of 0.1 ps; C0-H8 there ≥ " \
        in (out / "collapse_dft.md").read_text()
    # every frame is labelled: a second run computes no DFT and gives the same result
    capsys.readouterr()
    monkeypatch.setattr(collapse_dft, "dft_single_point", lambda *a, **k: pytest.fail("DFT computed again"))
    collapse_dft.main(argv)
    assert json.loads((out / "collapse_dft.json").read_text())["runs"] == summary["runs"]


def test_unknown_run_names_the_collapsed_ones_and_a_lost_trajectory_is_skipped(tmp_path, tiny_model, capsys):
    from benchmarks.collapse_dft import main

    md_results, md_work, _ = _collapsed_run(tmp_path, tiny_model)
    with pytest.raises(SystemExit, match="ethanol__stable.*collapsed runs: ethanol__tiny"):
        main(["--md-results", str(md_results), "--md-work", str(md_work), "--runs", "ethanol__stable"])
    # a collapsed run whose trajectory is gone is skipped with the reason
    (md_work / "ethanol__tiny" / "trajectory.npz").unlink()
    main(["--md-results", str(md_results), "--md-work", str(md_work), "--out", str(tmp_path / "out")])
    assert "trajectory.npz not found" in capsys.readouterr().out
    assert not (tmp_path / "out" / "collapse_dft.json").exists()

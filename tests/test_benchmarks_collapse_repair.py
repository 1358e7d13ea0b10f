"""``benchmarks.collapse_repair``: DFT frames of a collapse, a fine-tuning round with them replayed, the
rMD17 test errors and the same MD protocol again; the labels and the round resume."""

from __future__ import annotations

import json

import pytest

from tests.conftest import shared_path
from tests.test_benchmarks_collapse_dft import _collapsed_run

pytest.importorskip("pyscf", reason="benchmarks.collapse_repair needs PySCF (the dft extra)")


@pytest.mark.timeout(600)
def test_quick_round_labels_trains_tests_and_runs_md_again(tmp_path, tiny_model, capsys):
    from ase.io import read

    import benchmarks.collapse_repair as collapse_repair

    md_results, md_work, test = _collapsed_run(tmp_path, tiny_model)
    data_root = shared_path("rmd17").parent
    out, work = tmp_path / "out", tmp_path / "work"
    argv = ["--runs", "ethanol__tiny", "--md-results", str(md_results), "--md-work", str(md_work), "--rounds", "1",
            "--data-root", str(data_root), "--work", str(work), "--out", str(out), "--quick"]
    collapse_repair.main(argv)
    summary = json.loads((out / "collapse_repair.json").read_text())
    entry = summary["repairs"]["ethanol__tiny"]
    assert entry["molecule"] == "ethanol" and len(entry["rounds"]) == 1
    first = entry["rounds"][0]
    assert first["repair_frames"] == 2 and first["dft_cpu_s"] > 0  # the two frames up to the collapse
    assert first["training_steps"] > 0 and first["test"]["frames"] == 20 and first["test"]["force_mae_meV_A"] > 0
    assert first["md"]["simulated_ps"] > 0
    # the repair frames: the trajectory's positions with PySCF forces, replayed beside the rMD17 frames
    frames = read(work / "ethanol__tiny" / "repair_frames.extxyz", index=":")
    assert len(frames) == 2 and frames[1].get_forces().shape == (9, 3)
    assert frames[1].positions == pytest.approx(test.pos[9:18], abs=1e-5)
    from forcefield_et import load_model

    metadata = load_model(work / "ethanol__tiny" / "round1" / "best.pt").metadata
    sources = {s["name"]: s for s in metadata["training"]["sources"]}
    assert sources["ethanol"]["frames"] == 950 and sources["repair"]["frames"] == 2
    assert sources["repair"]["objective"] == "forces"
    assert (out / "md" / "runs" / "ethanol__repaired-1" / "result.json").is_file()
    assert "| ethanol__tiny | 1 | 2 |" in (out / "collapse_repair.md").read_text()
    # a second invocation reuses the labels, the finished training and the finished MD run
    capsys.readouterr()
    collapse_repair.main(argv)
    again = json.loads((out / "collapse_repair.json").read_text())["repairs"]["ethanol__tiny"]["rounds"][0]
    assert again["training_steps"] == first["training_steps"] and again["md"] == first["md"]
    assert "DFT frame 1/" not in capsys.readouterr().out  # nothing labelled again
    # a new machine has the labels and the run state, not the collapsed trajectory: the round still resumes
    (md_work / "ethanol__tiny" / "trajectory.npz").unlink()
    collapse_repair.main(argv)
    moved = json.loads((out / "collapse_repair.json").read_text())["repairs"]["ethanol__tiny"]["rounds"][0]
    assert moved["repair_frames"] == 2 and moved["md"] == first["md"]

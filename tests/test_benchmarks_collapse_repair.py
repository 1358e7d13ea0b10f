"""``benchmarks.collapse_repair``: DFT frames of a collapse, a fine-tuning round with them replayed, the
rMD17 test errors and the same MD protocol again; the labels and the round resume."""

from __future__ import annotations

import json

import pytest

from tests.conftest import shared_path
from tests.test_benchmarks_collapse_dft import _collapsed_run


@pytest.mark.timeout(600)
def test_quick_round_labels_trains_tests_and_runs_md_again(tmp_path, tiny_model, capsys):
    pytest.importorskip("pyscf", reason="benchmarks.collapse_repair needs PySCF (the dft extra)")
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
    # the repaired model was no bundled checkpoint: --bundle leaves everything as it is
    collapse_repair.main(["--bundle", "--out", str(out), "--work", str(work)])
    assert "is not a bundled checkpoint; nothing to bundle" in capsys.readouterr().out


def _repair_entry(collapsed_after: bool = False) -> dict:
    md = {"simulated_ps": 300.0, "stability_ps": 300.0, "collapsed": collapsed_after, "collapse_reason": None}
    return {"run": "salicylic__et-pretrained-finetuned", "molecule": "salicylic",
            "model": "forcefield_et/checkpoints/rmd17-salicylic.pt",
            "rounds": [{"round": 1, "repair_frames": 20, "frames_from_collapse_at_ps": 27.7, "dft_cpu_s": 1152.0,
                        "training_steps": 10842, "training_cpu_hours": 0.5, "stop_reason": "budget",
                        "test": {"frames": 1000, "force_mae_meV_A": 6.85, "energy_mae_meV": 1.55}, "md": md}]}


def test_the_repaired_card_keeps_the_bundled_entries_and_states_the_repair():
    """The bundled card's entries stay; the test errors become the repaired model's, the training cost grows
    by the repair, and the description, the limits and ``repair`` say which frames beyond rMD17 it saw."""
    from benchmarks.collapse_repair import repaired_card

    card = {"name": "rmd17-salicylic", "description": "Fine-tuned on rMD17 salicylic.",
            "limits": "Fitted to one molecule.", "level_of_theory": "PBE/def2-SVP",
            "training_cost": {"cpu_hours": 2.0, "steps": 62036, "cell": "salicylic-1000-pretrained"},
            "test_errors": {"split": "rmd17 test_01", "frames": 1000, "force_mae_meV_A": 6.98,
                            "energy_mae_meV": 1.60, "force_rmse_meV_A": 10.9},
            "priors": {"zbl_radius_scale": 0.75, "note": "ZBL repulsion"}}
    new = repaired_card(card, _repair_entry(), {"ratio": 0.1, "lr": 1e-4}, 0.8321)
    assert new["name"] == "rmd17-salicylic" and new["level_of_theory"] == "PBE/def2-SVP"
    assert new["test_errors"] == {"split": "rmd17 test_01", "frames": 1000, "force_mae_meV_A": 6.85,
                                  "energy_mae_meV": 1.55}  # no RMSE: not measured after the repair
    assert new["training_cost"]["cpu_hours"] == 2.5 and new["training_cost"]["repair_cpu_hours"] == 0.5
    assert new["description"].startswith("Fine-tuned on rMD17 salicylic. Then repaired")
    assert "20 PBE/def2-SVP frames of its own trajectory up to the collapse at 27.7 ps" in new["description"]
    assert "20 DFT frames of its repair" in new["limits"] and "0.832 x that sum" in new["priors"]["note"]
    repair = new["repair"]
    assert repair["repaired_cell"] == "salicylic-1000-pretrained" and repair["dft_frames"] == 20
    assert repair["repaired_test_errors"] == card["test_errors"] and repair["dft_cpu_hours"] == 0.32
    assert repair["md_after"] == {"simulated_ps": 300.0, "stability_ps": 300.0, "collapsed": False}
    assert card["test_errors"]["force_mae_meV_A"] == 6.98  # the card given is left as it was
    with pytest.raises(ValueError, match="collapsed too"):
        repaired_card(card, _repair_entry(collapsed_after=True), {"ratio": 0.1, "lr": 1e-4}, 0.83)


def test_a_repair_is_bundled_only_over_the_model_it_started_from(tmp_path, monkeypatch):
    """``--bundle`` writes the repaired weights over the bundled checkpoint whose training the repair started
    from; once done it says so, and it refuses a bundled file that has been exported anew since."""
    from ase import Atoms
    from ase.io import write

    import forcefield_et.registry as registry
    from benchmarks.collapse_repair import bundle_repair
    from forcefield_et import build_model, save_checkpoint
    from forcefield_et.checkpoint import read_checkpoint

    bundled_dir = tmp_path / "checkpoints"
    monkeypatch.setattr(registry, "BUNDLED_DIR", bundled_dir)
    model = build_model(hidden_channels=16, num_layers=1, num_heads=2, num_rbf=8)
    cell_training = {"step": 100, "sources": [{"name": "salicylic", "frames": 950}]}
    card = {"name": "rmd17-salicylic", "description": "Fine-tuned.", "limits": "One molecule.",
            "training_cost": {"cpu_hours": 2.0, "cell": "salicylic-1000-pretrained"},
            "test_errors": {"split": "rmd17 test_01", "frames": 1000, "force_mae_meV_A": 6.98}}

    def bundle_cell(training: dict) -> None:
        save_checkpoint(tmp_path / "cell.pt", model, {"training": training})
        registry.export_checkpoint(tmp_path / "cell.pt", bundled_dir / "rmd17-salicylic.pt", card)

    bundle_cell(cell_training)
    entry = {**_repair_entry(), "model": str(bundled_dir / "rmd17-salicylic.pt")}
    work = tmp_path / "work"
    repair_training = {"step": 50, "sources": [{"name": "salicylic", "frames": 950}, {"name": "repair", "frames": 20}]}
    save_checkpoint(work / entry["run"] / "round1" / "best.pt", model,
                    {"training": repair_training, "parent_training": cell_training})
    frames = [Atoms("OH", positions=[[0, 0, 0], [0, 0, d]]) for d in (0.97, 1.02)]
    write(work / entry["run"] / "repair_frames.extxyz", frames)
    settings = {"ratio": 0.1, "lr": 1e-4}

    assert bundle_repair(entry, settings, work).startswith("bundled the repair")
    meta = read_checkpoint(bundled_dir / "rmd17-salicylic.pt")["metadata"]
    assert meta["training"] == repair_training and meta["parent_training"] == cell_training
    assert meta["repair"]["repaired_cell"] == "salicylic-1000-pretrained"
    assert meta["test_errors"]["force_mae_meV_A"] == 6.85
    assert bundle_repair(entry, settings, work).endswith("is this repair already")
    bundle_cell({**cell_training, "step": 200})  # a newer cell exported over it
    with pytest.raises(SystemExit, match="is not the model the repair of salicylic__et-pretrained-finetuned"):
        bundle_repair(entry, settings, work)
    elsewhere = {**entry, "model": str(tmp_path / "cell.pt")}
    assert bundle_repair(elsewhere, settings, work).endswith("is not a bundled checkpoint; nothing to bundle")

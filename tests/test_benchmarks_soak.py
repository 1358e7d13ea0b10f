"""benchmarks.soak: a short soak of ``forcefield-et md`` and ``forcefield-et finetune`` (SIGKILL at
random times, restart, compare with an uninterrupted run), and the checks catching what a broken
resume would leave."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from tests.conftest import shared_path


def test_short_soak_of_md_and_finetune_passes(tmp_path):
    import benchmarks.soak as soak

    train = shared_path("rmd17", "rmd17_ethanol_train_01.npz")
    code = soak.main(["--kills", "2", "--md-steps", "20", "--finetune-steps", "10", "--seed", "1", "--train",
                      str(train), "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")])
    summary = json.loads((tmp_path / "out" / "soak.json").read_text())
    assert code == 0, summary
    assert summary["passed"] and not summary["errors"]
    assert set(summary["targets"]) == {"md", "finetune"}
    md = summary["targets"]["md"]["rounds"][0]
    assert md["checks"]["frames"] == md["checks"]["rows"] == 5  # 20 steps, a frame every 5, and t = 0
    assert md["checks"]["log_identical"] and md["checks"]["max_position_diff_A"] == 0.0
    finetune = summary["targets"]["finetune"]["rounds"][0]
    assert finetune["checks"]["max_weight_diff"] == {"last.pt": 0.0, "best.pt": 0.0}
    assert finetune["checks"]["duplicated_rows"] == 0
    for round_ in (md, finetune):
        assert round_["passed"] and round_["checks"]["temporaries"] == []
        assert round_["launches"] == round_["kills"] + 1  # every killed launch was restarted once
        assert round_["kills"] <= 2 and len(round_["kill_times_s"]) == len(round_["kill_phases"]) == round_["kills"]
        assert all(p == "start-up" or re.fullmatch(r"after \d+ (state )?writes", p) for p in round_["kill_phases"])
        aimed = sum(p != "start-up" for p in round_["kill_phases"])
        assert round_["resumed_from_saved_state"] >= aimed  # a kill after a state write resumes from it
    assert summary["kills"] == md["kills"] + finetune["kills"]
    assert (tmp_path / "out" / "soak.png").stat().st_size > 1000


@pytest.fixture(scope="module")
def md_reference(tmp_path_factory):
    """One finished md run (the soak's md command, 10 steps)."""
    from ase.build import molecule

    from forcefield_et.cli import main

    folder = tmp_path_factory.mktemp("soak_md")
    molecule("CH3CH2OH").write(str(folder / "ethanol.xyz"))
    assert main(["md", str(folder / "ethanol.xyz"), "--model", "rmd17-ethanol", "--no-relax", "--steps", "10",
                 "--interval", "5", "--device", "cpu", "--no-progress", "--out", str(folder / "reference")]) == 0
    return folder / "reference"


def test_md_check_reports_duplicated_rows_lost_frames_and_temporary_files(md_reference, tmp_path):
    from ase.io import Trajectory, read

    from benchmarks.soak import check_md

    run = tmp_path / "run"
    shutil.copytree(md_reference, run)
    assert check_md(md_reference, run, steps=10, interval=5, timestep_fs=0.5)["problems"] == []
    lines = (run / "md_log.csv").read_text().splitlines(keepends=True)
    (run / "md_log.csv").write_text("".join(lines[:3] + lines[2:]))  # the row at 2.5 fs twice
    frames = read(str(run / "trajectory.traj"), ":")
    with Trajectory(str(run / "trajectory.traj"), "w") as trajectory:  # the last frame lost
        for frame in frames[:-1]:
            trajectory.write(frame)
    (run / ".md_state.npz.tmp").write_bytes(b"")
    problems = check_md(md_reference, run, steps=10, interval=5, timestep_fs=0.5)["problems"]
    assert any("md_log.csv holds 4 rows (1 duplicated times), expected 3" in p for p in problems)
    assert any("trajectory holds 2 frames, expected 3" in p for p in problems)
    assert any("temporary files left: ['.md_state.npz.tmp']" in p for p in problems)


def test_finetune_check_reports_changed_weights_and_missing_rows(tmp_path):
    import torch

    from benchmarks.soak import check_finetune
    from forcefield_et import build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model(hidden_channels=16, num_layers=1, num_heads=2, num_rbf=8)
    header = "step,kind,lr,loss,time_s\n"
    for name in ("reference", "run"):
        (tmp_path / name).mkdir()
        for checkpoint in ("last.pt", "best.pt"):
            save_checkpoint(tmp_path / name / checkpoint, model)
    (tmp_path / "reference" / "metrics.csv").write_text(header + "5,valid,0.1,2.0,1.0\n10,valid,0.1,1.0,2.0\n")
    (tmp_path / "run" / "metrics.csv").write_text(header + "5,valid,0.1,2.0,7.0\n10,valid,0.1,1.0,9.0\n")
    assert check_finetune(tmp_path / "reference", tmp_path / "run")["problems"] == []  # timing may differ
    (tmp_path / "run" / "metrics.csv").write_text(header + "5,valid,0.1,2.0,7.0\n")
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    save_checkpoint(tmp_path / "run" / "last.pt", model)
    problems = check_finetune(tmp_path / "reference", tmp_path / "run")["problems"]
    assert any("missing [('10', 'valid')]" in p for p in problems)
    assert any("last.pt 0.001" in p and "best.pt 0" in p for p in problems)

"""benchmarks.md_warning: threshold from the stable runs, lead time of the collapsing ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.md_warning import lead_times


def test_lead_time_is_break_minus_first_crossing_of_the_stable_maximum():
    runs = {
        "stable": {"role": "stable", "time_ps": [0, 1, 2, 3], "max_force_std_eV_A": [0.1, 0.3, 0.2, float("nan")]},
        "early": {"role": "collapsing", "break_ps": 3.5, "time_ps": [0, 1, 2, 3],
                  "max_force_std_eV_A": [0.1, 0.35, 0.2, 0.5]},
        "silent": {"role": "collapsing", "break_ps": 2.0, "time_ps": [0, 1], "max_force_std_eV_A": [0.1, 0.3]},
    }
    assert lead_times(runs) == pytest.approx(0.3)
    assert runs["early"]["first_crossing_ps"] == 1 and runs["early"]["lead_time_ps"] == pytest.approx(2.5)
    assert runs["early"]["frames_above_threshold"] == 2
    assert runs["silent"]["first_crossing_ps"] is None and runs["silent"]["lead_time_ps"] is None
    with pytest.raises(ValueError, match="stable"):
        lead_times({"early": runs["early"]})


def test_watcher_trains_on_at_most_1000_train_split_frames_only(tmp_path):
    from benchmarks.md_warning import WATCHER_HEADS, watcher_config

    config = watcher_config(tmp_path / "watcher", data_root=tmp_path)
    (source,) = config.sources
    assert "train" in Path(source.path).name and "train" in Path(source.valid_path).name
    assert "test" not in Path(source.path).name and source.test_path is None
    first, stop = (int(x) for x in source.frames.split(":"))
    valid_first, valid_stop = (int(x) for x in source.valid_frames.split(":"))
    assert stop <= valid_first and valid_stop <= 1000 and first == 0
    assert config.init_from == "pretrained" and config.optim.threads == 1 and WATCHER_HEADS >= 2


def test_other_molecules_get_their_own_results_folder_and_watcher(tmp_path):
    from benchmarks.md_warning import RESULTS_DIR, results_dir, watcher_config

    assert results_dir("aspirin") == RESULTS_DIR and results_dir("ethanol") == RESULTS_DIR.parent / "md_warning_ethanol"
    (source,) = watcher_config(tmp_path / "w", data_root=tmp_path, molecule="ethanol").sources
    assert source.name == "ethanol" and "rmd17_ethanol_train_01" in Path(source.path).name


def test_watching_an_ethanol_stable_and_a_collapsing_run(tmp_path):
    import json

    import numpy as np

    from benchmarks.md_warning import main
    from forcefield_et import build_model, save_checkpoint
    from forcefield_et.data import read_rmd17
    from tests.conftest import shared_path

    frames = read_rmd17(shared_path("rmd17", "rmd17_ethanol_test_01.npz"), max_frames=12)
    positions = frames.pos.reshape(12, 9, 3)
    runs, work = tmp_path / "runs", tmp_path / "work"
    for model, collapsed in (("stable", False), ("broken", True)):
        (runs / "runs" / f"ethanol__{model}").mkdir(parents=True)
        (work / f"ethanol__{model}").mkdir(parents=True)
        result = {"collapsed": collapsed, "stability_ps": 0.1 if collapsed else 0.11, "model_description": model}
        (runs / "runs" / f"ethanol__{model}" / "result.json").write_text(json.dumps(result))
        moved = positions + (0.0 if model == "stable" else np.linspace(0, 0.3, 12)[:, None, None])
        np.savez(work / f"ethanol__{model}" / "trajectory.npz", positions=moved, numbers=frames.z[:9],
                 time_ps=np.arange(12) * 0.01)
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        members.append(save_checkpoint(tmp_path / f"m{seed}.pt",
                                       build_model(hidden_channels=16, num_layers=1, num_heads=2, num_rbf=8)))
    out = tmp_path / "out"
    main(["--molecule", "ethanol", "--runs", str(runs), "--work", str(work), "--stable", "stable",
          "--collapsing", "broken", "--watcher", ",".join(str(m) for m in members), "--out", str(out)])
    summary = json.loads((out / "md_warning.json").read_text())
    assert summary["molecule"] == "ethanol" and (out / "md_warning.png").is_file()
    broken = summary["runs"]["broken"]
    assert broken["break_ps"] == 0.1 and max(broken["time_ps"]) < 0.1  # frames strictly before the break
    stable = summary["runs"]["stable"]
    assert summary["threshold_eV_A"] == pytest.approx(max(stable["max_force_std_eV_A"]))

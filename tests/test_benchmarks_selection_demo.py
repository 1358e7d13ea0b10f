"""benchmarks.selection_demo --quick: one selection round (three heads committees with the converged
recipe, test errors, MD of both 50-frame committees), and a rerun that reuses it all."""

from __future__ import annotations

import json

import pytest

from benchmarks.selection_demo import fit, main
from tests.conftest import shared_path


def test_quick_selection_round_tests_and_runs_md_then_resumes(tmp_path, capsys):
    data_root = shared_path("rmd17").parent
    argv = ["--quick", "--data-root", str(data_root), "--out", str(tmp_path)]
    main(argv)
    summary = json.loads((tmp_path / "selection_demo.json").read_text())
    assert summary["test_frames"] == 10 and summary["pool_frames"] == 50 and summary["md_ps"] == 0.05
    selected, random = summary["selected_train_indices"], summary["random_train_indices"]
    assert len(set(selected)) == len(set(random)) == 25
    assert set(selected) | set(random) <= set(range(25, 75))  # pool frames only: no start or validation frame
    for name, frames in (("start_25", 25), ("selected_50", 50), ("random_50", 50)):
        training = summary["training"][name]
        assert training["train_frames"] == frames and training["heads"] == 4 and training["steps"] > 0
        assert training["stop_reason"].startswith(("time budget", "no better"))
        assert summary["test"][name]["force_mae_meV_A"] > 0
        assert len(summary["test"][name]["member_force_mae_meV_A"]) == 4
    assert set(summary["md"]) == {"selected_50", "random_50"}
    for md in summary["md"].values():
        assert md["simulated_ps"] == pytest.approx(0.05) or md["collapsed"]
        assert (md["collapse_time_ps"] is not None) == md["collapsed"]
        assert md["max_force_std_meV_A"] > 0 and md["std_frames"] >= 1
    assert (tmp_path / "selection_demo.png").stat().st_size > 1000
    assert (tmp_path / "runs" / "md" / "random_50" / "state.npz").is_file()

    # a rerun trains, selects and simulates nothing again
    capsys.readouterr()
    main(argv)
    assert "heads committee" not in capsys.readouterr().out
    again = json.loads((tmp_path / "selection_demo.json").read_text())
    assert again["training"] == summary["training"] and again["selected_train_indices"] == selected
    assert again["cpu_s"] == summary["cpu_s"]  # training, selection and MD CPU are the stored ones

    # a committee trained on other frames is not resumed with new ones
    with pytest.raises(SystemExit, match="other frames"):
        fit(tmp_path / "runs", "random_50", data_root / "rmd17" / "rmd17_aspirin_train_01.npz", list(range(50)), 4,
            {"time_budget_s": 3.0})

"""benchmarks.pretrain_scaling: fine-tunes from each snapshot of a (tiny) pretraining run and from
scratch, and tabulates test error against conformations seen."""

from __future__ import annotations

import json

import pytest

from benchmarks.pretrain_scaling import main, snapshots
from forcefield_et.training import config_from_dict, train
from tests.conftest import shared_path
from tests.training.test_trainer import tiny_mixed_config


@pytest.mark.timeout(600)
def test_quick_scaling_curve_from_snapshots(tmp_path):
    data_root = shared_path("rmd17").parent
    run = tmp_path / "pretrain"
    train(config_from_dict(tiny_mixed_config(run, max_steps=6, valid_every=100, checkpoint_every=100,
                                             snapshot_steps=[3, 6])), progress=False)
    assert [s["conformations_seen"] for s in snapshots(run)] == [18, 36]
    out = tmp_path / "results"
    main(["--quick", "--run", str(run), "--molecules", "ethanol", "--sizes", "50", "--data-root", str(data_root),
          "--runs", str(tmp_path / "runs"), "--out", str(out)])
    rows = json.loads((out / "pretrain_scaling.json").read_text())["runs"]
    assert sorted(r["conformations_seen"] for r in rows) == [0, 18, 36]
    assert {r["start"] for r in rows} == {"scratch", "step_3", "step_6"}
    assert all(r["test_force_mae_meV_A"] > 0 and r["test_frames"] == 50 for r in rows)
    table = (out / "pretrain_scaling.md").read_text()
    assert "| 36 |" in table and "ethanol, 50 frames" in table
    assert (out / "pretrain_scaling.png").stat().st_size > 1000


def test_budget_bound_columns_compare_at_the_steps_the_slowest_run_reached():
    from benchmarks.pretrain_scaling import equal_steps_table

    def run(seen, molecule, n_train, steps, stop, curve):
        return {"conformations_seen": seen, "molecule": molecule, "n_train": n_train, "steps": steps,
                "stop_reason": stop, "curve": [{"step": s, "test_force_mae_meV_A": e} for s, e in curve]}

    budget = "time budget of 0.5 CPU-hours used"
    rows = [
        run(0, "aspirin", 950, 11000, budget, [(5000, 40.0), (7000, 35.0), (11000, 27.0)]),
        run(100, "aspirin", 950, 7200, budget, [(5000, 33.0), (7000, 30.0), (7200, 29.5)]),
        # a column in which a run stopped early is not budget-bound: no equal-steps column
        run(0, "ethanol", 50, 5000, budget, [(5000, 60.0)]),
        run(100, "ethanol", 50, 2000, "no better valid_loss in 10 validations", [(2000, 55.0)]),
    ]
    table = equal_steps_table(rows)
    assert table.splitlines() == [
        "| conformations seen in pretraining | aspirin, 950 frames, at ≤ 7,200 steps |",
        "|---|---|",
        "| 0 | 35.00 (7,000) |",
        "| 100 | 29.50 (7,200) |",
    ]
    assert equal_steps_table(rows[2:]) == ""

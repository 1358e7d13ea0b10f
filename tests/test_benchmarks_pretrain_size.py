"""benchmarks.pretrain_size: the --quick pipeline (one tiny size to its CPU budget, report, resume)."""

from __future__ import annotations

import json
import time

import pytest

from benchmarks.pretrain_size import main, size_config
from tests.conftest import shared_path


def test_size_config_changes_only_the_size_schedule_and_budget(tmp_path):
    shared_path("xtb", "xtb_shard0.npz")
    config = size_config(64, 3, 1800.0, tmp_path)
    assert (config.model["hidden_channels"], config.model["num_layers"]) == (64, 3)
    assert config.optim.time_budget_s == 1800.0 and config.optim.schedule == "plateau"
    assert config.optim.batch_size == 32 and config.optim.compile and not config.optim.snapshot_steps
    assert {s.name for s in config.sources} >= {"xtb_md", "rmd17_others", "qm9_equilibrium"}
    assert config.run_dir.endswith("h64-l3")


@pytest.mark.timeout(300)
def test_quick_pipeline_reports_and_resumes(tmp_path):
    shared_path("xtb", "xtb_shard0.npz")
    out, runs = tmp_path / "out", tmp_path / "runs"
    main(["--quick", "--out", str(out), "--runs", str(runs)])
    summary = json.loads((out / "pretrain_size.json").read_text())
    (run,) = summary["runs"]
    assert run["size"] == "h16-l1" and run["stop_reason"].startswith("time budget")
    assert run["curve"] and all(p["xtb_md"] > 0 and p["rmd17_others"] > 0 for p in run["curve"])
    assert not (runs / "h16-l1" / "last.pt").exists() and (runs / "h16-l1" / "best.pt").is_file()
    assert (out / "pretrain_size.png").stat().st_size > 1000
    start = time.process_time()
    main(["--quick", "--out", str(out), "--runs", str(runs)])  # finished: reported again, not retrained
    assert time.process_time() - start < 10
    assert json.loads((out / "pretrain_size.json").read_text())["runs"] == summary["runs"]

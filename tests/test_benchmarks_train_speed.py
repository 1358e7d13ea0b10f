"""benchmarks.train_speed: the --quick pipeline, the batch-size sweep and data-parallel workers."""

from __future__ import annotations

import argparse
import json

import pytest

from benchmarks.train_speed import main as speed_main
from tests.conftest import shared_path


@pytest.mark.timeout(600)
def test_quick_train_speed_measures_both_trainers_on_the_same_batches(tmp_path):
    data_root = shared_path("rmd17").parent
    result = speed_main(["--quick", "--data-root", str(data_root), "--out", str(tmp_path)])
    stored = json.loads((tmp_path / "train_speed.json").read_text())
    assert stored["speedup"] == pytest.approx(result["speedup"])
    for name in ("eager, subnormal basis", "eager", "compiled"):
        assert stored[name]["conformations_per_cpu_s"] > 0
        assert len(stored[name]["conformations_per_cpu_s_per_block"]) == 2
    assert stored["speedup_over_baseline"] > 0 and set(stored["first_step_loss"]) == {
        "eager, subnormal basis", "eager", "compiled"}
    # the first step of both trainers: same weights, same batch, the same loss to float32 rounding
    assert stored["first_step_loss_relative_difference"] < 1e-4
    assert set(stored["eager_phases_ms"]) == {"data", "forward + force backward", "parameter backward",
                                              "optimiser", "EMA"}
    assert (tmp_path / "train_speed.png").stat().st_size > 1000
    # the batch-size sweep is added to the same file, the earlier measurement kept
    sweep = speed_main(["--quick", "--batch-sizes", "2", "4", "--data-root", str(data_root), "--out", str(tmp_path)])
    stored = json.loads((tmp_path / "train_speed.json").read_text())
    assert stored["speedup"] == pytest.approx(result["speedup"])
    assert [row["batch_size"] for row in stored["batch_size_sweep"]["rows"]] == [2, 4]
    assert stored["batch_size_sweep"]["rows"][0]["ratio_to_first"] == 1.0
    assert all(row["conformations_per_cpu_s"] > 0 for row in sweep["rows"])


@pytest.mark.timeout(300)
def test_data_parallel_workers_report_wall_and_cpu_throughput(tmp_path):
    from benchmarks.train_speed import run_workers

    data_root = shared_path("rmd17").parent
    args = argparse.Namespace(molecule="ethanol", batch_size=4, rounds=1, block=2, warmup=1,
                              data_root=str(data_root), quick=True)
    report = run_workers(2, False, args, tmp_path, "eager2")
    assert report["workers"] == 2 and report["steps"] == 2
    assert report["conformations_per_wall_s"] > 0 and report["cpu_s"] > 0

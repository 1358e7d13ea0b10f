"""benchmarks.finetune_study: the --quick pipeline (pretrained vs scratch on rMD17 ethanol)."""

from __future__ import annotations

import json

import numpy as np

from benchmarks.finetune_study import main
from tests.conftest import shared_path


def test_quick_study_trains_both_starts_and_tests_on_the_test_split(tmp_path):
    data_root = shared_path("rmd17")
    main(["--quick", "--data-root", str(data_root), "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "finetune_study.json").read_text())
    runs = summary["runs"]
    assert {r["start"] for r in runs} == {"pretrained", "scratch"}
    for run in runs:
        assert run["molecule"] == "ethanol" and run["n_train"] == 50 and run["test_frames"] == 50
        assert np.isfinite(run["test_force_mae_meV_A"]) and run["test_force_mae_meV_A"] > 0
    assert (tmp_path / "finetune_curves.png").stat().st_size > 1000
    # Each run is cached: a second call reads the results instead of training again.
    first = {(r["start"], r["wall_time_s"]) for r in runs}
    main(["--quick", "--data-root", str(data_root), "--out", str(tmp_path)])
    again = json.loads((tmp_path / "finetune_study.json").read_text())["runs"]
    assert {(r["start"], r["wall_time_s"]) for r in again} == first

"""benchmarks.finetune_study: the --quick pipeline (pretrained vs scratch on rMD17 ethanol)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from benchmarks.finetune_study import main, table
from tests.conftest import shared_path


def test_quick_study_trains_both_starts_and_tests_on_the_test_split(tmp_path, monkeypatch):
    data_root = shared_path("rmd17").parent
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
    # --report trains nothing and rebuilds the same summary, with the markdown table
    (tmp_path / "finetune_study.json").unlink()
    main(["--report", "--out", str(tmp_path)])
    reported = json.loads((tmp_path / "finetune_study.json").read_text())["runs"]
    assert {(r["start"], r["wall_time_s"]) for r in reported} == first
    row = [line for line in (tmp_path / "finetune_table.md").read_text().splitlines() if line.startswith("| ethanol")]
    assert len(row) == 1 and "×" in row[0]

    # weights are not committed: run_one(need_weights=True) trains a finished run again when its
    # best.pt is missing, keeps the stored result and compares (same machine: exactly equal)
    from benchmarks.finetune_study import run_one

    run_dir = tmp_path / "runs" / "ethanol-50-scratch"
    stored = (run_dir / "result.json").read_text()
    log = (run_dir / "metrics.csv").read_text()
    digest = hashlib.sha256((run_dir / "best.pt").read_bytes()).hexdigest()
    (run_dir / "best.pt").unlink()
    assert run_one("ethanol", 50, "scratch", 10, tmp_path, data_root, 50) == json.loads(stored)
    assert not (run_dir / "best.pt").exists()  # without need_weights the stored result is enough
    rebuilt = run_one("ethanol", 50, "scratch", 10, tmp_path, data_root, 50, need_weights=True)
    assert rebuilt == json.loads(stored) and (run_dir / "result.json").read_text() == stored
    assert hashlib.sha256((run_dir / "best.pt").read_bytes()).hexdigest() == digest
    assert (run_dir / "metrics.csv").read_text() == log  # the original run's log stays
    assert (run_dir / "rebuild_metrics.csv").read_text().splitlines()[0] == log.splitlines()[0]
    rebuild = json.loads((run_dir / "rebuild.json").read_text())
    assert rebuild["rebuilt"]["test_force_mae_meV_A"] == rebuilt["test_force_mae_meV_A"]
    assert set(rebuild["relative_difference"].values()) == {0.0}

    # a rebuild stopped part-way keeps the original log and config on disk, and the next call finishes it
    import benchmarks.finetune_study as study

    config = (run_dir / "config.yaml").read_text()
    (run_dir / "best.pt").unlink()

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(study, "train", stopped)
        with pytest.raises(KeyboardInterrupt):
            run_one("ethanol", 50, "scratch", 10, tmp_path, data_root, 50, need_weights=True)
    assert (run_dir / "original_metrics.csv").read_text() == log
    assert (run_dir / "original_config.yaml").read_text() == config
    assert run_one("ethanol", 50, "scratch", 10, tmp_path, data_root, 50, need_weights=True) == json.loads(stored)
    assert (run_dir / "metrics.csv").read_text() == log and (run_dir / "config.yaml").read_text() == config
    assert not (run_dir / "original_metrics.csv").exists() and (run_dir / "best.pt").is_file()


def test_table_gives_the_scratch_over_pretrained_ratio_and_marks_missing_runs():
    def run(molecule, n, start, force, energy):
        return {"molecule": molecule, "n_train": n, "start": start, "test_force_mae_meV_A": force,
                "test_energy_mae_meV": energy}

    rows = table([run("aspirin", 50, "scratch", 90.0, 40.0), run("aspirin", 50, "pretrained", 30.0, 20.0),
                  run("ethanol", 950, "scratch", 50.0, 25.0)]).splitlines()
    assert rows[2] == "| aspirin | 50 | 90.0 | 30.0 | 3.00× | 40.0 | 20.0 |"
    assert rows[3] == "| ethanol | 950 | 50.0 | not run | – | 25.0 | not run |"


def test_bundle_exports_the_1000_frame_pretrained_run_with_its_test_errors(tmp_path):
    import pytest

    from benchmarks.finetune_study import bundle
    from forcefield_et import build_model, load_model, save_checkpoint
    from forcefield_et.checkpoint import read_checkpoint

    with pytest.raises(FileNotFoundError, match="--sizes 1000 --starts pretrained"):
        bundle(tmp_path, "ethanol", destination_dir=tmp_path)
    run_dir = tmp_path / "runs" / "ethanol-1000-pretrained"
    run_dir.mkdir(parents=True)
    save_checkpoint(run_dir / "best.pt", build_model(hidden_channels=16, num_layers=1, num_heads=2, num_rbf=8))
    result = {"n_train": 950, "steps": 2000, "test_frames": 1000, "test_force_mae_meV_A": 12.5,
              "test_energy_mae_meV": 3.5}
    (run_dir / "result.json").write_text(json.dumps(result))
    path = bundle(tmp_path, "ethanol", destination_dir=tmp_path)
    assert path == tmp_path / "rmd17-ethanol.pt"
    meta = read_checkpoint(path)["metadata"]
    assert meta["name"] == "rmd17-ethanol" and meta["test_errors"]["force_mae_meV_A"] == 12.5
    assert "frames 0-949" in meta["description"] and "optimizer" not in str(read_checkpoint(path).keys())
    load_model(path)  # loads as an inference model
    from benchmarks.paths import rmd17_file

    if rmd17_file("ethanol").is_file():  # the card names what the model was fitted to
        assert meta["training_domain"] == {"elements": [1, 6, 8], "compositions": ["C2H6O"]}

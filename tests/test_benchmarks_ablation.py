"""benchmarks.ablation: the pretraining-objective ablation pipeline (pretrain -> fine-tune -> MD -> report)."""

from __future__ import annotations

import json

import numpy as np

from benchmarks.ablation import main, pretrain_config, table
from benchmarks.finetune_study import start_label
from tests.conftest import shared_path


def test_variants_differ_only_in_their_equilibrium_objectives():
    configs = {v: pretrain_config(v) for v in ("force_only", "zero_force", "denoise")}
    objectives = {v: {s.objective for s in c.sources} for v, c in configs.items()}
    assert objectives["force_only"] == {"forces"}
    assert objectives["zero_force"] == objectives["denoise"] == {"forces", "equilibrium"}
    assert configs["force_only"].objectives.denoise_fraction == 0.0
    assert configs["zero_force"].objectives.denoise_fraction == 0.0
    assert configs["denoise"].objectives.denoise_fraction > 0.0
    force_sources = {v: [s for s in c.sources if s.objective == "forces"] for v, c in configs.items()}
    assert force_sources["force_only"] == force_sources["zero_force"] == force_sources["denoise"]
    for name in ("model", "seed", "optim"):
        assert getattr(configs["force_only"], name) == getattr(configs["denoise"], name)


def test_a_run_folders_generic_checkpoint_is_named_after_its_folder():
    assert start_label("pretrained") == "pretrained" and start_label("scratch") == "scratch"
    assert start_label("runs/ablation_denoise/best.pt") == "ablation_denoise"
    assert start_label("runs/ablation_force_only/last.pt") == "ablation_force_only"
    assert start_label("models/my_start.pt") == "my_start"


def test_quick_ablation_pretrains_fine_tunes_runs_md_and_reports(tmp_path):
    for folder in ("rmd17", "xtb", "combustion"):  # the sources of the ablation configs
        shared_path(folder)
    shared_path("qm7x", "qm7x_250_small.npz")
    shared_path("qm9", "qm9_500_U0_eV.db")
    main(["--quick", "--variants", "denoise", "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "ablation.json").read_text())
    row = next(r for r in summary["rows"] if r["start"] == "ablation_denoise")
    assert row["pretrain_valid"]["step"] == 4
    assert np.isfinite(row["pretrain_valid"]["xtb_md/force_mae_meV_A"])
    assert row["finetune"]["start"] == "ablation_denoise" and row["finetune"]["test_frames"] == 20
    assert row["md"]["simulated_ps"] > 0 and row["md"]["model"] == "ablation_denoise-50"
    assert (tmp_path / "ablation.png").stat().st_size > 1000
    markdown = (tmp_path / "ablation.md").read_text()
    assert "| + denoising, 4 steps |" in markdown
    # every stage is cached: a second call repeats nothing
    walls = row["finetune"]["wall_time_s"], row["md"]["md_wall_s"]
    main(["--quick", "--variants", "denoise", "--out", str(tmp_path)])
    again = next(r for r in json.loads((tmp_path / "ablation.json").read_text())["rows"]
                 if r["start"] == "ablation_denoise")
    assert (again["finetune"]["wall_time_s"], again["md"]["md_wall_s"]) == walls


def test_table_marks_collapsed_and_missing_stages():
    rows = [
        {"start": "scratch", "size": 1000, "finetune": {"n_train": 950, "test_force_mae_meV_A": 56.7,
                                                         "test_energy_mae_meV": 20.0},
         "md": {"stability_ps": 1.25, "simulated_ps": 1.25, "collapsed": True, "hr_mae": 3e-4, "steps_per_s": 70.0}},
        {"start": "ablation_force_only", "size": 1000, "pretrain_valid": {"xtb_md/force_mae_meV_A": 300.0},
         "finetune": None, "md": None},
    ]
    lines = table(rows).splitlines()
    assert lines[2] == "| scratch | – | 950 | 56.7 | 20.0 | 1.25 of 1.25 (collapsed) | 3.00 | 70.0 |"
    assert lines[3] == "| force only | 300.0 / – / – | 1000 | – | – | – | – | – |"

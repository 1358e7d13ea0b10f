"""benchmarks.finetune_converged: the --quick pipeline, the learning curve's reading, and the
recipe's variants as cells of their own."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.finetune_converged import LEARNING_RATE, QUICK_BUDGET_S, Variant, cell_name, recipe_config, value_at
from benchmarks.finetune_converged import main as converged_main
from tests.conftest import shared_path


def test_quick_converged_study_stops_on_its_budget_and_reports(tmp_path):
    data_root = shared_path("rmd17").parent
    runs, out = tmp_path / "runs", tmp_path / "results"
    converged_main(["--quick", "--data-root", str(data_root), "--runs", str(runs), "--out", str(out)])
    result = json.loads((out / "runs" / "ethanol-50-scratch" / "result.json").read_text())
    assert result["stop_reason"].startswith("time budget") and result["cpu_hours"] >= QUICK_BUDGET_S / 3600
    assert result["n_train"] == 50 and result["test_frames"] == 50 and result["test_force_mae_meV_A"] > 0
    assert result["curve"] and all(p["test_force_mae_meV_A"] > 0 for p in result["curve"])
    assert result["machine"]["cpu"] and result["machine"]["torch"] == torch.__version__  # what a CPU-hour bought
    run_dir = runs / "ethanol-50-scratch"
    assert (run_dir / "best.pt").is_file() and not (run_dir / "last.pt").exists()  # no optimiser state kept
    assert (run_dir / "learning_curve.csv").is_file()
    table = (out / "finetune_converged.md").read_text()
    assert "| ethanol | 50 | scratch |" in table
    # a finished cell is read back, not trained again
    converged_main(["--quick", "--data-root", str(data_root), "--runs", str(runs), "--out", str(out)])
    again = json.loads((out / "runs" / "ethanol-50-scratch" / "result.json").read_text())
    assert again == result


def test_value_at_reads_the_best_error_reached_by_a_time():
    curve = [{"cpu_hours": 0.1, "test_force_mae_meV_A": 30.0}, {"cpu_hours": 0.2, "test_force_mae_meV_A": 20.0},
             {"cpu_hours": 0.3, "test_force_mae_meV_A": 25.0}]
    assert value_at(curve, 0.05) is None
    assert value_at(curve, 0.15) == 30.0
    assert value_at(curve, 0.35) == 20.0


def test_a_variant_is_a_cell_of_its_own_with_its_change_in_the_config(tmp_path):
    source = {"name": "aspirin", "format": "rmd17", "path": "a.npz", "objective": "energy_forces"}
    base = recipe_config(tmp_path / "base", [source], 50, "pretrained")
    assert base.optim.lr == LEARNING_RATE and base.objectives.force_weight == 10.0
    lower = Variant(lr=1e-4)
    assert cell_name("aspirin", 50, "pretrained", lower) == "aspirin-50-pretrained-lr0.0001"
    assert lower.labels == ["learning rate 0.0001"]
    changed = recipe_config(tmp_path / "lr", [source], 50, "pretrained", variant=lower)
    assert changed.optim.lr == 1e-4 and changed.optim.min_lr == base.optim.min_lr
    heavy = Variant(force_weight=100.0, zbl=0.75)
    assert cell_name("aspirin", 50, "scratch", heavy) == "aspirin-50-scratch-zbl0.75-fw100"
    # a stored result names its variant; results from before a setting existed read as the recipe's
    assert Variant.of({"replay": 0.2, "zbl": 0.0, "force_weight": 10.0, "lr": 1e-4}) == Variant(0.2, lr=1e-4)
    assert Variant.of({"zbl": 0.0, "replay": 0.0, "force_weight": 10.0}) == Variant()
    # a patient schedule: the halving and the early stop wait longer, by the same margin as the recipe's
    patient = Variant(patience=10)
    assert cell_name("ethanol", 1000, "pretrained", patient) == "ethanol-1000-pretrained-pat10"
    assert patient.labels == ["plateau patience 10"]
    slow = recipe_config(tmp_path / "pat", [source], 1000, "pretrained", variant=patient)
    recipe_cell = recipe_config(tmp_path / "recipe", [source], 1000, "pretrained")
    assert (slow.optim.plateau_patience, slow.optim.early_stop_patience) == (10, 17)
    assert (recipe_cell.optim.plateau_patience, recipe_cell.optim.early_stop_patience) == (3, 10)
    assert Variant.of({"replay": 0.0, "plateau_patience": 10}) == patient
    # a cosine over the CPU budget: no step count, no early stopping, the budget ends it
    cosine = Variant(schedule="cosine")
    assert cell_name("naphthalene", 1000, "pretrained", cosine) == "naphthalene-1000-pretrained-cosine"
    assert cosine.labels == ["cosine over the budget"]
    annealed = recipe_config(tmp_path / "cosine", [source], 1000, "pretrained", variant=cosine)
    assert annealed.optim.schedule == "cosine" and annealed.optim.early_stop_patience == 0
    assert annealed.optim.max_steps >= 10**9 and annealed.optim.time_budget_s == recipe_cell.optim.time_budget_s
    assert Variant.of({"replay": 0.0, "schedule": "cosine"}) == cosine and Variant.of({"replay": 0.0}) == Variant()
    # a slower encoder: the representation's rate is a share of the head's
    gentle = Variant(0.2, lr=1e-3, encoder_lr_scale=0.3)
    assert cell_name("aspirin", 50, "pretrained", gentle) == "aspirin-50-pretrained-replay-lr0.001-enc0.3"
    assert gentle.labels == ["replay", "learning rate 0.001", "encoder learning rate × 0.3"]
    assert recipe_config(tmp_path / "enc", [source], 50, "pretrained", variant=gentle).optim.encoder_lr_scale == 0.3
    assert base.optim.encoder_lr_scale == 1.0
    assert Variant.of({"replay": 0.2, "lr": 1e-3, "encoder_lr_scale": 0.3}) == gentle
    # best.pt, the schedule and early stopping by the validation force MAE instead of the loss
    by_mae = Variant(0.2, lr=1e-3, patience=10, select_by="force-mae")
    assert cell_name("ethanol", 50, "pretrained", by_mae) == "ethanol-50-pretrained-replay-lr0.001-pat10-fmae"
    assert by_mae.labels[-1] == "selected by validation force MAE"
    assert by_mae.flags()[-2:] == ["--select-by", "force-mae"]
    assert recipe_config(tmp_path / "fmae", [source], 50, "pretrained", variant=by_mae).optim.select_by == \
        "valid_force_mae_meV_A"
    assert base.optim.select_by == "valid_loss"
    assert Variant.of({"replay": 0.2, "lr": 1e-3, "plateau_patience": 10, "select_by": "force-mae"}) == by_mae


def test_a_larger_replay_share_is_a_cell_of_its_own_and_reaches_the_batch_mix(tmp_path):
    from benchmarks.finetune_converged import REPLAY_RATIO, run_config

    heavier = Variant(0.5, lr=1e-3)
    assert cell_name("aspirin", 50, "pretrained", heavier) == "aspirin-50-pretrained-replay0.5-lr0.001"
    assert heavier.labels == ["replay 0.5", "learning rate 0.001"]
    assert Variant.of({"replay": 0.5, "lr": 1e-3}) == heavier
    assert cell_name("aspirin", 50, "pretrained", Variant(REPLAY_RATIO)) == "aspirin-50-pretrained-replay"
    config = run_config("aspirin", 50, "pretrained", tmp_path / "data", tmp_path / "runs", variant=heavier)
    shares = {source.name: source.ratio for source in config.sources}
    assert shares == {"aspirin": 0.5, "replay": 0.5}
    assert config.run_dir.endswith("aspirin-50-pretrained-replay0.5-lr0.001")


def test_bundle_exports_the_1000_frame_cell_with_the_lowest_validation_error(tmp_path):
    import pytest

    from benchmarks.finetune_converged import export_destination, export_model
    from forcefield_et import build_model, load_model, save_checkpoint
    from forcefield_et.checkpoint import read_checkpoint

    runs, out = tmp_path / "runs", tmp_path / "results"
    with pytest.raises(FileNotFoundError, match="--sizes 1000 --starts scratch"):
        export_model("ethanol", "scratch", tmp_path / "x.pt", out, runs)

    def cell(name: str, n_train: int, valid: float, test: float, replay: float) -> None:
        (runs / name).mkdir(parents=True)
        save_checkpoint(runs / name / "best.pt", build_model(hidden_channels=16, num_layers=1, num_heads=2, num_rbf=8))
        result = {"cell": name, "molecule": "ethanol", "n_train": min(n_train, 950), "n_train_requested": n_train,
                  "start": "scratch", "zbl": 0.0, "replay": replay, "force_weight": 10.0, "lr": LEARNING_RATE,
                  "steps": 5000, "best_step": 4000, "cpu_hours": 1.25, "stop_reason": "no better valid_loss",
                  "test_frames": 1000, "test_force_mae_meV_A": test, "test_energy_mae_meV": 2.0,
                  "test_force_rmse_meV_A": 1.5 * test, "valid_force_mae_meV_A": valid, "valid_energy_mae_meV": 2.0}
        (out / "runs" / name).mkdir(parents=True)
        (out / "runs" / name / "result.json").write_text(json.dumps(result))

    cell("ethanol-1000-scratch", 1000, valid=9.0, test=8.0, replay=0.0)
    cell("ethanol-1000-scratch-replay", 1000, valid=7.0, test=9.5, replay=0.2)
    cell("ethanol-50-scratch", 50, valid=1.0, test=1.0, replay=0.0)  # another size: never chosen
    destination = export_destination("ethanol", "scratch", runs)
    assert destination == runs / "exported" / "rmd17-ethanol-scratch.pt"
    assert export_destination("ethanol", "pretrained", runs).name == "rmd17-ethanol.pt"
    path = export_model("ethanol", "scratch", destination, out, runs, tmp_path / "no-data")
    meta = read_checkpoint(path)["metadata"]
    # chosen by the validation error (7.0), whatever its test error
    assert meta["name"] == "rmd17-ethanol-scratch" and meta["training_cost"]["cell"] == "ethanol-1000-scratch-replay"
    assert meta["test_errors"] == {"split": "rmd17 test_01", "frames": 1000, "force_mae_meV_A": 9.5,
                                   "energy_mae_meV": 2.0, "force_rmse_meV_A": 14.25}
    assert "trained from scratch" in meta["description"] and "(replay)" in meta["description"]
    assert meta["training_cost"]["cpu_hours"] == 1.25 and "optimizer" not in read_checkpoint(path)
    assert not load_model(path).use_zbl


def test_summary_and_gains_show_the_cells_chosen_on_validation():
    from benchmarks.finetune_converged import summary_table, table

    def result(start: str, replay: float, valid: float, test: float) -> dict:
        return {"cell": "x", "molecule": "aspirin", "n_train": 50, "n_train_requested": 50, "start": start,
                "zbl": 0.0, "replay": replay, "force_weight": 10.0, "lr": LEARNING_RATE, "steps": 100,
                "cpu_hours": 0.5, "stop_reason": "budget", "test_force_mae_meV_A": test, "test_energy_mae_meV": 1.0,
                "valid_force_mae_meV_A": valid, "curve": [{"cpu_hours": 0.5, "test_force_mae_meV_A": test}]}

    results = [result("scratch", 0.0, 80.0, 70.0), result("scratch", 0.2, 85.0, 60.0),
               result("pretrained", 0.0, 60.0, 56.0), result("pretrained", 0.2, 50.0, 52.0)]
    row = next(line for line in summary_table(results).splitlines() if line.startswith("| aspirin"))
    # scratch: the recipe validates better (its test error is higher: test errors never choose)
    assert "| 70.0 | 52.0 (replay) | 43.9 |" in row
    gains = next(line for line in table(results).splitlines() if line.startswith("| aspirin | 50 | 1.25×"))
    assert gains.endswith("| recipe / replay | 1.35× at 0.50 CPU-h | 1.35× |")
    # without the recipe's pretrained cell, the chosen cells still get their row
    gains = next(line for line in table(results[:2] + results[3:]).splitlines() if "| recipe / replay |" in line)
    assert gains == "| aspirin | 50 | – | – | recipe / replay | 1.35× at 0.50 CPU-h | 1.35× |"


def test_a_cell_another_process_trains_is_skipped_not_failed(tmp_path, capsys):
    """Two studies over the same cells (one per core) share them: a cell whose run directory another
    process holds is left to it, and the study goes on."""
    from tests.test_files import LockHolder

    data_root = shared_path("rmd17").parent
    runs, out = tmp_path / "runs", tmp_path / "results"
    with LockHolder(runs / "ethanol-50-scratch") as holder:
        converged_main(["--quick", "--data-root", str(data_root), "--runs", str(runs), "--out", str(out)])
        holder.stop()
    output = capsys.readouterr().out
    assert "skipped:" in output and "is in use by process" in output
    assert not (out / "runs" / "ethanol-50-scratch" / "result.json").exists()
    assert not (runs / "ethanol-50-scratch" / "best.pt").exists()


def test_the_molecules_xtb_stage_is_a_variant_reported_apart_from_the_pretrained_start(tmp_path):
    """Cells with the molecule's GFN2-xTB stage see data the rMD17 protocol does not (the molecule's SMILES and
    a semi-empirical method): they get a column of their own, their CPU-hours count the corpus and the stage,
    and validation never picks them as the pretrained start's cell (nor for the bundled models)."""
    from benchmarks.finetune_converged import chosen_cell, run_config, summary_table, variants_table

    staged = Variant(0.5, lr=2e-3, patience=10, xtb_stage=True)
    assert cell_name("aspirin", 50, "pretrained", staged) == "aspirin-50-pretrained-xtb-replay0.5-lr0.002-pat10"
    assert staged.labels[0] == "the molecule's GFN2-xTB stage"
    record = {"stage": "aspirin-pretrained-xtb", "cpu_hours": 0.5, "corpus_cpu_hours": 0.1}
    assert Variant.of({"replay": 0.5, "lr": 2e-3, "plateau_patience": 10, "xtb_stage": record}) == staged
    # the stage's weights start the cell; its name keeps the start
    config = run_config("aspirin", 50, "pretrained", tmp_path / "data", tmp_path / "runs", variant=staged,
                        init_from=str(tmp_path / "stage" / "best.pt"))
    assert config.init_from == str(tmp_path / "stage" / "best.pt")
    assert config.run_dir.endswith("aspirin-50-pretrained-xtb-replay0.5-lr0.002-pat10")

    def result(valid: float, test: float, stage: bool) -> dict:
        return {"cell": "x", "molecule": "aspirin", "n_train": 50, "n_train_requested": 50, "start": "pretrained",
                "zbl": 0.0, "replay": 0.5, "force_weight": 10.0, "lr": 2e-3, "plateau_patience": 10, "steps": 100,
                "cpu_hours": 0.5, "stop_reason": "budget", "test_force_mae_meV_A": test, "test_energy_mae_meV": 1.0,
                "valid_force_mae_meV_A": valid, "curve": [{"cpu_hours": 0.5, "test_force_mae_meV_A": test}],
                **({"xtb_stage": record, "cpu_hours_total": 1.1} if stage else {})}

    plain, with_stage = result(53.7, 51.0, False), result(40.0, 38.5, True)
    assert chosen_cell([plain, with_stage], "aspirin", "pretrained", 50) is plain  # despite its higher error
    assert chosen_cell([plain, with_stage], "aspirin", "pretrained", 50, xtb_stage=True) is with_stage
    header, _, row = summary_table([plain, with_stage]).splitlines()[:3]
    assert "| pretrained | pretrained + the molecule's GFN2-xTB stage | MACE |" in header
    assert row.endswith("| 51.0 (replay 0.5, learning rate 0.002, plateau patience 10) "
                        "| 38.5 (replay 0.5, learning rate 0.002, plateau patience 10) | 43.9 |")
    assert "GFN2-xTB" not in summary_table([plain])  # no column before such a cell has finished
    staged_row = next(line for line in variants_table([plain, with_stage]).splitlines() if "GFN2-xTB" in line)
    assert staged_row.endswith("| – / 40.00 | – / 38.50 | – / 1.10 |")  # corpus + stage + cell


def test_quick_xtb_stage_makes_the_corpus_trains_the_stage_and_starts_the_cell_from_it(tmp_path):
    import pytest

    pytest.importorskip("rdkit", reason="the GFN2-xTB stage needs RDKit: pip install 'forcefield-et[corpus]'")
    pytest.importorskip("tblite", reason="the GFN2-xTB stage needs tblite: pip install 'forcefield-et[corpus]'")
    from forcefield_et.data import read_xtb_corpus

    data_root = shared_path("rmd17").parent
    runs, out = tmp_path / "runs", tmp_path / "results"
    converged_main(["--quick", "--xtb-stage", "--data-root", str(data_root), "--runs", str(runs), "--out", str(out)])
    result = json.loads((out / "runs" / "ethanol-50-scratch-xtb" / "result.json").read_text())
    stage = json.loads((out / "xtb_stage" / "ethanol-scratch-xtb.json").read_text())
    assert result["xtb_stage"] == stage and stage["smiles"] == "CCO" and stage["frames_md"] == 2 * 4
    corpus = read_xtb_corpus(runs / "xtb_stage" / "ethanol-corpus" / "xtb_shard0.npz")
    assert len(corpus) == stage["frames_relaxed"] + stage["frames_md"]  # no displaced frames
    assert result["cpu_hours_total"] == pytest.approx(
        result["cpu_hours"] + stage["cpu_hours"] + stage["corpus_cpu_hours"])
    stage_dir = runs / "xtb_stage" / "ethanol-scratch-xtb"
    assert (stage_dir / "best.pt").is_file() and not (stage_dir / "last.pt").exists()
    config = (runs / "ethanol-50-scratch-xtb" / "config.yaml").read_text()
    assert str(stage_dir / "best.pt") in config  # the cell starts from the stage's weights
    # a cell to train again whose finished stage has lost its weights says so, before any training
    (out / "runs" / "ethanol-50-scratch-xtb" / "result.json").unlink()
    (stage_dir / "best.pt").unlink()
    with pytest.raises(FileNotFoundError, match="weights of the finished GFN2-xTB stage ethanol-scratch-xtb"):
        converged_main(["--quick", "--xtb-stage", "--data-root", str(data_root), "--runs", str(runs),
                        "--out", str(out)])


def test_xtb_stage_table_sets_each_stage_cell_beside_the_cell_without_it():
    from benchmarks.finetune_converged import xtb_stage_table

    stage = {"stage": "aspirin-pretrained-xtb", "frames_relaxed": 20, "frames_md": 4000, "steps": 8417,
             "cpu_hours": 0.5, "corpus_cpu_hours": 0.1, "valid_force_mae_meV_A": 25.4}

    def result(test: float, staged: bool) -> dict:
        return {"cell": "x", "molecule": "aspirin", "n_train": 50, "n_train_requested": 50, "start": "pretrained",
                "replay": 0.5, "cpu_hours": 0.5, "test_force_mae_meV_A": test, "test_energy_mae_meV": test / 2,
                "valid_force_mae_meV_A": test, **({"xtb_stage": stage, "cpu_hours_total": 1.1} if staged else {})}

    assert xtb_stage_table([result(51.0, False)]) == ""
    row = xtb_stage_table([result(51.0, False), result(40.0, True)]).splitlines()[2]
    assert row == ("| aspirin | 50 | pretrained | 20 + 4000 | 8,417, 0.50 | 25.4 | 51.0 / 40.0 | 25.5 / 20.0 "
                   "| 0.50 / 1.10 (0.10 + 0.50 + 0.50) | 43.9 |")


def test_a_longer_budget_is_a_variant_with_its_own_cell_and_time_budget(tmp_path):
    """``--budget-hours H``: the cell's CPU budget instead of BUDGET_HOURS of its size, in the cell's name,
    its labels and its result (so that validation can choose between the budgets)."""
    from benchmarks.finetune_converged import BUDGET_HOURS, run_config

    longer = Variant(0.2, lr=1e-3, budget_hours=2.0)
    assert cell_name("naphthalene", 50, "pretrained", longer) == "naphthalene-50-pretrained-replay-lr0.001-budget2h"
    assert longer.labels == ["replay", "learning rate 0.001", "2 CPU-hour budget"]
    assert Variant.of({"replay": 0.2, "lr": 1e-3, "budget_hours": 2.0}) == longer
    assert Variant.of({"replay": 0.2, "lr": 1e-3}) == Variant(0.2, lr=1e-3)  # results from before the option
    for variant, hours in ((longer, 2.0), (Variant(0.2, lr=1e-3), BUDGET_HOURS[50])):
        config = run_config("naphthalene", 50, "pretrained", tmp_path / "data", tmp_path / "runs", variant=variant)
        assert config.optim.time_budget_s == 3600 * hours


def test_a_longer_xtb_stage_is_a_stage_and_a_cell_of_its_own(tmp_path):
    """``--xtb-stage-hours H``: the GFN2-xTB stage's CPU budget, in the stage's name (so that the stages of two
    budgets never share a run directory), the cell's name, its labels and its result."""
    from benchmarks.finetune_converged import XTB_STAGE_HOURS, xtb_stage_name

    longer = Variant(0.2, xtb_stage=True, xtb_stage_hours=2.0)
    assert cell_name("naphthalene", 50, "pretrained", longer) == "naphthalene-50-pretrained-xtb2h-replay"
    assert xtb_stage_name("naphthalene", "pretrained", 2.0) == "naphthalene-pretrained-xtb2h"
    assert xtb_stage_name("naphthalene", "pretrained") == "naphthalene-pretrained-xtb"  # the default budget
    assert longer.labels == ["the molecule's GFN2-xTB stage of 2 CPU-hours", "replay"]
    assert longer.recipe_labels == ["replay"]
    record = {"stage": "naphthalene-pretrained-xtb2h", "cpu_hours": 2.0, "corpus_cpu_hours": 0.1}
    assert Variant.of({"replay": 0.2, "xtb_stage": record, "xtb_stage_hours": 2.0}) == longer
    assert Variant.of({"replay": 0.2, "xtb_stage": record}) == Variant(0.2, xtb_stage=True)  # older results
    assert XTB_STAGE_HOURS != 2.0
    with pytest.raises(ValueError, match="needs the stage"):
        Variant(xtb_stage_hours=2.0)


def test_a_stage_budget_without_the_stage_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        converged_main(["--xtb-stage-hours", "2", "--report"])
    assert stop.value.code == 2 and "needs the stage" in capsys.readouterr().err


@pytest.mark.parametrize("variant", [
    Variant(), Variant(0.2, lr=1e-3, budget_hours=2.0),
    Variant(0.5, 0.75, 100.0, 2e-3, 10, "cosine", 0.3, True, 1.5, "force-mae", 2.0),
], ids=["recipe", "replay-lr-budget", "everything"])
def test_a_variants_flags_select_it_again(variant):
    from benchmarks.finetune_converged import build_parser, variant_of_arguments

    assert variant_of_arguments(build_parser().parse_args(variant.flags())) == variant


def test_bundling_copies_the_export_but_keeps_a_repair_of_the_same_cell(tmp_path):
    """``--bundle`` exports the pretrained start's chosen cell and bundles it, unless the bundled file is that
    cell repaired (``benchmarks.collapse_repair --bundle``); a repair of an older cell is replaced."""
    from benchmarks.finetune_converged import bundle
    from forcefield_et import build_model, save_checkpoint
    from forcefield_et.registry import export_checkpoint

    model = build_model(hidden_channels=16, num_layers=1, num_heads=2, num_rbf=8)
    weights = save_checkpoint(tmp_path / "best.pt", model)
    bundled_dir = tmp_path / "checkpoints"

    def exported(path, cell: str, **card) -> bytes:
        export_checkpoint(weights, path, {"name": "rmd17-ethanol", "training_cost": {"cell": cell},
                                          "training": {"cell": cell}, **card})
        return path.read_bytes()

    export = tmp_path / "exported" / "rmd17-ethanol.pt"
    new = exported(export, "ethanol-1000-pretrained")
    assert bundle(export, bundled_dir).startswith("bundled")
    assert (bundled_dir / "rmd17-ethanol.pt").read_bytes() == new
    # the repair's training started from the exported cell's
    repaired = exported(bundled_dir / "rmd17-ethanol.pt", "ethanol-1000-pretrained",
                        repair={"repaired_cell": "ethanol-1000-pretrained"},
                        parent_training={"cell": "ethanol-1000-pretrained"})
    assert bundle(export, bundled_dir).startswith("kept")
    assert (bundled_dir / "rmd17-ethanol.pt").read_bytes() == repaired
    newer = exported(export, "ethanol-1000-pretrained-replay")  # validation now chooses another cell
    assert bundle(export, bundled_dir).startswith("bundled")
    assert (bundled_dir / "rmd17-ethanol.pt").read_bytes() == newer

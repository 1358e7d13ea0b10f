"""Command-line interface (forcefield_et.cli): help, info, evaluate, finetune, export, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from forcefield_et import build_model, load_model, save_checkpoint
from forcefield_et.checkpoint import read_checkpoint
from forcefield_et.cli import build_parser, main
from forcefield_et.data import read_rmd17
from tests.conftest import shared_path

REPO_ROOT = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ["pretrain", "finetune", "corpus", "evaluate", "md", "select", "label", "export", "info"]


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(hidden_channels=32, num_layers=2, num_heads=4, num_rbf=16, cutoff=4.5).eval()
    path = tmp_path_factory.mktemp("ckpt") / "small.pt"
    save_checkpoint(path, model, {"description": "small CLI test model"})
    return path


def run_main(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_parser_knows_every_subcommand():
    actions = [a for a in build_parser()._actions if a.dest == "command"]
    assert sorted(actions[0].choices) == sorted(SUBCOMMANDS)


@pytest.mark.parametrize("argv", [["--help"]] + [[cmd, "--help"] for cmd in SUBCOMMANDS],
                         ids=["main"] + SUBCOMMANDS)
def test_help_exits_zero(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: forcefield-et" in out
    if argv == ["--help"]:
        assert all(cmd in out for cmd in SUBCOMMANDS)
    else:
        assert "example" in out  # every subcommand shows an example
        # defaults shown only where they say something, and never twice for one option
        assert "(default: None)" not in out and "(default: False)" not in out
        assert "(default 50) (default: 50)" not in out


def test_info_prints_elements_and_cutoff(small_checkpoint, capsys):
    code, out, _ = run_main(["info", small_checkpoint], capsys)
    assert code == 0
    assert "elements:   H C N O F S Cl" in out
    assert "cutoff:     4.5 Å" in out
    assert "32 hidden, 2 layers" in out
    assert "small CLI test model" in out


def test_evaluate_writes_metrics_and_parity_plot(small_checkpoint, tmp_path, capsys):
    data = shared_path("rmd17", "rmd17_ethanol_test_01.npz")
    out_dir = tmp_path / "eval"
    code, out, _ = run_main(["evaluate", "--model", small_checkpoint, "--data", data, "--max-frames", 20,
                             "--out", out_dir], capsys)
    assert code == 0
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["frames"] == 20 and metrics["atoms"] == 180
    # the file holds the errors of this model on these frames
    model = load_model(small_checkpoint)
    frames = read_rmd17(data, max_frames=20)
    batch = torch.arange(20).repeat_interleave(9)
    pred = model(torch.as_tensor(frames.z), torch.as_tensor(frames.pos, dtype=torch.float32), batch)
    mae = 1000 * np.abs(pred["forces"].detach().double().numpy() - frames.forces).mean()
    assert metrics["force_mae_meV_A"] == pytest.approx(mae, rel=1e-4)
    assert set(metrics["force_mae_meV_A_by_element"]) == {"H", "C", "O"}  # ethanol's elements
    assert metrics["force_mae_meV_A"] > 0 and "energy_mae_meV" in metrics
    png = out_dir / "parity.png"
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(out)["force_mae_meV_A"] == metrics["force_mae_meV_A"]


def test_md_with_max_bond_change_stops_and_exits_with_status_3(small_checkpoint, tmp_path, capsys):
    # 0.01 Å is below the thermal motion of any bond at 300 K: the first saved frame exceeds it
    out_dir = tmp_path / "md"
    code, out, err = run_main(["md", "aspirin", "--model", small_checkpoint, "--no-relax", "--steps", 100,
                               "--interval", 10, "--max-bond-change", 0.01, "--out", out_dir, "--no-progress"],
                              capsys)
    assert code == 3
    summary = json.loads(out[out.index("{"):])
    assert summary["stopped"]["step"] == summary["steps"] == 10 and summary["bonds_checked"] == 21
    assert "forcefield-et md: stopped at 0.005 ps (step 10): a bond changed by" in err
    assert (out_dir / "md_log.csv").read_text().count("\n") == 3  # header, t = 0, the stop frame
    code, out, _ = run_main(["md", "aspirin", "--model", small_checkpoint, "--no-relax", "--steps", 10,
                             "--out", tmp_path / "md2", "--no-progress"], capsys)
    assert code == 0 and "stopped" not in json.loads(out[out.index("{"):])


@pytest.mark.parametrize("flags, steps, compiled", [([], 19_999, False), ([], 20_000, True),
                                                      (["--no-compile"], 50_000, False), (["--compile"], 10, True)])
def test_md_compiles_long_runs_by_default(flags, steps, compiled, small_checkpoint, tmp_path, monkeypatch, capsys):
    import forcefield_et.md

    seen = {}

    def fake_run_md(atoms, out_dir, **kwargs):
        seen["compiled"] = atoms.calc.engine.model._compiled_energy is not None
        seen["settings"] = kwargs["settings"]
        return {}

    monkeypatch.setattr(forcefield_et.md, "run_md", fake_run_md)
    code, out, _ = run_main(["md", "aspirin", "--model", small_checkpoint, "--no-relax", "--steps", steps,
                             "--out", tmp_path / "md", "--no-progress", *flags], capsys)
    assert code == 0 and seen["compiled"] is compiled and (", compiled" in out) is compiled
    assert "compile" not in seen["settings"]  # compiling is not part of a run's identity


def test_finetune_from_scratch_produces_best_checkpoint(tmp_path, capsys):
    train = shared_path("rmd17", "rmd17_ethanol_train_01.npz")
    out_dir = tmp_path / "ft"
    code, out, err = run_main(["finetune", "--model", "scratch", "--hidden-channels", 32, "--num-layers", 2,
                               "--train", train, "--format", "rmd17", "--n-train", 40, "--steps", 20,
                               "--out", out_dir, "--no-progress", "--threads", 1, "--no-compile"], capsys)
    assert code == 0
    best = load_model(out_dir / "best.pt")
    assert best.hyperparameters["hidden_channels"] == 32 and best.hyperparameters["num_layers"] == 2
    training = best.metadata["training"]
    assert training["step"] == 20
    assert training["sources"][0]["frames"] == 40  # --n-train frames for training, the rest validates
    assert training["sources"][0]["objective"] == "energy_forces"
    assert training["parent"] is None
    assert "finetune/force_mae_meV_A" in best.metadata["validation"]
    force = best.metadata["validation"]["finetune/force_mae_meV_A"]
    energy = best.metadata["validation"]["finetune/energy_mae_meV"]
    assert (f"{out_dir / 'best.pt'}: the weights of step 20, validation force MAE {force:.2f} meV/Å, "
            f"energy MAE {energy:.2f} meV") in err  # the one line a user reads last
    assert read_checkpoint(out_dir / "last.pt")["training_state"]["step"] == 20
    assert "valid_loss" in json.loads(out[out.index("{"):])


def test_finetune_with_replay_validates_on_the_target_frames_only(tmp_path, capsys):
    train = shared_path("rmd17", "rmd17_ethanol_train_01.npz")
    replay = shared_path("rmd17", "rmd17_malonaldehyde_train_01.npz")
    out_dir = tmp_path / "ft"
    code, out, _ = run_main(["finetune", "--model", "scratch", "--hidden-channels", 16, "--num-layers", 1,
                             "--train", train, "--format", "rmd17", "--n-train", 20, "--steps", 4, "--batch-size", 5,
                             "--replay", replay, "--replay-format", "rmd17", "--replay-ratio", 0.4,
                             "--encoder-lr-scale", 0.5,
                             "--out", out_dir, "--no-progress", "--threads", 1, "--no-compile"], capsys)
    assert code == 0
    assert yaml.safe_load((out_dir / "config.yaml").read_text())["optim"]["encoder_lr_scale"] == 0.5
    sources = {s["name"]: s for s in load_model(out_dir / "best.pt").metadata["training"]["sources"]}
    assert sources["finetune"]["objective"] == "energy_forces" and sources["replay"]["objective"] == "forces"
    assert sources["replay"]["ratio"] == pytest.approx(0.4)
    metrics = json.loads(out[out.index("{"):])
    assert "finetune/force_mae_meV_A" in metrics and not any(k.startswith("replay/") for k in metrics)
    assert metrics["valid_loss"] == pytest.approx(metrics["finetune/valid_loss"])


def test_export_torchscript_gives_the_same_energy(small_checkpoint, tmp_path, capsys):
    out_file = tmp_path / "sub" / "x.pt"
    code, _, _ = run_main(["export", "--model", small_checkpoint, "--out", out_file], capsys)
    assert code == 0
    scripted = torch.jit.load(str(out_file))
    model = load_model(small_checkpoint)
    z = torch.tensor([6, 6, 8, 1, 1, 1, 1, 1, 1])
    pos = torch.tensor([[-0.0007, -0.5570, 0.0], [1.2016, 0.3832, 0.0], [-1.1732, 0.2464, 0.0],
                        [-0.0289, -1.1923, 0.8899], [-0.0289, -1.1923, -0.8899], [1.1638, 1.0311, 0.8816],
                        [1.1638, 1.0311, -0.8816], [2.1411, -0.1823, 0.0], [-1.9488, -0.3188, 0.0]])
    batch = torch.zeros(9, dtype=torch.long)
    ref = model(z, pos, batch)
    got = scripted(z, pos, batch, None)
    assert torch.allclose(got["energy"].detach(), ref["energy"].detach(), rtol=1e-6, atol=1e-6)
    assert torch.allclose(got["forces"], ref["forces"], rtol=1e-5, atol=1e-6)
    assert float(ref["forces"].abs().max()) > 0


def test_export_inference_checkpoint_with_card(small_checkpoint, tmp_path, capsys):
    card = tmp_path / "card.yaml"
    card.write_text("description: a card\nlimits: none\n")
    out_file = tmp_path / "inference.pt"
    code, _, _ = run_main(["export", "--model", small_checkpoint, "--format", "checkpoint", "--card", card,
                           "--name", "demo", "--out", out_file], capsys)
    assert code == 0
    meta = read_checkpoint(out_file)["metadata"]
    assert meta["name"] == "demo" and meta["description"] == "a card" and meta["limits"] == "none"


def test_missing_config_file_is_exit_code_2_with_a_message(tmp_path, capsys):
    missing = tmp_path / "no_such_config.yaml"
    code, out, err = run_main(["pretrain", "--config", missing], capsys)
    assert code == 2
    assert "pretrain" in err and "not found" in err and str(missing) in err
    assert "Traceback" not in err and out == ""


def test_other_bad_inputs_are_clear_errors(tmp_path, capsys):
    argv = ["evaluate", "--model", tmp_path / "nope.pt", "--data", tmp_path / "d.xyz"]
    code, _, err = run_main(argv, capsys)
    assert code == 2 and "nope.pt" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_dir: x\nsources: [{name: a, path: a.xyz, formt: ase}]\n")
    code, _, err = run_main(["pretrain", "--config", bad], capsys)
    assert code == 2 and "formt" in err
    with pytest.raises(SystemExit) as info:  # argparse usage errors: exit 2 too
        main(["finetune", "--out", str(tmp_path)])
    assert info.value.code == 2
    assert "--train" in capsys.readouterr().err


def test_console_entry_point_exit_code(tmp_path):
    """The installed ``forcefield-et`` script (or python -m forcefield_et.cli) returns main()'s code."""
    exe = Path(sys.executable).parent / "forcefield-et"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "forcefield_et.cli"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(cmd + ["pretrain", "--config", str(tmp_path / "missing.yaml")],
                            capture_output=True, text=True, timeout=120, env=env, cwd=REPO_ROOT)
    assert result.returncode == 2
    assert "not found" in result.stderr


@pytest.mark.parametrize("text, seconds", [("2h", 7200.0), ("90m", 5400.0), ("1h30m", 5400.0), ("45s", 45.0),
                                           ("1.5", 5400.0), ("0.5h", 1800.0)])
def test_time_budget_durations(text, seconds):
    from forcefield_et.cli import parse_duration

    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["0", "-2h", "soon", "", "2x", "inf", "nan"])
def test_bad_time_budget_is_a_clear_usage_error(text, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", "--train", str(tmp_path / "x.xyz"), "--out", str(tmp_path / "o"), "--time-budget", text])
    assert exit_info.value.code == 2
    assert "argument --time-budget" in capsys.readouterr().err


def test_info_without_a_model_lists_the_bundled_models(capsys):
    from forcefield_et.registry import bundled_models

    code, out, _ = run_main(["info"], capsys)
    assert code == 0
    for name in bundled_models():
        assert f"  {name} " in out


def test_md_with_a_missing_file_says_file_not_found(tmp_path, capsys):
    code, _, err = run_main(["md", str(tmp_path / "nosuch.xyz"), "--steps", 1], capsys)
    assert code == 2 and "structure file not found" in err and "bundled" not in err
    code, _, err = run_main(["md", str(tmp_path), "--steps", 1], capsys)
    assert code == 2 and "is a directory" in err


def test_finetune_reads_energies_and_forces_from_named_extxyz_keys(tmp_path, capsys):
    from ase import Atoms
    from ase.io import write

    from forcefield_et.data import read_rmd17

    data = read_rmd17(shared_path("rmd17", "rmd17_ethanol_train_01.npz")).subset(np.arange(25))
    frames = []
    for k in range(len(data)):
        a, b = data.offsets[k], data.offsets[k + 1]
        atoms = Atoms(numbers=data.z[a:b], positions=data.pos[a:b])
        atoms.info["dft_energy"] = float(data.energy[k])
        atoms.arrays["dft_forces"] = data.forces[a:b]
        frames.append(atoms)
    path = tmp_path / "frames.xyz"
    write(path, frames)
    out = tmp_path / "ft"
    code, _, _ = run_main(["finetune", "--model", "scratch", "--hidden-channels", 16, "--num-layers", 1,
                           "--train", path, "--energy-key", "dft_energy", "--forces-key", "dft_forces", "--n-train", 20,
                           "--n-valid-from-train", 5, "--steps", 2, "--no-compile", "--no-progress", "--out", out],
                          capsys)
    assert code == 0
    validation = load_model(out / "best.pt").metadata["validation"]
    assert validation["finetune/energy_mae_meV"] > 0 and validation["finetune/force_mae_meV_A"] > 0
    # --test: logged at every validation, and best.pt evaluated on every test frame at the end
    code, stdout, _ = run_main(["finetune", "--model", "scratch", "--hidden-channels", 16, "--num-layers", 1,
                                "--train", path, "--energy-key", "dft_energy", "--forces-key", "dft_forces",
                                "--n-train", 20, "--n-valid-from-train", 5, "--steps", 2, "--no-compile",
                                "--no-progress", "--test", path, "--out", tmp_path / "ft2"], capsys)
    assert code == 0 and "best.pt on" in stdout
    tested = json.loads((tmp_path / "ft2" / "test_metrics.json").read_text())
    assert tested["frames"] == 25 and tested["force_mae_meV_A"] > 0 and tested["energy_mae_meV"] > 0
    code, _, err = run_main(["finetune", "--train", path, "--format", "rmd17", "--energy-key", "e", "--out",
                             tmp_path / "x"], capsys)
    assert code == 2 and "--energy-key and --forces-key apply to ASE-readable files" in err


def test_finetune_and_evaluate_periodic_frames_with_stress_labels(tmp_path, capsys):
    """extxyz boxes with energy, forces and stress: finetune validates the stress (its MAE in
    metrics.csv) and reports its test error; evaluate reports and writes it."""
    from ase.io import read

    from tests.training.test_trainer import write_teacher_boxes

    path = tmp_path / "boxes.extxyz"
    write_teacher_boxes(path, 12, seed=2)
    out = tmp_path / "ft"
    code, stdout, _ = run_main(["finetune", "--model", "scratch", "--hidden-channels", 16, "--num-layers", 1,
                                "--train", path, "--n-train", 8, "--n-valid-from-train", 4, "--steps", 3,
                                "--stress-weight", 10, "--no-compile", "--no-progress", "--test", path, "--out", out],
                               capsys)
    assert code == 0 and "stress_mae_meV_A3" in stdout.split("best.pt on")[1]
    assert "finetune/stress_mae_meV_A3" in (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert json.loads((out / "test_metrics.json").read_text())["stress_frames"] == 12
    code, _, _ = run_main(["evaluate", "--model", out / "best.pt", "--data", path, "--out", tmp_path / "eval",
                           "--write-predictions", "--no-progress"], capsys)
    assert code == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["stress_frames"] == 12 and metrics["stress_mae_meV_A3"] > 0
    assert "predicted_stress" in read(tmp_path / "eval" / "predictions.extxyz", index=0).info


def test_evaluate_writes_predictions_and_handles_unlabelled_data(tmp_path, capsys):
    from ase.io import read, write

    from forcefield_et.data import read_rmd17

    test_file = shared_path("rmd17", "rmd17_ethanol_test_01.npz")
    out = tmp_path / "eval"
    code, stdout, _ = run_main(["evaluate", "--model", "rmd17-ethanol", "--data", test_file, "--format", "rmd17",
                                "--max-frames", 6, "--write-predictions", "--no-progress", "--out", out], capsys)
    assert code == 0
    metrics = json.loads(stdout[stdout.index("{"):])
    frames = read(out / "predictions.extxyz", ":")
    assert len(frames) == 6 and metrics["labels"] is True
    reference = read_rmd17(test_file).subset(np.arange(6))
    errors = np.concatenate([f.arrays["force_error"] for f in frames])
    predicted = np.concatenate([f.arrays["predicted_forces"] for f in frames])
    assert np.allclose(errors, np.linalg.norm(predicted - reference.forces, axis=1), atol=1e-5)
    assert np.mean(np.abs(predicted - reference.forces)) * 1000 == pytest.approx(metrics["force_mae_meV_A"], rel=1e-4)
    # a structure file without labels: predictions, no errors, and it says so
    bare = tmp_path / "bare.xyz"
    structure = frames[0].copy()
    structure.info.clear()
    for key in list(structure.arrays):
        if key not in ("numbers", "positions"):
            del structure.arrays[key]
    write(bare, [structure, structure])
    code, stdout, err = run_main(["evaluate", "--model", "rmd17-ethanol", "--data", bare, "--no-progress",
                                  "--out", tmp_path / "eval2"], capsys)
    assert code == 0 and "has no energy or force labels" in err
    assert json.loads(stdout[stdout.index("{"):])["labels"] is False
    assert len(read(tmp_path / "eval2" / "predictions.extxyz", ":")) == 2
    assert not (tmp_path / "eval2" / "parity.png").exists()


def test_finetune_on_two_data_parallel_workers(tmp_path, capsys):
    train = shared_path("rmd17", "rmd17_ethanol_train_01.npz")
    out_dir = tmp_path / "ft"
    code, out, err = run_main(["finetune", "--model", "scratch", "--hidden-channels", 16, "--num-layers", 1,
                               "--train", train, "--format", "rmd17", "--n-train", 16, "--steps", 4,
                               "--valid-every", 2, "--batch-size", 4, "--workers", 2, "--test", train,
                               "--out", out_dir, "--no-progress", "--no-compile"], capsys)
    assert code == 0, err
    assert "2 data-parallel workers" in err
    state = read_checkpoint(out_dir / "last.pt")["training_state"]
    assert state["step"] == 4
    with open(out_dir / "metrics.csv") as handle:
        steps = [row.split(",")[:2] for row in handle.read().splitlines()[1:]]
    assert len(steps) == len(set(map(tuple, steps)))  # one writer: no duplicated rows
    assert json.loads((out_dir / "test_metrics.json").read_text())["frames"] == 1000


def test_workers_must_be_positive(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["finetune", "--train", "x.xyz", "--workers", "0"])
    assert stop.value.code == 2 and "--workers" in capsys.readouterr().err


# ---------------------------------------------------------------- --device, --threads, training domain
@pytest.mark.parametrize("command", ["pretrain", "finetune", "evaluate", "md"])
def test_bad_device_and_threads_are_usage_errors(command, capsys):
    required = {"pretrain": ["--config", "c.yaml"], "finetune": ["--train", "t.xyz", "--out", "o"],
                "evaluate": ["--model", "m.pt", "--data", "d.xyz"], "md": []}[command]
    for option in (["--device", "tpu"], ["--threads", "-1"]):
        with pytest.raises(SystemExit) as info:
            main([command, *required, *option])
        assert info.value.code == 2
        assert "device" in capsys.readouterr().err or option[0] == "--threads"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_one_line_error(small_checkpoint, tmp_path, capsys):
    (tmp_path / "d.xyz").write_text("2\n\nH 0 0 0\nH 0 0 0.74\n")
    code, _, err = run_main(["evaluate", "--model", small_checkpoint, "--data", tmp_path / "d.xyz", "--device", "cuda",
                             "--out", tmp_path / "eval"], capsys)
    assert code == 2
    assert err.strip().splitlines() == [
        "forcefield-et evaluate: error: device 'cuda' requested but CUDA is not available; use 'cpu' or 'auto'"
    ]


def test_info_shows_the_training_domain(capsys):
    code, out, _ = run_main(["info", "rmd17-aspirin"], capsys)
    assert code == 0
    assert "domain:     trained on H C O; compositions C9H8O4" in out
    assert "started:    from pretrained, itself trained on xtb_md (" in out  # the start and what it saw
    code, out, _ = run_main(["info"], capsys)
    assert "trained on C9H8O4" in out


def test_info_names_a_repaired_models_extra_frames(capsys):
    """The bundled salicylic acid model was repaired with DFT frames of its own MD collapse: its card says
    which frames, and that its start was the bundled model before the repair."""
    code, out, _ = run_main(["info", "rmd17-salicylic"], capsys)
    assert code == 0
    assert "data:       repair: 20 frames, objective forces" in out
    assert "started:    from rmd17-salicylic, itself trained on salicylic (950 frames)" in out
    assert "repair:     20 frames of the model's own 500 K MD trajectory" in out
    assert "labelled PBE/def2-SVP" in out and "test force MAE before it 6.98 meV/Å" in out


def test_version_names_the_package_and_torch(capsys):
    from forcefield_et import __version__

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"forcefield-et {__version__} (torch {torch.__version__})"


def test_finetune_selecting_by_validation_force_mae_keeps_its_lowest_step(tmp_path, capsys):
    import csv

    train = shared_path("rmd17", "rmd17_ethanol_train_01.npz")
    out_dir = tmp_path / "ft"
    code, _, _ = run_main(["finetune", "--model", "scratch", "--hidden-channels", 32, "--num-layers", 2,
                           "--train", train, "--format", "rmd17", "--n-train", 40, "--steps", 40,
                           "--valid-every", 5, "--select-by", "force-mae", "--out", out_dir, "--no-progress",
                           "--threads", 1, "--no-compile"], capsys)
    assert code == 0
    with open(out_dir / "metrics.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r["kind"] == "valid"]
    assert len(rows) == 8
    for row in rows:  # one source: the pooled validation force MAE is that source's
        assert float(row["valid_force_mae_meV_A"]) == pytest.approx(float(row["finetune/force_mae_meV_A"]))
    lowest = min(rows, key=lambda r: float(r["valid_force_mae_meV_A"]))
    best = load_model(out_dir / "best.pt").metadata
    assert best["training"]["step"] == int(lowest["step"])
    assert best["validation"]["valid_force_mae_meV_A"] == pytest.approx(float(lowest["valid_force_mae_meV_A"]))
    assert read_checkpoint(out_dir / "last.pt")["training_state"]["select_by"] == "valid_force_mae_meV_A"

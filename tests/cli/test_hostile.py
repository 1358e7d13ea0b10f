"""Hostile arguments for every subcommand of ``forcefield-et``: each numeric and path option gets
zero, negative, NaN, inf, huge, wrong-type, missing, directory and empty-file values. A bad value
must end with a one-line error naming the option and exit status 2 (never a traceback); a
legitimate one must reach the command with its value.

The commands themselves are replaced by a recorder here, so that an accepted value is seen
without training or simulating; ``test_hostile_files_reach_a_clear_error`` runs the real
commands on unreadable files.
"""

from __future__ import annotations

import argparse
import math
import time

import pytest

from forcefield_et import cli
from forcefield_et.cli import build_parser, main

HUGE_INT = "1" + "0" * 30
# value -> accepted by each kind of option; anything not listed is refused
COMMON_BAD = ["-1", "nan", "inf", "-inf", "1e400", "abc", "", "0x10"]
NUMERIC_KINDS = {
    # kind: (refused values, accepted values with the parsed result)
    "positive_int": (["0", "1.5", HUGE_INT] + COMMON_BAD, {"3": 3}),
    "nonnegative_int": (["1.5", HUGE_INT] + COMMON_BAD, {"0": 0, "7": 7}),
    "seed": (["1.5", HUGE_INT] + COMMON_BAD, {"0": 0, "12345": 12345}),
    "batch_size": (["0", "1000000", HUGE_INT] + COMMON_BAD, {"4": 4}),
    "hidden_channels": (["0", "100000", HUGE_INT] + COMMON_BAD, {"32": 32}),
    "num_layers": (["0", "1000000", HUGE_INT] + COMMON_BAD, {"2": 2}),
    "threads": (["5000", HUGE_INT] + COMMON_BAD, {"0": 0, "2": 2}),
    "workers": (["0", "5000", HUGE_INT] + COMMON_BAD, {"1": 1, "2": 2}),
    "committee": (["0", "65", HUGE_INT] + COMMON_BAD, {"4": 4}),
    "nonnegative_float": (COMMON_BAD, {"0": 0.0, "0.05": 0.05}),
    "device": (["tpu", "gpu", "cuda:x", "", "-1", "nan"], {"cpu": "cpu", "auto": "auto", "cuda:1": "cuda:1"}),
    "positive_float": (["0"] + COMMON_BAD, {"0.5": 0.5, "1e3": 1000.0}),
    "fraction": (["1", "1.5"] + COMMON_BAD, {"0": 0.0, "0.25": 0.25}),
    "open_fraction": (["0", "1", "1.5"] + COMMON_BAD, {"0.5": 0.5}),
    "learning_rate": (["0", "2", "1e300"] + COMMON_BAD, {"1e-4": 1e-4}),
    "loss_weight": (["1e300"] + COMMON_BAD, {"0": 0.0, "10": 10.0}),
    "timestep": (["0", "100", "1e300"] + COMMON_BAD, {"1.0": 1.0}),
    "temperature": (["1e300"] + COMMON_BAD, {"0": 0.0, "500": 500.0}),
    "friction": (["100", "1e300"] + COMMON_BAD, {"0": 0.0, "0.1": 0.1}),
    "pressure": (["2e6", "-2e6", "1e300"] + [bad for bad in COMMON_BAD if bad != "-1"], {"1": 1.0, "-100": -100.0}),
    "force_threshold": (["0", "1e300"] + COMMON_BAD, {"0.01": 0.01}),
    "bond_change": (["0", "1e300"] + COMMON_BAD, {"0.5": 0.5}),
    "zbl_scale": (["0", "1e300"] + COMMON_BAD, {"1.2": 1.2}),
    "duration": (["0", "-2h", "soon", "inf", "nan", ""], {"90m": 5400.0}),
    "charge": (["1.5", "51", "-51", HUGE_INT, "nan", "inf", "1e400", "abc", "", "0x10"], {"-1": -1, "0": 0, "2": 2}),
    "multiplicity": (["0", "1.5", "101", HUGE_INT] + COMMON_BAD, {"1": 1, "3": 3}),
    "label_method": (["xtb", "dft:", "dft:pbe", "dft:/def2-svp", "", "nan"],
                     {"gfn2-xtb": "gfn2-xtb", "GFN1-xTB": "gfn1-xtb", "dft:pbe/def2-svp": "dft:pbe/def2-svp"}),
}
PATH_KINDS = ("existing_file", "data_path", "output_directory", "output_file", "model")

# (command, option) -> kind, for every option with a type (test_every_typed_option_is_covered)
OPTIONS = {
    ("pretrain", "--config"): "existing_file",
    ("pretrain", "--max-steps"): "nonnegative_int",
    ("pretrain", "--run-dir"): "output_directory",
    ("pretrain", "--workers"): "workers",
    ("pretrain", "--device"): "device",
    ("pretrain", "--threads"): "threads",
    ("finetune", "--device"): "device",
    ("evaluate", "--device"): "device",
    ("evaluate", "--threads"): "threads",
    ("md", "--device"): "device",
    ("finetune", "--model"): "model",
    ("finetune", "--workers"): "workers",
    ("finetune", "--train"): "data_path",
    ("finetune", "--n-train"): "positive_int",
    ("finetune", "--xtb-stage-trajectories"): "positive_int",
    ("finetune", "--xtb-stage-frames"): "positive_int",
    ("finetune", "--xtb-stage-budget"): "duration",
    ("finetune", "--n-valid-from-train"): "positive_int",
    ("finetune", "--valid"): "data_path",
    ("finetune", "--valid-fraction"): "fraction",
    ("finetune", "--valid-max-frames"): "positive_int",
    ("finetune", "--out"): "output_directory",
    ("finetune", "--steps"): "positive_int",
    ("finetune", "--batch-size"): "batch_size",
    ("finetune", "--lr"): "learning_rate",
    ("finetune", "--encoder-lr-scale"): "positive_float",
    ("finetune", "--warmup-steps"): "nonnegative_int",
    ("finetune", "--energy-weight"): "loss_weight",
    ("finetune", "--force-weight"): "loss_weight",
    ("finetune", "--stress-weight"): "loss_weight",
    ("finetune", "--ema-decay"): "fraction",
    ("finetune", "--min-lr"): "learning_rate",
    ("finetune", "--plateau-factor"): "open_fraction",
    ("finetune", "--plateau-patience"): "nonnegative_int",
    ("finetune", "--early-stop-patience"): "nonnegative_int",
    ("finetune", "--time-budget"): "duration",
    ("finetune", "--test"): "data_path",
    ("finetune", "--drop-outliers"): "positive_float",
    ("finetune", "--valid-every"): "positive_int",
    ("finetune", "--checkpoint-every"): "positive_int",
    ("finetune", "--zbl"): "zbl_scale",
    ("finetune", "--replay"): "data_path",
    ("finetune", "--replay-ratio"): "open_fraction",
    ("finetune", "--replay-weight"): "positive_float",
    ("finetune", "--hidden-channels"): "hidden_channels",
    ("finetune", "--num-layers"): "num_layers",
    ("finetune", "--seed"): "seed",
    ("finetune", "--threads"): "threads",
    ("corpus", "--smiles"): "existing_file",
    ("corpus", "--out"): "output_directory",
    ("corpus", "--max-molecules"): "positive_int",
    ("corpus", "--md-frames"): "nonnegative_int",
    ("corpus", "--displacements"): "nonnegative_int",
    ("corpus", "--molecules-per-shard"): "positive_int",
    ("corpus", "--seed"): "seed",
    ("evaluate", "--model"): "model",
    ("evaluate", "--data"): "data_path",
    ("evaluate", "--out"): "output_directory",
    ("evaluate", "--max-frames"): "positive_int",
    ("evaluate", "--batch-size"): "batch_size",
    ("md", "--model"): "model",
    ("md", "--watcher"): "model",
    ("md", "--steps"): "nonnegative_int",
    ("md", "--timestep"): "timestep",
    ("md", "--temperature"): "temperature",
    ("md", "--friction"): "friction",
    ("md", "--pressure"): "pressure",
    ("md", "--barostat-time"): "positive_float",
    ("md", "--interval"): "positive_int",
    ("md", "--out"): "output_directory",
    ("md", "--seed"): "seed",
    ("md", "--relax-fmax"): "force_threshold",
    ("md", "--max-bond-change"): "bond_change",
    ("md", "--threads"): "threads",
    ("finetune", "--committee"): "committee",
    ("md", "--max-force-std"): "force_threshold",
    ("select", "--model"): "model",
    ("select", "--data"): "existing_file",
    ("select", "--n"): "positive_int",
    ("select", "--min-distance"): "nonnegative_float",
    ("select", "--min-force-std"): "nonnegative_float",
    ("select", "--out"): "output_file",
    ("select", "--batch-size"): "batch_size",
    ("label", "data"): "existing_file",
    ("label", "--charge"): "charge",
    ("label", "--method"): "label_method",
    ("label", "--multiplicity"): "multiplicity",
    ("label", "--out"): "output_file",
    ("export", "--model"): "model",
    ("export", "--out"): "output_file",
    ("export", "--card"): "existing_file",
    ("info", "model"): "model",
}
TIME_BOUND_S = 10.0  # every refusal is immediate; this only catches a command that started working


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """Files for the required arguments, and the commands replaced by a recorder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text("run_dir: run\nsources: [{name: a, path: a.xyz}]\n")
    (tmp_path / "data.xyz").write_text("1\n\nH 0 0 0\n")
    (tmp_path / "molecules.smi").write_text("CCO\n")
    (tmp_path / "card.yaml").write_text("name: demo\n")
    (tmp_path / "empty.xyz").touch()
    (tmp_path / "a_folder").mkdir()
    calls: list = []
    for command in BASE_ARGV:
        monkeypatch.setattr(cli.COMMANDS[command], f"{command}_command", lambda args: calls.append(args) or 0)
    return tmp_path, calls


BASE_ARGV = {
    "pretrain": ["--config", "config.yaml"],
    "finetune": ["--train", "data.xyz", "--out", "run"],
    "corpus": ["--smiles", "molecules.smi", "--out", "corpus"],
    "evaluate": ["--model", "pretrained", "--data", "data.xyz"],
    "md": [],
    "export": ["--out", "model.pt"],
    "select": ["--model", "pretrained", "--data", "data.xyz", "--out", "selected.xyz"],
    "label": ["data.xyz", "--out", "labelled.xyz"],
    "info": [],
}


def argv_with(command: str, option: str, value: str) -> list:
    """The base command line of ``command`` with ``option`` set to ``value`` (replacing the base one)."""
    base = list(BASE_ARGV[command])
    if option in base:
        index = base.index(option)
        del base[index : index + 2]
    if not option.startswith("-"):  # positional: replaces the base's own (its first word), if it has one
        if base and not base[0].startswith("-"):
            base = base[1:]
        return [command, *base, value]
    if value.startswith("-"):  # --option=-1, which argparse does not take for an option name
        return [command, *base, f"{option}={value}"]
    return [command, *base, option, value]


def run(argv: list, capsys) -> tuple[int, str, float]:
    start = time.perf_counter()
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse's usage errors
        code = exit_info.code
    elapsed = time.perf_counter() - start
    return code, capsys.readouterr().err, elapsed


def assert_refused(argv: list, option: str, capsys) -> None:
    code, err, elapsed = run(argv, capsys)
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert code == 2, f"{argv}: exit status {code}, stderr {err!r}"
    assert "Traceback" not in err
    assert last.startswith(f"forcefield-et {argv[0]}: error: argument {option}"), (argv, err)
    assert elapsed < TIME_BOUND_S


def numeric_cases():
    for (command, option), kind in OPTIONS.items():
        if kind in NUMERIC_KINDS:
            refused, accepted = NUMERIC_KINDS[kind]
            for value in refused:
                yield pytest.param(command, option, value, None, id=f"{command}{option}={value!r}")
            for value, parsed in accepted.items():
                yield pytest.param(command, option, value, parsed, id=f"{command}{option}={value!r}-ok")


def test_every_typed_option_is_covered():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    typed = set()
    for command, sub in subparsers.choices.items():
        for action in sub._actions:
            if action.type is not None:
                typed.add((command, action.option_strings[0] if action.option_strings else action.dest))
    assert typed == set(OPTIONS)


@pytest.mark.parametrize("command, option, value, parsed", list(numeric_cases()))
def test_numeric_options(workspace, capsys, command, option, value, parsed):
    _, calls = workspace
    argv = argv_with(command, option, value)
    if parsed is None:
        assert_refused(argv, option, capsys)
        assert not calls
    else:
        code, err, _ = run(argv, capsys)
        assert code == 0 and len(calls) == 1, err
        result = getattr(calls[0], option.lstrip("-").replace("-", "_"))
        assert type(result) is type(parsed)
        if isinstance(parsed, str):
            assert result == parsed
        else:
            assert result == pytest.approx(parsed) and math.isfinite(result)


PATH_VALUES = {
    # kind: (refused values, accepted values)
    "existing_file": (["missing.txt", "a_folder", "empty.xyz", ""], ["data.xyz"]),
    "data_path": (["missing.xyz", "empty.xyz", ""], ["data.xyz", "a_folder", "*.xyz"]),
    "output_directory": (["data.xyz", ""], ["a_folder", "new_folder"]),
    "output_file": (["a_folder", "a_folder/", "data.xyz/model.pt", ""], ["new.pt", "a_folder/new.pt"]),
    "model": (["missing.pt", "a_folder", "empty.xyz", ""], ["pretrained"]),
}


def path_cases():
    for (command, option), kind in OPTIONS.items():
        if kind in PATH_KINDS:
            refused, accepted = PATH_VALUES[kind]
            for value in refused:
                yield pytest.param(command, option, value, False, id=f"{command}{option}={value!r}")
            for value in accepted:
                yield pytest.param(command, option, value, True, id=f"{command}{option}={value!r}-ok")


@pytest.mark.parametrize("command, option, value, ok", list(path_cases()))
def test_path_options(workspace, capsys, command, option, value, ok):
    _, calls = workspace
    if (command, option) == ("export", "--card"):
        value = {"data.xyz": "card.yaml"}.get(value, value)
    argv = argv_with(command, option, value)
    if ok:
        code, err, _ = run(argv, capsys)
        assert code == 0 and len(calls) == 1, err
    else:
        assert_refused(argv, option, capsys)
        assert not calls


def test_a_bad_number_is_reported_before_a_missing_file(workspace, capsys):
    code, err, _ = run(["finetune", "--train", "missing.xyz", "--out", "run", "--steps", "-5"], capsys)
    assert code == 2 and "argument --steps" in err.strip().splitlines()[-1]


@pytest.fixture
def hostile_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "garbage.bin").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "broken.yaml").write_text("a: [\n")
    (tmp_path / "empty.xyz").touch()
    (tmp_path / "a_folder").mkdir()
    return tmp_path


@pytest.mark.parametrize(
    "argv, named",
    [
        (["pretrain", "--config", "garbage.bin"], "garbage.bin"),
        (["pretrain", "--config", "list.yaml"], "list.yaml"),
        (["pretrain", "--config", "broken.yaml"], "broken.yaml"),
        (["finetune", "--train", "garbage.bin", "--out", "run", "--no-progress"], "garbage.bin"),
        (["finetune", "--train", "a_folder", "--out", "run", "--no-progress"], "a_folder"),
        (["finetune", "--train", "garbage.bin", "--out", "run", "--format", "banana"], "banana"),
        (["evaluate", "--model", "garbage.bin", "--data", "garbage.bin"], "garbage.bin"),
        (["evaluate", "--model", "pretrained", "--data", "a_folder", "--no-progress"], "a_folder"),
        (["md", "empty.xyz", "--steps", "1"], "empty.xyz"),
        (["md", "garbage.bin", "--steps", "1"], "garbage.bin"),
        (["md", "a_folder", "--steps", "1"], "a_folder"),
        (["export", "--format", "checkpoint", "--card", "list.yaml", "--out", "x.pt"], "list.yaml"),
        (["export", "--format", "checkpoint", "--card", "broken.yaml", "--out", "x.pt"], "broken.yaml"),
        (["export", "--format", "checkpoint", "--card", "garbage.bin", "--out", "x.pt"], "garbage.bin"),
        (["info", "garbage.bin"], "garbage.bin"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_hostile_files_reach_a_clear_error(hostile_files, capsys, argv, named):
    code, err, elapsed = run(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith(f"forcefield-et {argv[0]}: error:") and named in lines[0], err
    assert elapsed < 60
    assert not (hostile_files / "run" / "last.pt").exists()


@pytest.mark.parametrize("error", [FloatingPointError("non-finite training loss at step 3"), MemoryError("frame 0 has"),
                                   IsADirectoryError(21, "Is a directory", "x")])
def test_runtime_failures_of_a_command_are_one_line_errors(workspace, capsys, monkeypatch, error):
    def failing(args):
        raise error

    monkeypatch.setattr(cli.COMMANDS["md"], "md_command", failing)
    code, err, _ = run(["md"], capsys)
    assert code == 2 and err.strip().splitlines() == [f"forcefield-et md: error: {error}"]

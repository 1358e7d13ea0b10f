"""The command line's argument types: values in range pass through, everything else is refused with a
message that names the value and the allowed range; path checks report one problem per argument."""

from __future__ import annotations

import argparse

import pytest

from forcefield_et.cli import validators as v


@pytest.mark.parametrize(("parse", "text", "value"), [
    (v.positive_int, " 7 ", 7), (v.nonnegative_int, "0", 0), (v.seed, str(2**63 - 1), 2**63 - 1),
    (v.bounded_int(2, 5), "5", 5), (v.finite_float, "-1e-3", -1e-3), (v.positive_float, "2.5", 2.5),
    (v.nonnegative_float, "0", 0.0), (v.learning_rate_arg, "1", 1.0), (v.fraction, "0", 0.0),
    (v.timestep_arg, "10", 10.0), (v.device_arg, " CUDA:1 ", "cuda:1"), (v.device_arg, "auto", "auto"),
])
def test_values_in_range_are_returned(parse, text, value):
    assert parse(text) == value


@pytest.mark.parametrize(("parse", "text", "message"), [
    (v.positive_int, "0", "must be a positive integer"),
    (v.positive_int, "1.5", "is not an integer"),
    (v.positive_int, str(10**13), "at most"),
    (v.nonnegative_int, "-1", ">= 0"),
    (v.seed, "-1", "seed"),
    (v.bounded_int(2, 5), "6", "from 2 to 5"),
    (v.finite_float, "nan", "finite"),
    (v.finite_float, "inf", "finite"),
    (v.finite_float, "abc", "is not a number"),
    (v.positive_float, "0", "positive"),
    (v.nonnegative_float, "-0.1", ">= 0"),
    (v.fraction, "1", r"\[0, 1\)"),
    (v.open_fraction_arg, "0", r"\(0, 1\)"),
    (v.learning_rate_arg, "0", r"\(0, 1\]"),
    (v.timestep_arg, "100", r"\(0, 10\]"),
    (v.num_layers_arg, "1000000", "from 1 to 64"),
    (v.device_arg, "gpu", "use auto, cpu, cuda or cuda:N"),
])
def test_values_out_of_range_are_refused_with_the_range_named(parse, text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message) as caught:
        parse(text)
    assert repr(text) in str(caught.value)  # the message quotes what was given


def test_bounded_types_describe_their_range_for_argparse_messages():
    assert v.bounded_int(1, 64).__name__ == "integer in [1, 64]"
    assert v.float_in_range(0.0, 10.0, include_low=False, include_high=True).__name__ == "number in (0, 10]"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", nargs="+", type=v.existing_path)
    parser.add_argument("--config", type=v.existing_file)
    parser.add_argument("--out", type=v.output_directory)
    parser.add_argument("--export", type=v.output_file)
    return parser


def test_check_paths_accepts_usable_paths(tmp_path):
    data = tmp_path / "frames.xyz"
    data.write_text("1\n\nH 0 0 0\n")
    parser = _parser()
    args = parser.parse_args(["--train", str(data), str(tmp_path / "shard*.npz"), str(tmp_path), "--config",
                              str(data), "--out", str(tmp_path / "new_run"), "--export", str(tmp_path / "m.pt")])
    assert v.check_paths(parser, args) is None


@pytest.mark.parametrize(("option", "make", "problem"), [
    ("--train", lambda d: d / "missing.xyz", "file not found"),
    ("--config", lambda d: d, "is a directory, not a file"),
    ("--config", lambda d: (d / "empty.yaml").touch() or d / "empty.yaml", "the file is empty"),
    ("--out", lambda d: (d / "taken").write_text("x") and d / "taken", "is a file, not a folder"),
    ("--export", lambda d: d, "is a folder, not a file name"),
])
def test_check_paths_names_the_argument_and_the_problem(tmp_path, option, make, problem):
    parser = _parser()
    args = parser.parse_args([option, str(make(tmp_path))])
    assert v.check_paths(parser, args).startswith(f"argument {option}: ")
    assert problem in v.check_paths(parser, args)


def test_model_reference_accepts_scratch_and_bundled_names_and_refuses_unknown_ones():
    assert v.model_reference.check("scratch") is None
    assert v.model_reference.check("pretrained") is None
    assert "neither an existing file nor a bundled model" in v.model_reference.check("no-such-model")

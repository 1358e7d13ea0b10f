"""Argument types for the command line, used as ``type=`` of ``add_argument``.

Numeric types turn the text of one option into a value or raise ``argparse.ArgumentTypeError``,
which argparse reports as one line naming the option (exit status 2); the factories take bounds,
so that a value that is legal but absurd (a batch of 10^12 structures, 10^6 layers) is refused
before anything runs. Path types (:data:`existing_file`, :data:`existing_path`,
:data:`output_directory`, :data:`output_file`, :data:`model_reference`) keep the text and are
checked by :func:`check_paths` once the whole command line has parsed.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Callable

__all__ = [
    "MAX_COUNT",
    "MAX_SEED",
    "batch_size_arg",
    "bond_change_arg",
    "bounded_int",
    "charge_arg",
    "check_paths",
    "existing_file",
    "existing_path",
    "finite_float",
    "float_in_range",
    "force_threshold_arg",
    "fraction",
    "label_method_arg",
    "friction_arg",
    "hidden_channels_arg",
    "learning_rate_arg",
    "loss_weight_arg",
    "model_reference",
    "multiplicity_arg",
    "nonnegative_float",
    "nonnegative_int",
    "num_layers_arg",
    "open_fraction_arg",
    "output_directory",
    "output_file",
    "positive_float",
    "positive_int",
    "seed",
    "temperature_arg",
    "threads_arg",
    "workers_arg",
    "device_arg",
    "committee_size_arg",
    "timestep_arg",
    "zbl_scale_arg",
]

MAX_COUNT = 10**12  # largest step / frame count an option accepts
MAX_SEED = 2**63 - 1


def _parse_int(text: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _parse_float(text: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: the value must be a finite number")
    return value


def bounded_int(minimum: int, maximum: int = MAX_COUNT) -> Callable[[str], int]:
    """Type of an integer option in [minimum, maximum]."""

    def parse(text: str) -> int:
        value = _parse_int(text)
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"{text!r}: must be an integer from {minimum} to {maximum}")
        return value

    parse.__name__ = f"integer in [{minimum}, {maximum}]"
    return parse


def positive_int(text: str) -> int:
    """An integer >= 1 (at most MAX_COUNT)."""
    value = _parse_int(text)
    if not 1 <= value <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a positive integer (at most {MAX_COUNT:.0e})")
    return value


def nonnegative_int(text: str) -> int:
    """An integer >= 0 (at most MAX_COUNT)."""
    value = _parse_int(text)
    if not 0 <= value <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"{text!r}: must be an integer >= 0 (at most {MAX_COUNT:.0e})")
    return value


def seed(text: str) -> int:
    """A random seed: an integer from 0 to 2**63 - 1."""
    value = _parse_int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{text!r}: a seed must be an integer from 0 to 2**63 - 1")
    return value


def finite_float(text: str) -> float:
    """Any finite number (NaN and inf are refused)."""
    return _parse_float(text)


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _parse_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a positive number")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number >= 0."""
    value = _parse_float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a number >= 0")
    return value


def float_in_range(
    low: float, high: float, include_low: bool = True, include_high: bool = False
) -> Callable[[str], float]:
    """Type of a finite float option in the interval from ``low`` to ``high``."""
    interval = f"{'[' if include_low else '('}{low:g}, {high:g}{']' if include_high else ')'}"

    def parse(text: str) -> float:
        value = _parse_float(text)
        above = value >= low if include_low else value > low
        below = value <= high if include_high else value < high
        if not (above and below):
            raise argparse.ArgumentTypeError(f"{text!r}: must lie in {interval}")
        return value

    parse.__name__ = f"number in {interval}"
    return parse


fraction = float_in_range(0.0, 1.0)  # [0, 1)


# Path arguments are checked after the whole command line has parsed (see check_paths), so that a
# malformed number anywhere on the line is reported first, as argparse does, and so that a missing
# file is reported in the order of the command's options. Each check returns a problem or None.


def _path_type(check: Callable[[str], str | None], description: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        return str(text)

    parse.__name__ = description
    parse.check = check  # type: ignore[attr-defined]
    return parse


def _problem_of_file(text: str) -> str | None:
    if not str(text).strip():
        return "an empty string is not a file name"
    path = Path(text).expanduser()
    if path.is_dir():
        return f"{text} is a directory, not a file"
    if not path.is_file():
        return f"{text}: file not found"
    if path.stat().st_size == 0:
        return f"{text}: the file is empty"
    return None


def _problem_of_data_path(text: str) -> str | None:
    if not str(text).strip():
        return "an empty string is not a path"
    path = Path(text).expanduser()
    if any(c in path.name for c in "*?[") or path.is_dir():  # a glob pattern, or a folder (e.g. DeePMD data)
        return None
    return _problem_of_file(text)


def _problem_of_output_directory(text: str) -> str | None:
    if not str(text).strip():
        return "an empty string is not a folder name"
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        return f"{text} is a file, not a folder"
    return None


def _problem_of_output_file(text: str) -> str | None:
    if not str(text).strip():
        return "an empty string is not a file name"
    path = Path(text).expanduser()
    if path.is_dir() or str(text).endswith(("/", "\\")):
        return f"{text} is a folder, not a file name"
    if path.parent.exists() and not path.parent.is_dir():
        return f"{path.parent} is a file, not a folder"
    return None


def _problem_of_model(text: str) -> str | None:
    """A bundled name, a checkpoint file, a committee (its directory or committee.json), or
    checkpoints separated by commas (a committee); ``scratch`` for finetune."""
    if str(text) == "scratch":
        return None
    from ..checkpoint import CheckpointError
    from ..registry import committee_members, resolve_model_path

    for item in str(text).split(",") if "," in str(text) else [str(text)]:
        try:
            if committee_members(item) is not None:
                continue
            path = resolve_model_path(item)
        except CheckpointError as error:
            return str(error)
        if path.stat().st_size == 0:
            return f"{item}: the file is empty"
    return None


existing_file = _path_type(_problem_of_file, "existing file")
existing_file.__doc__ = "The path of an existing, non-empty regular file."
existing_path = _path_type(_problem_of_data_path, "data path")
existing_path.__doc__ = "A data path: an existing non-empty file, a folder, or a glob pattern (``*?[``)."
output_directory = _path_type(_problem_of_output_directory, "output folder")
output_directory.__doc__ = "A folder to write into: it may exist, but not as a file."
output_file = _path_type(_problem_of_output_file, "output file")
output_file.__doc__ = "A file to write: it may exist (it is replaced), but not as a folder."
model_reference = _path_type(_problem_of_model, "model")
model_reference.__doc__ = "A bundled model name, a checkpoint path, or 'scratch' (where a command allows it)."


def check_paths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """The first problem with a path argument of ``args`` (parsed by ``parser``), as
    ``"argument --name: problem"``, or None when every path is usable."""
    for action in parser._actions:
        check = getattr(action.type, "check", None)
        if check is None:
            continue
        values = getattr(args, action.dest, None)
        for value in values if isinstance(values, list) else [values]:
            problem = None if value is None else check(value)
            if problem:
                name = "/".join(action.option_strings) or action.dest
                return f"argument {name}: {problem}"
    return None


# The bounded argument types of the forcefield-et options.
batch_size_arg = bounded_int(1, 100_000)
hidden_channels_arg = bounded_int(1, 4096)
num_layers_arg = bounded_int(1, 64)
threads_arg = bounded_int(0, 4096)
workers_arg = bounded_int(1, 1024)
charge_arg = bounded_int(-50, 50)  # total charge of a structure (e)
multiplicity_arg = bounded_int(1, 100)  # spin multiplicity 2S+1


def label_method_arg(text: str) -> str:
    """argparse type of ``label --method``: gfn2-xtb, gfn1-xtb or dft:<functional>/<basis>."""
    from ..data.labelling import method_name

    value = str(text).strip().lower()
    try:
        method_name(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return value


def device_arg(text: str) -> str:
    """argparse type of --device: auto, cpu, cuda or cuda:N (availability is checked when used)."""
    import re

    value = str(text).strip().lower()
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use auto, cpu, cuda or cuda:N")
    return value


committee_size_arg = bounded_int(1, 64)
open_fraction_arg = float_in_range(0.0, 1.0, include_low=False)  # (0, 1)
learning_rate_arg = float_in_range(0.0, 1.0, include_low=False, include_high=True)
loss_weight_arg = float_in_range(0.0, 1e6, include_high=True)
timestep_arg = float_in_range(0.0, 10.0, include_low=False, include_high=True)  # fs
temperature_arg = float_in_range(0.0, 1e5, include_high=True)  # K
friction_arg = float_in_range(0.0, 10.0, include_high=True)  # 1/fs
pressure_arg = float_in_range(-1e6, 1e6, include_high=True)  # bar (negative: tension)
force_threshold_arg = float_in_range(0.0, 1e3, include_low=False, include_high=True)  # eV/Å
bond_change_arg = float_in_range(0.0, 100.0, include_low=False, include_high=True)  # Å
zbl_scale_arg = float_in_range(0.0, 10.0, include_low=False, include_high=True)

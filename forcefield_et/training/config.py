"""Training configuration: YAML files -> validated dataclasses, and loading the data sources.

Unknown keys are errors (a typo must never be silently ignored). Relative data paths are
resolved against ``data_root`` when it is set, else against the working directory.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Union

import numpy as np
import yaml

from ..data.conformations import ConformationSet
from .objectives import ObjectiveConfig


class ConfigError(ValueError):
    """The training configuration is invalid."""


# Reader name -> (function name in data.readers, native units or None when the reader takes units).
READERS: Dict[str, tuple] = {
    "rmd17": ("read_rmd17", {"energy": "kcal/mol", "length": "Angstrom"}),
    "md17": ("read_md17", {"energy": "kcal/mol", "length": "Angstrom"}),
    "xtb_corpus": ("read_xtb_corpus", {"energy": "eV", "length": "Angstrom"}),
    "qm7x": ("read_qm7x", {"energy": "eV", "length": "Angstrom"}),
    "qm9": ("read_qm9", {"energy": "eV", "length": "Angstrom"}),
    "deepmd": ("read_deepmd", {"energy": "eV", "length": "Angstrom"}),
    "ani1x": ("read_ani1x", {"energy": "Hartree", "length": "Angstrom"}),
    "spice": ("read_spice", {"energy": "Hartree", "length": "bohr"}),
    "ase": ("read_ase", None),
    "ase_db": ("read_ase_db", None),
    "auto": ("read_dataset", None),
}


@dataclass
class SourceConfig:
    """One data source. ``objective``: forces | equilibrium | energy_forces | energy."""

    name: str
    path: Union[str, List[str]]
    format: str = "auto"
    objective: str = "forces"
    weight: float = 1.0
    ratio: float = 1.0
    options: Dict[str, Any] = field(default_factory=dict)
    units: Dict[str, str] | None = None
    max_frames: int | None = None
    max_force: float | None = None  # eV/Å: drop frames whose largest atomic |F| exceeds it
    split: str = "molecule"  # validation hold-out: "molecule" (whole molecules) or "frame"
    valid_fraction: float = 0.05
    valid_path: str | None = None
    valid_options: Dict[str, Any] = field(default_factory=dict)  # reader options for valid_path
    frames: str | None = None  # slice "start:stop[:step]" of the file's frames used for training
    valid_frames: str | None = None  # slice of the validation file's frames
    valid_max_frames: int = 500
    # held-out test file, evaluated with the EMA weights at every validation for the learning curve
    # only (never for selecting weights or steering the schedule)
    test_path: str | None = None
    test_frames: str | None = None  # slice of the test file's frames


SELECTION_METRICS = ("valid_loss", "valid_loss_without_denoise")


@dataclass
class OptimConfig:
    """Optimiser, schedule and loop settings."""

    batch_size: int = 32
    max_steps: int = 10000
    lr: float = 5e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.0
    warmup_steps: int = 200
    schedule: str = "cosine"  # cosine | plateau
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    ema_decay: float = 0.995
    clip_grad_norm: float = 10.0
    valid_every: int = 500
    checkpoint_every: int = 100
    log_every: int = 20
    threads: int = 0  # torch CPU threads; 0: forcefield_et.runtime.choose_threads for one batch
    # where the model, batches, EMA and metrics live: auto (CUDA when available), cpu, cuda, cuda:N;
    # under torchrun on GPUs, auto and cuda mean cuda:LOCAL_RANK. May change when a run is resumed.
    device: str = "auto"
    # validation metric that selects best.pt (and drives the plateau schedule):
    # "valid_loss" (the whole objective) or "valid_loss_without_denoise" (the denoising term
    # left out: it rewards the harmonic target, not the reference forces)
    select_by: str = "valid_loss"
    # steps at which the EMA weights are also kept as snapshots/step_<N>.pt (inference checkpoints),
    # e.g. to fine-tune from several amounts of pretraining of one run
    snapshot_steps: List[int] = field(default_factory=list)
    # stop when the training has used this many CPU-seconds (training and validation, all workers;
    # resumed runs count what earlier sessions used); None: no limit
    time_budget_s: float | None = None
    # stop after this many validations in a row without a new best (0: never)
    early_stop_patience: int = 0
    # compile the training step's energy and force graph (Potential.compile_training): the first
    # step compiles (about a minute), later steps run about twice as fast on CPU
    compile: bool = False


@dataclass
class TrainConfig:
    """A whole training run (pretraining or fine-tuning)."""

    run_dir: str
    sources: List[SourceConfig]
    seed: int = 0
    dtype: str = "float32"
    model: Dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    data_root: str | None = None
    objectives: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    description: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _build(cls, values: Dict[str, Any], where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(known)}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from error


def config_from_dict(values: Dict[str, Any]) -> TrainConfig:
    """Validate a configuration mapping (as read from YAML)."""
    values = dict(values)
    if "sources" not in values or not values["sources"]:
        raise ConfigError("config: 'sources' must list at least one data source")
    if "run_dir" not in values:
        raise ConfigError("config: 'run_dir' is required")
    values["sources"] = [_build(SourceConfig, s, f"sources[{i}]") for i, s in enumerate(values["sources"])]
    values["objectives"] = _build(ObjectiveConfig, values.get("objectives", {}) or {}, "objectives")
    values["optim"] = _build(OptimConfig, values.get("optim", {}) or {}, "optim")
    config = _build(TrainConfig, values, "config")
    for source in config.sources:
        if source.format not in READERS:
            raise ConfigError(f"source {source.name!r}: unknown format {source.format!r}; known: {sorted(READERS)}")
        _check_units(source)
        for selection in (source.frames, source.valid_frames):
            if selection is not None:
                parse_slice(selection)
        if source.split not in ("molecule", "frame"):
            raise ConfigError(f"source {source.name!r}: split must be 'molecule' or 'frame'")
    if config.optim.schedule not in ("cosine", "plateau"):
        raise ConfigError("optim.schedule must be 'cosine' or 'plateau'")
    if config.optim.select_by not in SELECTION_METRICS:
        raise ConfigError(f"optim.select_by must be one of {list(SELECTION_METRICS)}, got {config.optim.select_by!r}")
    optim = config.optim
    for name in ("batch_size", "valid_every", "checkpoint_every", "log_every", "plateau_patience"):
        value = getattr(optim, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "plateau_patience" else 1):
            raise ConfigError(f"optim.{name} must be a positive integer, got {value!r}")
    if isinstance(optim.max_steps, bool) or not isinstance(optim.max_steps, int) or optim.max_steps < 0:
        raise ConfigError(f"optim.max_steps must be a non-negative integer, got {optim.max_steps!r}")
    for name in ("lr", "min_lr", "clip_grad_norm"):
        value = getattr(optim, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < float("inf"):
            raise ConfigError(f"optim.{name} must be a positive number, got {value!r}")
    if not 0 < optim.plateau_factor < 1 or not 0 <= optim.ema_decay < 1:
        raise ConfigError("optim.plateau_factor must lie in (0, 1) and optim.ema_decay in [0, 1)")
    if config.optim.time_budget_s is not None and not config.optim.time_budget_s > 0:
        raise ConfigError(f"optim.time_budget_s must be positive, got {config.optim.time_budget_s}")
    if config.optim.early_stop_patience < 0:
        raise ConfigError(f"optim.early_stop_patience must be >= 0, got {config.optim.early_stop_patience}")
    if config.dtype not in ("float32", "float64"):
        raise ConfigError("dtype must be 'float32' or 'float64'")
    if not isinstance(optim.device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", optim.device.strip().lower()):
        raise ConfigError(f"optim.device must be auto, cpu, cuda or cuda:N, got {optim.device!r}")
    names = [s.name for s in config.sources]
    if len(set(names)) != len(names):
        raise ConfigError(f"source names must be unique, got {names}")
    return config


def _check_units(source: SourceConfig) -> None:
    from ..units import energy_factor, length_factor

    if source.units is None:
        return
    unknown = set(source.units) - {"energy", "length"}
    if unknown:
        raise ConfigError(f"source {source.name!r}: units may declare 'energy' and 'length', not {sorted(unknown)}")
    try:
        declared = {k: (energy_factor(v) if k == "energy" else length_factor(v)) for k, v in source.units.items()}
    except ValueError as error:
        raise ConfigError(f"source {source.name!r}: {error}") from error
    native = READERS[source.format][1]
    if native is not None:
        for key, factor in declared.items():
            native_factor = energy_factor(native[key]) if key == "energy" else length_factor(native[key])
            if abs(native_factor - factor) > 1e-12 * max(1.0, native_factor):
                raise ConfigError(
                    f"source {source.name!r}: declared {key} unit {source.units[key]!r} does not match the "
                    f"{source.format} format, whose files are in {native[key]!r} (the reader converts to eV/Å)"
                )


def parse_slice(text: str) -> slice:
    """'100:200', ':950', '0:1000:2' -> slice; raises ConfigError otherwise."""
    parts = str(text).split(":")
    if len(parts) not in (2, 3):
        raise ConfigError(f"frame selection {text!r} must look like 'start:stop' or 'start:stop:step'")
    try:
        values = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise ConfigError(f"frame selection {text!r} must contain integers") from None
    return slice(*values)


def load_config(path: str | os.PathLike) -> TrainConfig:
    """Read and validate a YAML training configuration."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML ({error})") from error
    return config_from_dict(values or {})


def resolve_path(path: str, data_root: str | None) -> Path:
    p = Path(os.path.expandvars(path)).expanduser()
    if not p.is_absolute() and data_root:
        p = Path(os.path.expandvars(data_root)).expanduser() / p
    return p


def expand_paths(paths: List[str], data_root: str | None) -> List[Path]:
    """Resolve each path; a path with glob characters (``*?[``) expands to its sorted matches and
    must match at least one file."""
    out: List[Path] = []
    for path in paths:
        resolved = resolve_path(path, data_root)
        if any(c in resolved.name for c in "*?["):
            matches = sorted(resolved.parent.glob(resolved.name))
            if not matches:
                raise FileNotFoundError(f"no file matches {resolved}")
            out.extend(matches)
        else:
            out.append(resolved)
    return out


def read_source(
    source: SourceConfig,
    data_root: str | None,
    path: Union[str, List[str], None] = None,
    validation: bool | str = False,
) -> ConformationSet:
    """Read one source's data (or, with ``validation`` True/'valid' or 'test', its validation or
    test file) with the configured reader and filters."""
    if validation is True:
        validation = "valid"
    from ..data import readers as readers_module

    function_name, native = READERS[source.format]
    reader = getattr(readers_module, function_name)
    options = dict(source.options)
    if validation:
        options.update(source.valid_options)
    if native is None and source.units:
        options.setdefault("energy_unit", source.units.get("energy", "eV"))
        if source.format == "ase":
            options.setdefault("length_unit", source.units.get("length", "Angstrom"))
    paths = path or source.path
    paths = [paths] if isinstance(paths, str) else list(paths)
    parts = [reader(p, **options) for p in expand_paths(paths, data_root)]
    data = parts[0] if len(parts) == 1 else ConformationSet.concatenate(parts)
    if source.max_force is not None and data.forces is not None:
        norms = np.linalg.norm(data.forces, axis=1)
        frame_max = np.maximum.reduceat(norms, data.offsets[:-1]) if len(data) else norms
        data = data.subset(np.flatnonzero(frame_max <= source.max_force))
    selection = {"valid": source.valid_frames, "test": source.test_frames}[validation] if validation else source.frames
    if selection is not None:
        data = data.subset(np.arange(len(data))[parse_slice(selection)])
    if not validation and source.max_frames is not None and len(data) > source.max_frames:
        rng = np.random.default_rng(0)
        data = data.subset(np.sort(rng.choice(len(data), source.max_frames, replace=False)))
    data.source = source.name
    return data

"""Training configuration: YAML files -> validated dataclasses, and loading the data sources.

Unknown keys are errors (a typo must never be silently ignored). Relative data paths are
resolved against ``data_root`` when it is set, else against the working directory.
"""

from __future__ import annotations

import os
import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Union

import yaml

from ..data.readers import FORMATS, format_reader
from ..data.sources import parse_slice
from .objectives import ObjectiveConfig


class ConfigError(ValueError):
    """The training configuration is invalid."""


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
    # frames without a finite label that the objective needs: False (default) rejects the source with an
    # error naming the file and frame, True drops them and reports how many (data/screening.py)
    drop_invalid_frames: bool = False
    # robust z-score above which energy / force outliers are dropped; None: only report them
    drop_outliers: float | None = None
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


SELECTION_METRICS = ("valid_loss", "valid_loss_without_denoise", "valid_force_mae_meV_A")


@dataclass
class OptimConfig:
    """Optimiser, schedule and loop settings."""

    batch_size: int = 32
    max_steps: int = 10000
    lr: float = 5e-4
    min_lr: float = 1e-6
    # learning rate (and floor) of the representation (the ET's embedding and interaction layers) as a
    # multiple of ``lr``; the output head, atom reference energies and priors keep ``lr``. Below 1 a
    # fine-tuned pretrained encoder moves less than the head it feeds.
    encoder_lr_scale: float = 1.0
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
    # "valid_loss" (the whole objective), "valid_loss_without_denoise" (the denoising term
    # left out: it rewards the harmonic target, not the reference forces) or "valid_force_mae_meV_A"
    # (the force MAE of every source's validation frames together: with few validation frames it is
    # less noisy than the squared errors of the loss)
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
    # step compiles (about a minute), later steps run faster on CPU (benchmarks.train_speed measures it)
    compile: bool = False


@dataclass
class TrainConfig:
    """A whole training run (pretraining or fine-tuning)."""

    run_dir: str
    sources: List[SourceConfig]
    seed: int = 0
    # seed of the random train/validation carve (valid_fraction, valid_max_frames); None: ``seed``.
    # A committee's members differ in ``seed`` and share this one, so they validate on the same frames.
    split_seed: int | None = None
    dtype: str = "float32"
    model: Dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    data_root: str | None = None
    objectives: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    description: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def field_default(cls: type, name: str) -> Any:
    """The default of field ``name`` of the dataclass ``cls`` (a fresh one for a default factory)."""
    for item in fields(cls):
        if item.name == name:
            if item.default is not MISSING:
                return item.default
            if item.default_factory is not MISSING:
                return item.default_factory()
            raise KeyError(f"{cls.__name__}.{name} has no default")
    raise KeyError(f"{cls.__name__} has no field {name!r}")


# Members of a committee when ``forcefield-et finetune --committee`` is given without a number: eight
# heads rank the per-atom force errors better than four at about the same cost (docs/uncertainty.md).
DEFAULT_COMMITTEE_SIZE = 8

# Defaults of a fine-tuning run (``forcefield-et finetune``: a few hundred labelled frames, usually
# from a pretrained start). The CLI reads its defaults from here and from the dataclass defaults
# above for every field that fine-tuning leaves as it is, so that the two never disagree.
# Plateau patience 10: validation sets of a few dozen frames are noisy enough that 3 validations
# without a new best come from noise alone, and the learning rate then decays long before the error
# has levelled off (docs/finetune.md, "Train until converged").
FINETUNE_OPTIM = OptimConfig(
    batch_size=8, max_steps=3000, warmup_steps=100, ema_decay=0.99, plateau_patience=10, valid_every=250,
    compile=True,
)
FINETUNE_SCRATCH_LAYERS = 4  # num_layers of a model trained from scratch with --hidden-channels
# max_steps of a run that only its time budget or early stopping ends (finetune without --steps)
UNLIMITED_STEPS = 10**9


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


REPLAY_SOURCE_NAME = "replay"


def with_replay(
    sources: List[Dict[str, Any]],
    paths: Union[str, List[str]],
    ratio: float = 0.2,
    weight: float = 1.0,
    format: str = "auto",
) -> List[Dict[str, Any]]:
    """Fine-tuning sources plus a replay source: force-labelled frames (e.g. pretraining frames at the
    fine-tuning data's level of theory) mixed into every batch at ``ratio`` of its frames, trained on
    forces only, with no validation split of their own (validation, the schedule and early stopping
    follow the fine-tuning data alone). The other sources share the remaining ``1 - ratio``."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio < 1:
        raise ConfigError(f"replay ratio must lie in (0, 1), got {ratio!r}")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < float("inf"):
        raise ConfigError(f"replay weight must be a positive number, got {weight!r}")
    if any(s.get("name") == REPLAY_SOURCE_NAME for s in sources):
        raise ConfigError(f"a source is already named {REPLAY_SOURCE_NAME!r}")
    total = sum(float(s.get("ratio", 1.0)) for s in sources)
    scaled = [{**s, "ratio": float(s.get("ratio", 1.0)) / total * (1.0 - ratio)} for s in sources]
    replay = {"name": REPLAY_SOURCE_NAME, "path": paths, "format": format, "objective": "forces",
              "weight": float(weight), "ratio": float(ratio), "valid_fraction": 0.0}
    return scaled + [replay]


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
        if source.format not in FORMATS:
            raise ConfigError(f"source {source.name!r}: unknown format {source.format!r}; known: {list(FORMATS)}")
        _check_units(source)
        for selection in (source.frames, source.valid_frames):
            if selection is not None:
                try:
                    parse_slice(selection)
                except ValueError as error:
                    raise ConfigError(f"source {source.name!r}: {error}") from error
        if source.split not in ("molecule", "frame"):
            raise ConfigError(f"source {source.name!r}: split must be 'molecule' or 'frame'")
        if not isinstance(source.drop_invalid_frames, bool):
            raise ConfigError(
                f"source {source.name!r}: drop_invalid_frames must be true or false, got {source.drop_invalid_frames!r}"
            )
        z = source.drop_outliers
        if z is not None and (isinstance(z, bool) or not isinstance(z, (int, float)) or not 0 < z < float("inf")):
            raise ConfigError(f"source {source.name!r}: drop_outliers must be a positive number (a z-score), got {z!r}")
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
    for name in ("lr", "min_lr", "clip_grad_norm", "encoder_lr_scale"):
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
    native = format_reader(source.format)[1]
    if native is not None:
        for key, factor in declared.items():
            native_factor = energy_factor(native[key]) if key == "energy" else length_factor(native[key])
            if abs(native_factor - factor) > 1e-12 * max(1.0, native_factor):
                raise ConfigError(
                    f"source {source.name!r}: declared {key} unit {source.units[key]!r} does not match the "
                    f"{source.format} format, whose files are in {native[key]!r} (the reader converts to eV/Å)"
                )


def load_config(path: str | os.PathLike) -> TrainConfig:
    """Read and validate a YAML training configuration."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        one_line = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        raise ConfigError(f"{path}: invalid YAML ({one_line})") from error
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a YAML mapping (run_dir, sources, ...), got {type(values).__name__}")
    return config_from_dict(values or {})

"""The CLI's training defaults come from the configuration dataclasses (training/config.py)."""

from __future__ import annotations

from dataclasses import fields

import pytest

from forcefield_et.cli import build_parser, finetune_config
from forcefield_et.training.config import (
    FINETUNE_OPTIM,
    FINETUNE_SCRATCH_LAYERS,
    OptimConfig,
    SourceConfig,
    TrainConfig,
    field_default,
)
from forcefield_et.training.objectives import ObjectiveConfig

# finetune option -> (dataclass or defaults object, field)
FINETUNE_OPTIONS = {
    "batch_size": (FINETUNE_OPTIM, "batch_size"),
    "lr": (FINETUNE_OPTIM, "lr"),
    "min_lr": (FINETUNE_OPTIM, "min_lr"),
    "warmup_steps": (FINETUNE_OPTIM, "warmup_steps"),
    "ema_decay": (FINETUNE_OPTIM, "ema_decay"),
    "plateau_factor": (FINETUNE_OPTIM, "plateau_factor"),
    "plateau_patience": (FINETUNE_OPTIM, "plateau_patience"),
    "early_stop_patience": (FINETUNE_OPTIM, "early_stop_patience"),
    "valid_every": (FINETUNE_OPTIM, "valid_every"),
    "checkpoint_every": (FINETUNE_OPTIM, "checkpoint_every"),
    "compile": (FINETUNE_OPTIM, "compile"),
    "threads": (FINETUNE_OPTIM, "threads"),
    "device": (FINETUNE_OPTIM, "device"),
    "energy_weight": (ObjectiveConfig, "energy_weight"),
    "force_weight": (ObjectiveConfig, "force_weight"),
    "format": (SourceConfig, "format"),
    "valid_fraction": (SourceConfig, "valid_fraction"),
    "valid_max_frames": (SourceConfig, "valid_max_frames"),
    "dtype": (TrainConfig, "dtype"),
    "seed": (TrainConfig, "seed"),
}


def _default(owner, name):
    return getattr(owner, name) if not isinstance(owner, type) else field_default(owner, name)


def _finetune_args(*extra: str):
    return build_parser().parse_args(["finetune", "--train", "train.xyz", "--out", "run", *extra])


@pytest.mark.parametrize("option", sorted(FINETUNE_OPTIONS))
def test_finetune_option_defaults_are_the_config_defaults(option):
    owner, name = FINETUNE_OPTIONS[option]
    assert getattr(_finetune_args(), option) == _default(owner, name)


def test_finetune_defaults_differ_from_the_dataclass_only_where_fine_tuning_says_so():
    changed = {
        f.name for f in fields(OptimConfig) if getattr(FINETUNE_OPTIM, f.name) != field_default(OptimConfig, f.name)
    }
    assert changed == {"batch_size", "max_steps", "warmup_steps", "ema_decay", "plateau_patience", "valid_every",
                       "compile"}
    assert _finetune_args().num_layers == FINETUNE_SCRATCH_LAYERS


def test_the_config_of_a_bare_finetune_command_has_the_finetune_defaults(tmp_path):
    config = finetune_config(_finetune_args())
    for f in fields(OptimConfig):
        assert getattr(config.optim, f.name) == getattr(FINETUNE_OPTIM, f.name), f.name
    assert config.objectives == ObjectiveConfig()
    source = config.sources[0]
    for name in ("format", "valid_fraction", "valid_max_frames", "weight", "ratio", "split"):
        assert getattr(source, name) == field_default(SourceConfig, name), name
    assert (config.dtype, config.seed) == (field_default(TrainConfig, "dtype"), field_default(TrainConfig, "seed"))


def test_pretrain_options_only_override_the_config():
    args = build_parser().parse_args(["pretrain", "--config", "c.yaml"])
    assert (args.max_steps, args.run_dir, args.compile, args.device, args.threads) == (None,) * 5


def test_committee_without_a_number_is_the_default_size():
    from forcefield_et.cli import build_parser
    from forcefield_et.training.config import DEFAULT_COMMITTEE_SIZE

    parser = build_parser()
    bare = parser.parse_args(["finetune", "--train", "a.xyz", "--out", "run", "--committee"])
    assert bare.committee == DEFAULT_COMMITTEE_SIZE == 8 and bare.committee_kind == "heads"
    assert parser.parse_args(["finetune", "--train", "a.xyz", "--out", "run", "--committee", "3"]).committee == 3
    assert parser.parse_args(["finetune", "--train", "a.xyz", "--out", "run"]).committee is None


def test_a_run_without_steps_that_a_budget_or_early_stopping_ends_halves_on_plateaus():
    for extra in (["--time-budget", "2h"], ["--early-stop-patience", "5"]):
        optim = finetune_config(_finetune_args(*extra)).optim
        assert optim.schedule == "plateau", extra
        assert optim.max_steps > 10**6, extra
    optim = finetune_config(_finetune_args("--time-budget", "2h", "--steps", "5000")).optim
    assert (optim.schedule, optim.max_steps) == ("cosine", 5000)
    assert finetune_config(_finetune_args()).optim.schedule == FINETUNE_OPTIM.schedule == "cosine"
    optim = finetune_config(_finetune_args("--time-budget", "2h", "--schedule", "plateau")).optim
    assert optim.schedule == "plateau"


def test_a_cosine_without_steps_to_decay_over_is_a_clear_error(tmp_path, capsys):
    from ase.build import molecule
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from forcefield_et.cli import main

    frame = molecule("H2O")
    frame.calc = SinglePointCalculator(frame, energy=-14.2, forces=[[0.0, 0.0, 0.1]] * 3)
    train = tmp_path / "train.xyz"
    write(train, [frame] * 4)
    status = main(["finetune", "--train", str(train), "--out", str(tmp_path / "run"), "--schedule", "cosine",
                   "--early-stop-patience", "20"])
    assert status != 0
    assert "--schedule cosine decays the learning rate over --steps or over --time-budget" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_cosine_with_a_time_budget_and_no_steps_decays_over_the_budget():
    optim = finetune_config(_finetune_args("--time-budget", "2h", "--schedule", "cosine")).optim
    assert optim.schedule == "cosine" and optim.time_budget_s == 7200 and optim.max_steps > 10**6

"""Training configuration: YAML -> validated dataclasses (forcefield_et.training.config)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from forcefield_et.training import ConfigError, config_from_dict, load_config
from forcefield_et.training.config import OptimConfig, SourceConfig

REPO_ROOT = Path(__file__).resolve().parents[2]


def _training_configs():
    """YAML files in configs/ that are training configurations (model-card YAMLs, which hold
    no ``sources``/``run_dir``, are not)."""
    found = []
    for path in sorted((REPO_ROOT / "configs").glob("*.y*ml")):
        values = yaml.safe_load(path.read_text())
        if isinstance(values, dict) and ({"sources", "run_dir"} & set(values)):
            found.append(path)
    return found


CONFIGS = _training_configs()


def minimal(**overrides):
    values = {
        "run_dir": "runs/x",
        "sources": [{"name": "eth", "format": "rmd17", "path": "rmd17/rmd17_ethanol_train_01.npz",
                     "objective": "energy_forces"}],
    }
    values.update(overrides)
    return values


def with_source(**source_overrides):
    values = minimal()
    values["sources"][0].update(source_overrides)
    return values


def test_minimal_config_and_defaults():
    config = config_from_dict(minimal())
    assert config.run_dir == "runs/x"
    assert isinstance(config.sources[0], SourceConfig) and config.sources[0].format == "rmd17"
    assert isinstance(config.optim, OptimConfig) and config.optim.batch_size == 32
    assert config.objectives.sigma == 0.04
    assert config.init_from is None and config.dtype == "float32"


@pytest.mark.parametrize(
    "values, key",
    [
        (minimal(learning_rate=1e-3), "learning_rate"),
        (minimal(optim={"lr": 1e-3, "max_step": 10}), "max_step"),
        (minimal(objectives={"sigmaa": 0.1}), "sigmaa"),
        (with_source(weigth=2.0), "weigth"),
    ],
    ids=["top-level", "optim", "objectives", "source"],
)
def test_unknown_keys_are_errors_naming_the_key(values, key):
    with pytest.raises(ConfigError, match=key):
        config_from_dict(values)


def test_declared_units_must_match_the_format():
    with pytest.raises(ConfigError, match="kcal/mol"):
        config_from_dict(with_source(units={"energy": "eV"}))
    with pytest.raises(ConfigError, match="Angstrom"):
        config_from_dict(with_source(units={"length": "bohr"}))
    # the format's own units are accepted
    config = config_from_dict(with_source(units={"energy": "kcal/mol", "length": "Angstrom"}))
    assert config.sources[0].units == {"energy": "kcal/mol", "length": "Angstrom"}


def test_unknown_unit_strings_are_errors():
    with pytest.raises(ConfigError, match="furlong"):
        config_from_dict(with_source(format="ase", units={"length": "furlong"}))
    with pytest.raises(ConfigError, match="kcal/mole"):
        config_from_dict(with_source(format="ase", units={"energy": "kcal/mole"}))
    with pytest.raises(ConfigError, match="temperature"):
        config_from_dict(with_source(format="ase", units={"temperature": "K"}))
    # a reader that takes units accepts any known one
    config_from_dict(with_source(format="ase", units={"energy": "Hartree", "length": "bohr"}))


@pytest.mark.parametrize(
    "values, match",
    [
        (minimal(sources=[]), "sources"),
        ({"sources": minimal()["sources"]}, "run_dir"),
        (with_source(format="hdf9"), "hdf9"),
        (minimal(dtype="float16"), "dtype"),
        (minimal(optim={"schedule": "linear"}), "schedule"),
        (with_source(split="scaffold"), "split"),
        (minimal(objectives={"denoise_fraction": 2.0}), "denoise_fraction"),
        (minimal(sources=[{"path": "a.xyz"}]), "name"),
        (minimal(sources=["a.xyz"]), "mapping"),
    ],
)
def test_invalid_values_are_config_errors(values, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(values)


def test_duplicate_source_names_are_errors():
    source = minimal()["sources"][0]
    with pytest.raises(ConfigError, match="unique"):
        config_from_dict(minimal(sources=[source, dict(source)]))


def test_valid_yaml_file_loads(tmp_path):
    text = """
run_dir: runs/test
seed: 3
dtype: float64
model: {hidden_channels: 32, num_layers: 2}
objectives: {sigma: 0.05, k: 20.0, denoise_fraction: 0.25}
sources:
  - {name: eth, format: rmd17, path: rmd17/rmd17_ethanol_train_01.npz, objective: energy_forces,
     frames: "0:200", units: {energy: kcal/mol}}
  - {name: relaxed, format: xtb_corpus, path: xtb/xtb_shard0.npz, options: {kinds: [0]},
     objective: equilibrium, ratio: 0.25, weight: 0.5}
optim: {batch_size: 8, max_steps: 100, lr: 1.0e-3, schedule: plateau}
"""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    config = load_config(path)
    assert config.seed == 3 and config.dtype == "float64"
    assert config.model == {"hidden_channels": 32, "num_layers": 2}
    assert config.objectives.k == 20.0 and config.objectives.denoise_fraction == 0.25
    assert [s.name for s in config.sources] == ["eth", "relaxed"]
    assert config.sources[0].frames == "0:200"
    assert config.sources[1].options == {"kinds": [0]} and config.sources[1].weight == 0.5
    assert config.optim.schedule == "plateau" and config.optim.lr == 1e-3
    # to_dict round-trips through YAML to the same configuration
    again = config_from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict())))
    assert again == config


def test_load_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_dir: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="sources"):
        load_config(empty)


@pytest.mark.skipif(not CONFIGS, reason="no YAML files in configs/")
@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load(path):
    config = load_config(path)
    assert config.sources and config.run_dir
    assert config.optim.max_steps > 0
    assert all(s.objective in ("forces", "equilibrium", "energy_forces", "energy") for s in config.sources)


def test_with_replay_adds_a_forces_only_source_without_validation():
    from forcefield_et.training import with_replay

    target = {"name": "aspirin", "path": "a.npz", "objective": "energy_forces", "ratio": 1.0}
    sources = with_replay([target], ["b.npz", "c.npz"], ratio=0.25, weight=0.5, format="rmd17")
    assert [s["ratio"] for s in sources] == [0.75, 0.25]
    replay = config_from_dict({"run_dir": "r", "sources": sources}).sources[1]
    assert (replay.name, replay.objective, replay.weight, replay.valid_fraction) == ("replay", "forces", 0.5, 0.0)
    assert replay.path == ["b.npz", "c.npz"] and replay.format == "rmd17"
    assert target["ratio"] == 1.0  # the caller's sources are not modified


@pytest.mark.parametrize("kwargs, match", [({"ratio": 0.0}, "ratio"), ({"ratio": 1.0}, "ratio"),
                                           ({"weight": 0.0}, "weight")])
def test_with_replay_rejects_bad_settings(kwargs, match):
    from forcefield_et.training import with_replay

    with pytest.raises(ConfigError, match=match):
        with_replay([{"name": "t", "path": "a.npz"}], "b.npz", **kwargs)
    with pytest.raises(ConfigError, match="already named"):
        with_replay([{"name": "replay", "path": "a.npz"}], "b.npz")


def test_a_run_stored_before_the_stress_weight_existed_resumes_under_its_default():
    """A stored configuration without ``objectives.stress_weight`` (runs made before it existed)
    has the fingerprint of the same configuration at the default weight, not at another weight."""
    from forcefield_et.training.run_directory import config_fingerprint

    current = config_from_dict(minimal()).to_dict()
    stored = {**current, "objectives": {k: v for k, v in current["objectives"].items() if k != "stress_weight"}}
    assert current["objectives"]["stress_weight"] == 1.0
    assert config_fingerprint(stored) == config_fingerprint(current)
    other = config_from_dict(minimal(objectives={"stress_weight": 5.0})).to_dict()
    assert config_fingerprint(stored) != config_fingerprint(other)

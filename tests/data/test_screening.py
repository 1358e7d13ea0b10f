"""Data screening before step 1: frames without the labels their objective needs (one rule for
training, validation and test files), and energy / force outliers by robust z-score."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from forcefield_et.data import DataFormatError
from forcefield_et.data.screening import InvalidFramesError, outlier_scores, robust_z_scores
from forcefield_et.data.sources import read_source
from forcefield_et.training.config import config_from_dict
from forcefield_et.training.run_directory import config_fingerprint
from forcefield_et.training.trainer import Trainer

WATER = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
REFERENCE = {"O": -430.0, "H": -13.0}  # eV per atom


def water_frames(n: int, seed: int = 0, energy_shift: dict | None = None, force_scale: dict | None = None,
                 nan_forces: tuple = (), nan_energy: tuple = (), inf_energy: tuple = ()) -> list:
    """n water frames with energies near a per-element reference and forces of about 1 eV/Å."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        atoms = Atoms("OH2", positions=WATER + rng.normal(0, 0.05, (3, 3)))
        energy = REFERENCE["O"] + 2 * REFERENCE["H"] + rng.normal(0, 0.02) + (energy_shift or {}).get(i, 0.0)
        forces = rng.normal(0, 1.0, (3, 3)) * (force_scale or {}).get(i, 1.0)
        if i in nan_forces:
            forces[:] = np.nan
        if i in nan_energy:
            energy = np.nan
        if i in inf_energy:
            energy = np.inf
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        frames.append(atoms)
    return frames


def source(path, **extra) -> dict:
    return {"name": "water", "path": str(path), "format": "ase", "objective": "energy_forces", **extra}


def config(tmp_path, **source_extra):
    return config_from_dict(
        {
            "run_dir": str(tmp_path / "run"),
            "sources": [source(source_extra.pop("path"), **source_extra)],
            "model": {"hidden_channels": 8, "num_layers": 1, "num_heads": 2, "num_rbf": 8},
            "optim": {"batch_size": 4, "max_steps": 1, "valid_every": 1, "compile": False},
        }
    )


def test_frame_without_forces_is_rejected_naming_file_and_frame(tmp_path):
    path = tmp_path / "train.xyz"
    write(path, water_frames(8, nan_forces=(5,)))
    cfg = config(tmp_path, path=path, valid_fraction=0.0)
    with pytest.raises(InvalidFramesError, match=r"train\.xyz: frame 5 has missing or non-finite \(NaN/inf\) forces"):
        read_source(cfg.sources[0], None)


def test_frame_with_infinite_energy_is_rejected_and_dropped_by_the_same_rule(tmp_path):
    path = tmp_path / "train.xyz"
    write(path, water_frames(8, inf_energy=(6,), nan_forces=(2,)))
    strict = config(tmp_path, path=path, valid_fraction=0.0)
    with pytest.raises(DataFormatError, match=r"train\.xyz.*frame 6"):
        read_source(strict.sources[0], None)
    messages: list = []
    lenient = config(tmp_path, path=path, valid_fraction=0.0, drop_invalid_frames=True)
    data = read_source(lenient.sources[0], None, report=messages.append)
    assert len(data) == 6 and np.isfinite(data.energy).all() and np.isfinite(data.forces).all()
    assert any("dropped 2 frame(s)" in m and f"2 of {path}" in m for m in messages), messages


def test_frame_indices_are_those_of_the_file_after_a_frame_selection(tmp_path):
    path = tmp_path / "train.xyz"
    write(path, water_frames(10, nan_energy=(7,)))
    cfg = config(tmp_path, path=path, frames="4:10", valid_fraction=0.0)
    with pytest.raises(InvalidFramesError, match=r"frame 7 has a missing or non-finite \(NaN/inf\) energy"):
        read_source(cfg.sources[0], None)
    unused = config(tmp_path, path=path, frames="0:7", valid_fraction=0.0)
    assert len(read_source(unused.sources[0], None)) == 7  # the bad frame is not used: no error


def test_forces_objective_does_not_need_energies(tmp_path):
    path = tmp_path / "train.xyz"
    write(path, water_frames(6, nan_energy=(1, 4)))
    cfg = config(tmp_path, path=path, objective="forces", valid_fraction=0.0)
    assert len(read_source(cfg.sources[0], None)) == 6


def test_invalid_validation_frame_fails_before_training(tmp_path):
    train, valid = tmp_path / "train.xyz", tmp_path / "valid.xyz"
    write(train, water_frames(8))
    write(valid, water_frames(4, seed=1, nan_energy=(3,)))
    cfg = config(tmp_path, path=train, valid_path=str(valid))
    with pytest.raises(InvalidFramesError, match=r"valid\.xyz: frame 3 has a missing"):
        Trainer(cfg, progress=False, existing="overwrite")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_dropped_validation_frames_leave_a_finite_validation_loss(tmp_path, capsys):
    train, valid = tmp_path / "train.xyz", tmp_path / "valid.xyz"
    write(train, water_frames(8, nan_forces=(0,)))
    write(valid, water_frames(4, seed=1, nan_energy=(3,)))
    cfg = config(tmp_path, path=train, valid_path=str(valid), drop_invalid_frames=True)
    trainer = Trainer(cfg, progress=False, existing="overwrite")
    out = capsys.readouterr().out
    assert f"1 of {train}" in out and f"1 of {valid}" in out
    assert len(trainer.sources[0].data) == 7 and len(trainer.valid_sets[0]) == 3
    metrics = trainer.run()
    assert np.isfinite(metrics["valid_loss"]) and (tmp_path / "run" / "best.pt").exists()


def test_robust_z_scores():
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 100.0, np.nan])
    z = robust_z_scores(values)
    # median 3.5, MAD 1.5: z = 0.6745 * |x - 3.5| / 1.5
    np.testing.assert_allclose(z[:6], 0.6745 * np.abs(values[:6] - 3.5) / 1.5)
    assert np.isnan(z[6])
    assert (robust_z_scores(np.full(5, 2.0)) == 0).all()  # no spread: no outliers


def test_outliers_are_reported_with_frame_indices_and_dropped_only_on_request(tmp_path):
    path = tmp_path / "train.xyz"
    write(path, water_frames(40, energy_shift={11: 5.0}, force_scale={23: 30.0}))
    messages: list = []
    cfg = config(tmp_path, path=path, valid_fraction=0.0)
    data = read_source(cfg.sources[0], None, report=messages.append)
    assert len(data) == 40  # report only
    energy_line = next(m for m in messages if "energy outlier" in m)
    force_line = next(m for m in messages if "force outlier" in m)
    assert "train.xyz frame 11" in energy_line and "kept" in energy_line
    assert "train.xyz frame 23" in force_line
    scores = outlier_scores(data, "energy_forces")
    assert scores["energy"][11] > 50 and np.nanmax(np.delete(scores["energy"], 11)) < 6
    messages.clear()
    dropping = config(tmp_path, path=path, valid_fraction=0.0, drop_outliers=8.0)
    kept = read_source(dropping.sources[0], None, report=messages.append)
    assert len(kept) == 38
    assert not np.isclose(kept.energy, data.energy[11]).any()
    assert all("dropped those above 8" in m for m in messages)


def test_outliers_in_a_test_file_are_reported_but_never_dropped(tmp_path):
    path = tmp_path / "test.xyz"
    write(path, water_frames(30, energy_shift={4: 5.0}))
    cfg = config(tmp_path, path=path, valid_fraction=0.0, drop_outliers=5.0)
    messages: list = []
    assert len(read_source(cfg.sources[0], None, validation="test", report=messages.append)) == 30
    assert any("frame 4" in m for m in messages)


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), "3", True])
def test_drop_outliers_must_be_a_positive_number(tmp_path, value):
    with pytest.raises(ValueError, match="drop_outliers"):
        config(tmp_path, path=tmp_path / "x.xyz", drop_outliers=value)


def test_runs_stored_before_the_screening_options_still_resume(tmp_path):
    current = config(tmp_path, path=tmp_path / "x.xyz").to_dict()
    older_sources = [{k: v for k, v in s.items() if not k.startswith("drop_")} for s in current["sources"]]
    stored = {**current, "sources": older_sources}
    assert config_fingerprint(stored) == config_fingerprint(current)
    changed = config(tmp_path, path=tmp_path / "x.xyz", drop_invalid_frames=True).to_dict()
    assert config_fingerprint(stored) != config_fingerprint(changed)


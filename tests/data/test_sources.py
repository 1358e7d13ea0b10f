"""Training data sources (forcefield_et.data.sources): frame selections, paths under a data root
and globs, and read_source's filters in their order (force cap, frame slice, frame cap)."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from forcefield_et.data.sources import expand_paths, parse_slice, read_source, resolve_path
from forcefield_et.training.config import SourceConfig


@pytest.mark.parametrize(("text", "expected"), [("100:200", slice(100, 200)), (":950", slice(None, 950)),
                                                ("0:1000:2", slice(0, 1000, 2)), ("-50:", slice(-50, None))])
def test_frame_selections_are_slices(text, expected):
    assert parse_slice(text) == expected


@pytest.mark.parametrize(("text", "message"), [("100", "start:stop"), ("1:2:3:4", "start:stop"),
                                               ("a:b", "integers"), ("1.5:3", "integers")])
def test_malformed_frame_selections_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        parse_slice(text)


def test_relative_paths_live_under_the_data_root_and_absolute_ones_do_not(tmp_path, monkeypatch):
    monkeypatch.setenv("FF_DATA", str(tmp_path))
    assert resolve_path("rmd17/a.npz", "$FF_DATA") == tmp_path / "rmd17" / "a.npz"
    assert resolve_path(str(tmp_path / "b.npz"), "/elsewhere") == tmp_path / "b.npz"
    assert resolve_path("c.npz", None) == resolve_path("c.npz", "")


def test_globs_expand_sorted_and_must_match(tmp_path):
    for name in ("b_2.npz", "b_1.npz", "c.npz"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in expand_paths(["b_*.npz", "c.npz"], str(tmp_path))] == ["b_1.npz", "b_2.npz", "c.npz"]
    with pytest.raises(FileNotFoundError, match="no file matches"):
        expand_paths(["x_*.npz"], str(tmp_path))


@pytest.fixture
def frames_file(tmp_path):
    """Ten water frames with energy k (eV) and largest force 0.5 k (eV/Å), k = 0..9."""
    frames = []
    for k in range(10):
        atoms = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
        forces = np.zeros((3, 3))
        forces[1, 0] = 0.5 * k
        atoms.calc = SinglePointCalculator(atoms, energy=float(k), forces=forces)
        frames.append(atoms)
    path = tmp_path / "water.extxyz"
    write(path, frames)
    return path


def test_read_source_caps_forces_then_slices_then_caps_frames(frames_file, capsys):
    source = SourceConfig(name="w", path=frames_file.name, format="ase", objective="energy_forces")
    assert read_source(source, str(frames_file.parent)).energy.tolist() == list(map(float, range(10)))
    source.max_force = 3.0  # keeps k <= 6
    source.frames = "1:"  # then drops the first kept frame
    data = read_source(source, str(frames_file.parent))
    assert data.energy.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] and data.source == "w"
    source.max_frames = 3  # a reproducible random three of those, in file order
    capped = read_source(source, str(frames_file.parent)).energy.tolist()
    assert len(capped) == 3 and capped == sorted(capped) and set(capped) <= {1.0, 2.0, 3.0, 4.0, 5.0, 6.0}
    assert read_source(source, str(frames_file.parent)).energy.tolist() == capped


def test_validation_and_test_reads_use_their_own_selection_and_no_frame_cap(frames_file):
    source = SourceConfig(name="w", path=frames_file.name, format="ase", objective="energy_forces", frames="0:5",
                          valid_frames="5:8", test_frames="8:", max_frames=1)
    root = str(frames_file.parent)
    assert read_source(source, root, validation=True).energy.tolist() == [5.0, 6.0, 7.0]
    assert read_source(source, root, validation="test").energy.tolist() == [8.0, 9.0]

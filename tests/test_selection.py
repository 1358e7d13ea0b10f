"""forcefield_et.selection and ``forcefield-et select``: uncertain frames first, repeats skipped."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.io import read, write

from forcefield_et.cli import main
from forcefield_et.selection import frame_distance, select_frames
from forcefield_et.structures import structure_path


def water(stretch: float = 0.0, angle_shift: float = 0.0) -> Atoms:
    theta = np.deg2rad(104.5 + angle_shift) / 2
    r = 0.96 + stretch
    return Atoms("OH2", positions=[[0, 0, 0], [r * np.sin(theta), r * np.cos(theta), 0],
                                   [-r * np.sin(theta), r * np.cos(theta), 0]])


def test_frame_distance_is_invariant_and_zero_for_a_repeat():
    a = water()
    moved = a.copy()
    moved.rotate(37, "z")
    moved.translate([1.0, -2.0, 0.5])
    assert frame_distance(a, moved) == pytest.approx(0.0, abs=1e-12)
    b = water(stretch=0.1)
    hh_change = 2 * 0.1 * np.sin(np.deg2rad(104.5) / 2)  # both O-H bonds 0.1 Å longer, same angle
    assert frame_distance(a, b) == pytest.approx(np.sqrt((0.1**2 + 0.1**2 + hh_change**2) / 3), rel=1e-9)
    assert frame_distance(a, Atoms("HOH", positions=a.positions[[1, 0, 2]])) == float("inf")  # other atom order


def test_select_takes_the_most_uncertain_frames_and_skips_repeats():
    frames = [water(), water(stretch=0.2), water(stretch=0.2), water(angle_shift=20)]
    std = [np.array([0.1, 0.1, 0.1]), np.array([0.1, 0.9, 0.2]), np.array([0.1, 0.9, 0.2]), np.array([0.5, 0, 0])]
    picked = select_frames(frames, std, count=3)
    assert [p["index"] for p in picked] == [1, 2, 3]  # no diversity rule: the repeat is picked too
    assert picked[0]["atom"] == 1 and picked[0]["max_force_std_eV_A"] == pytest.approx(0.9)
    diverse = select_frames(frames, std, count=3, min_distance=0.01)
    assert [p["index"] for p in diverse] == [1, 3, 0]
    assert [p["index"] for p in select_frames(frames, std, count=3, min_distance=0.01, min_force_std=0.3)] == [1, 3]
    with pytest.raises(ValueError, match="positive integer"):
        select_frames(frames, std, count=0)


def test_cli_select_writes_the_chosen_frames_without_labels(tmp_path, capsys):
    base = read(structure_path("aspirin"))
    rng = np.random.default_rng(0)
    frames = []
    for sigma in (0.0, 0.0, 0.15):  # a repeated geometry and a strongly displaced one
        atoms = base.copy()
        atoms.positions += rng.normal(0, sigma, atoms.positions.shape) if sigma else 0.0
        frames.append(atoms)
    data = tmp_path / "frames.extxyz"
    write(str(data), frames)
    out = tmp_path / "to_label.extxyz"
    argv = ["select", "--model", "pretrained,rmd17-aspirin", "--data", str(data), "--n", "3",
            "--min-distance", "0.01", "--out", str(out), "--device", "cpu"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    indices = [p["index"] for p in summary["selected"]]
    assert summary["frames"] == 3 and len(indices) == 2 and set(indices) in ({0, 2}, {1, 2})
    chosen = read(str(out), index=":")
    assert [a.info["source_index"] for a in chosen] == indices
    assert chosen[0].calc is None  # positions only: labels come from the reference method
    assert main(argv) == 2 and "exists" in capsys.readouterr().err  # never silently replaced
    assert main(["select", "--model", "pretrained", "--data", str(data), "--out", str(tmp_path / "x.xyz")]) == 2
    assert "needs a committee" in capsys.readouterr().err
    # --pool names the same option (the pool of candidate frames)
    pool_argv = [a if a != "--data" else "--pool" for a in argv] + ["--overwrite"]
    assert main(pool_argv) == 0
    assert [p["index"] for p in json.loads(capsys.readouterr().out)["selected"]] == indices

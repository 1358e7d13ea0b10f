"""MD with a committee: the largest per-atom force std per saved frame, and the stop beyond a limit."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from ase.io import read

from forcefield_et import ETCalculator
from forcefield_et.cli import UNCERTAIN_EXIT_STATUS, main
from forcefield_et.md import run_md
from forcefield_et.structures import structure_path

COMMITTEE = ["pretrained", "rmd17-aspirin"]  # bundled models of one architecture


@pytest.fixture
def aspirin_committee():
    atoms = read(structure_path("aspirin"))
    atoms.calc = ETCalculator(COMMITTEE, device="cpu")
    return atoms


def test_md_logs_the_committee_force_std_of_every_saved_frame(aspirin_committee, tmp_path):
    summary = run_md(aspirin_committee, tmp_path / "md", steps=10, interval=5, progress=False, relax_fmax=None)
    with open(tmp_path / "md" / "md_log.csv") as handle:
        rows = list(csv.DictReader(handle))
    stds = [float(r["max_force_std_eV_A"]) for r in rows]
    assert len(stds) == 3 and min(stds) > 0  # two different models disagree
    assert stds[-1] == pytest.approx(float(aspirin_committee.calc.results["forces_std"].max()), rel=1e-6)
    assert summary["max_force_std_eV_A"] == pytest.approx(max(stds))
    assert "stopped" not in summary


def test_md_stops_where_the_committee_disagrees_and_names_the_atom(aspirin_committee, tmp_path):
    start_std = float(np.max(aspirin_committee.calc.get_property("forces_std", aspirin_committee)))
    summary = run_md(aspirin_committee, tmp_path / "md", steps=20, interval=5, progress=False, relax_fmax=None,
                     max_force_std=start_std / 10)
    stopped = summary["stopped"]
    assert stopped["criterion"] == "max_force_std" and stopped["step"] == 5 and summary["steps"] == 5
    atom = stopped["atom"]
    assert stopped["force_std_eV_A"] == pytest.approx(float(aspirin_committee.calc.results["forces_std"][atom]))
    assert f"on atom {aspirin_committee.get_chemical_symbols()[atom]}{atom}" in stopped["reason"]


def test_max_force_std_needs_a_committee_and_a_positive_limit(tmp_path):
    atoms = read(structure_path("aspirin"))
    atoms.calc = ETCalculator("pretrained", device="cpu")
    with pytest.raises(ValueError, match="needs a committee"):
        run_md(atoms, tmp_path / "md", steps=5, progress=False, relax_fmax=None, max_force_std=0.5)
    atoms.calc = ETCalculator(COMMITTEE, device="cpu")
    with pytest.raises(ValueError, match="positive"):
        run_md(atoms, tmp_path / "md", steps=5, progress=False, relax_fmax=None, max_force_std=0.0)


def test_cli_md_with_a_committee_exits_with_its_own_status(tmp_path, capsys):
    argv = ["md", "aspirin", "--model", ",".join(COMMITTEE), "--no-relax", "--steps", "10", "--interval", "5",
            "--max-force-std", "1e-4", "--out", str(tmp_path / "md"), "--no-progress"]
    assert main(argv) == UNCERTAIN_EXIT_STATUS
    err = capsys.readouterr().err
    assert "stopped at" in err and "above --max-force-std" in err and "Traceback" not in err
    code = main(["md", "aspirin", "--no-relax", "--steps", "5", "--max-force-std", "0.5",
                 "--out", str(tmp_path / "md2"), "--no-progress"])
    assert code == 2 and "needs a committee" in capsys.readouterr().err


def test_a_watcher_committee_is_logged_and_checked_without_changing_the_driven_trajectory(tmp_path):
    """A single model drives; a committee beside it gives the force std of every saved frame."""
    plain = read(structure_path("aspirin"))
    plain.calc = ETCalculator("rmd17-aspirin", device="cpu")
    run_md(plain, tmp_path / "plain", steps=10, interval=5, progress=False, relax_fmax=None)
    driven = read(structure_path("aspirin"))
    driven.calc = ETCalculator("rmd17-aspirin", device="cpu")
    watcher = ETCalculator(COMMITTEE, device="cpu")
    summary = run_md(driven, tmp_path / "watched", steps=10, interval=5, progress=False, relax_fmax=None,
                     watcher=watcher)
    frames = read(tmp_path / "watched" / "trajectory.traj", index=":")
    assert np.array_equal(frames[-1].positions, read(tmp_path / "plain" / "trajectory.traj").positions)
    with open(tmp_path / "watched" / "md_log.csv") as handle:
        logged = [float(r["max_force_std_eV_A"]) for r in csv.DictReader(handle)]
    for frame, value in zip(frames, logged):  # the watcher's own std on each saved frame
        frame.calc = ETCalculator(COMMITTEE, device="cpu")
        assert value == pytest.approx(float(frame.calc.get_property("forces_std", frame).max()), rel=1e-5)
    assert summary["max_force_std_eV_A"] == pytest.approx(max(logged))
    # the limit applies to the watcher's spread, and the stop names its most uncertain atom
    stopped = run_md(driven, tmp_path / "stop", steps=20, interval=5, progress=False, relax_fmax=None,
                     watcher=watcher, max_force_std=min(logged) / 10)["stopped"]
    assert stopped["criterion"] == "max_force_std" and stopped["step"] == 5
    assert stopped["force_std_eV_A"] == pytest.approx(float(watcher.results["forces_std"][stopped["atom"]]))


def test_a_watcher_must_be_a_committee(tmp_path, capsys):
    atoms = read(structure_path("aspirin"))
    atoms.calc = ETCalculator("rmd17-aspirin", device="cpu")
    with pytest.raises(ValueError, match="watcher must be a committee"):
        run_md(atoms, tmp_path / "md", steps=5, progress=False, relax_fmax=None,
               watcher=ETCalculator("pretrained", device="cpu"))
    code = main(["md", "aspirin", "--no-relax", "--steps", "5", "--watcher", "pretrained",
                 "--out", str(tmp_path / "md2"), "--no-progress"])
    assert code == 2 and "a watcher must be a committee" in capsys.readouterr().err
    argv = ["md", "aspirin", "--model", "rmd17-aspirin", "--watcher", ",".join(COMMITTEE), "--no-relax",
            "--steps", "10", "--interval", "5", "--max-force-std", "1e-4", "--out", str(tmp_path / "md3"),
            "--no-progress"]
    assert main(argv) == UNCERTAIN_EXIT_STATUS
    assert "above --max-force-std" in capsys.readouterr().err

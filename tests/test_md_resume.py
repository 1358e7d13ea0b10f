"""forcefield_et.md: resumable runs (md_state.npz). A resumed or extended run reproduces the
uninterrupted one bit for bit, whatever a kill left behind."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
from ase.build import molecule
from ase.io import Trajectory, read

from forcefield_et import ETCalculator
from forcefield_et.cli import main
from forcefield_et.md import run_md
from tests.test_files import LockHolder


def ethanol(model):
    atoms = molecule("CH3CH2OH")
    atoms.calc = ETCalculator(str(model), device="cpu")
    return atoms


def frames(path):
    return [frame.positions for frame in read(str(path / "trajectory.traj"), ":")]


def assert_same_run(a, b):
    assert (a / "md_log.csv").read_bytes() == (b / "md_log.csv").read_bytes()
    first, second = frames(a), frames(b)
    assert len(first) == len(second)
    assert all(np.array_equal(x, y) for x, y in zip(first, second))


@pytest.mark.parametrize("thermostat", ["langevin", "nose-hoover"])
def test_an_extended_run_is_the_uninterrupted_run(tiny_model, tmp_path, thermostat):
    options = dict(interval=5, progress=False, thermostat=thermostat, seed=3)
    run_md(ethanol(tiny_model), tmp_path / "whole", steps=30, **options)
    run_md(ethanol(tiny_model), tmp_path / "parts", steps=15, existing="resume", **options)
    summary = run_md(ethanol(tiny_model), tmp_path / "parts", steps=30, existing="resume", **options)
    assert summary["resumed_from_step"] == 15 and summary["steps"] == 30
    assert_same_run(tmp_path / "whole", tmp_path / "parts")


def test_a_kill_after_a_frame_but_before_its_state_loses_and_duplicates_nothing(tiny_model, tmp_path):
    options = dict(interval=5, progress=False, seed=3)
    run_md(ethanol(tiny_model), tmp_path / "whole", steps=30, **options)
    run = tmp_path / "killed"
    run_md(ethanol(tiny_model), run, steps=15, existing="resume", **options)
    # what a kill leaves after the next frame's trajectory entry and log row, before md_state.npz was
    # replaced: one frame and one row too many, half a row, half a state file
    with Trajectory(str(run / "trajectory.traj"), "a") as trajectory:
        trajectory.write(read(str(tmp_path / "whole" / "trajectory.traj"), 3))
    with open(run / "md_log.csv", "a") as handle:
        handle.write("10.0,-1.5,0.2,-1.3,300.0,0.01\n12.5,-1.")
    (run / ".md_state.npz.tmp").write_bytes(b"PK\x03\x04 half")
    run_md(ethanol(tiny_model), run, steps=30, existing="resume", **options)
    assert_same_run(tmp_path / "whole", run)
    assert sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp")) == []
    with open(run / "md_log.csv") as handle:
        times = [float(row["time_fs"]) for row in csv.DictReader(handle)]
    assert times == [0.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0]


def test_resume_refuses_other_settings_and_foreign_output(tiny_model, tmp_path):
    run = tmp_path / "md"
    run_md(ethanol(tiny_model), run, steps=10, interval=5, progress=False, existing="resume")
    with pytest.raises(ValueError, match=r"other settings \(differs in: temperature_K\)"):
        run_md(ethanol(tiny_model), run, steps=10, interval=5, progress=False, temperature_K=500.0,
               existing="resume")
    with pytest.raises(ValueError, match="more than the 5 asked for"):
        run_md(ethanol(tiny_model), run, steps=5, interval=5, progress=False, existing="resume")
    other = ethanol(tiny_model)
    other.positions[0, 0] += 0.1
    with pytest.raises(ValueError, match="structure_sha256"):
        run_md(other, run, steps=10, interval=5, progress=False, existing="resume")
    (run / "md_settings.json").unlink()
    with pytest.raises(ValueError, match="without md_settings.json"):
        run_md(ethanol(tiny_model), run, steps=10, interval=5, progress=False, existing="resume")
    summary = run_md(ethanol(tiny_model), run, steps=10, interval=5, progress=False, temperature_K=500.0)
    assert "resumed_from_step" not in summary  # the default, existing="overwrite", starts afresh
    with Trajectory(str(run / "trajectory.traj")) as trajectory:
        assert len(trajectory) == 3


def test_md_command_resumes_by_default_and_overwrites_on_request(tiny_model, tmp_path, capsys):
    argv = ["md", "ethanol.xyz", "--model", str(tiny_model), "--no-relax", "--steps", "10", "--interval", "5",
            "--no-progress", "--out", str(tmp_path / "md")]
    molecule("CH3CH2OH").write(str(tmp_path / "ethanol.xyz"))
    argv[1] = str(tmp_path / "ethanol.xyz")
    assert main(argv) == 0
    before = (tmp_path / "md" / "md_log.csv").read_bytes()
    assert main(argv[:6] + ["20"] + argv[7:]) == 0  # a longer run extends the finished one
    err = capsys.readouterr().err
    assert "resuming from" in err and "at step 10" in err
    assert (tmp_path / "md" / "md_log.csv").read_bytes().startswith(before)
    with Trajectory(str(tmp_path / "md" / "trajectory.traj")) as trajectory:
        assert len(trajectory) == 5
    assert main(argv + ["--temperature", "400"]) == 2
    assert "holds an MD run with other settings (differs in: temperature_K)" in capsys.readouterr().err
    assert main(argv + ["--temperature", "400", "--overwrite"]) == 0
    with Trajectory(str(tmp_path / "md" / "trajectory.traj")) as trajectory:
        assert len(trajectory) == 3


def test_a_run_on_a_folder_another_process_writes_into_is_refused_and_changes_nothing(tiny_model, tmp_path, capsys):
    run = tmp_path / "md"
    options = dict(interval=5, progress=False, seed=3)
    run_md(ethanol(tiny_model), run, steps=10, existing="resume", **options)
    assert (run / ".lock").exists()  # stays after the run; it does not make the folder foreign output
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".lock"}
    with LockHolder(run) as holder:
        for existing, steps in (("overwrite", 10), ("resume", 20)):
            with pytest.raises(RuntimeError) as info:
                run_md(ethanol(tiny_model), run, steps=steps, existing=existing, **options)
            assert str(info.value).startswith(f"{run} is in use by process {holder.process.pid}: two runs cannot "
                                              "write into one MD output folder; wait for it to finish")
        argv = ["md", str(tmp_path / "ethanol.xyz"), "--model", str(tiny_model), "--no-relax", "--steps", "10",
                "--interval", "5", "--no-progress", "--out", str(run), "--overwrite"]
        molecule("CH3CH2OH").write(argv[1])
        assert main(argv) != 0
        assert f"is in use by process {holder.process.pid}" in capsys.readouterr().err
        assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".lock"} == before
        holder.release()
        summary = run_md(ethanol(tiny_model), run, steps=20, existing="resume", **options)
        holder.stop()
    assert summary["resumed_from_step"] == 10 and summary["steps"] == 20


def test_a_folder_holding_only_a_lock_starts_afresh(tiny_model, tmp_path):
    run = tmp_path / "md"
    run.mkdir()
    (run / ".lock").write_text("process 1\n")  # a run killed before it wrote anything
    summary = run_md(ethanol(tiny_model), run, steps=5, interval=5, progress=False, existing="resume")
    assert "resumed_from_step" not in summary and summary["steps"] == 5
    assert (run / ".lock").read_text() == f"process {os.getpid()}\n"

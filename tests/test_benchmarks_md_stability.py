"""benchmarks/md_stability.py: collapse criterion, h(r), model resolution, resume, and an end-to-end run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import md_stability as ms
from forcefield_et.bonds import bond_changes, bond_lengths, find_bonds, max_bond_deviation
from tests.conftest import REPO_ROOT, shared_path
from tests.test_bonds import _ethanol_trajectory


def _stretch(frames: np.ndarray, bonds: np.ndarray, numbers: np.ndarray, frame: int, amount: float) -> np.ndarray:
    """Move the hydrogen of the first X-H bond away from its partner by ``amount`` Å from ``frame`` on."""
    frames = frames.copy()
    i, j = next((a, b) for a, b in bonds if numbers[a] == 1 or numbers[b] == 1)
    h, partner = (i, j) if numbers[i] == 1 else (j, i)
    for f in range(frame, len(frames)):
        direction = frames[f, h] - frames[f, partner]
        direction /= np.linalg.norm(direction)
        frames[f, h] += amount * direction
    return frames


@pytest.mark.parametrize("amount, expected", [(0.6, 7), (0.4, None)])
def test_collapse_frame_detects_stretched_bond(amount, expected):
    atoms, frames = _ethanol_trajectory()
    bonds = find_bonds(atoms.numbers, frames[0])
    reference = bond_lengths(frames[0], bonds)
    stretched = _stretch(frames, bonds, atoms.numbers, frame=7, amount=amount)
    assert ms.collapse_frame(stretched, bonds, reference, threshold=0.5) == expected
    assert ms.collapse_frame(frames, bonds, reference, threshold=0.5) is None


def test_collapse_frame_non_finite_counts_as_collapse():
    atoms, frames = _ethanol_trajectory()
    bonds = find_bonds(atoms.numbers, frames[0])
    frames[4, 2] = np.nan
    assert ms.collapse_frame(frames, bonds, bond_lengths(frames[0], bonds)) == 4


def test_distance_histogram_normalisation_and_identity():
    _, frames = _ethanol_trajectory()
    h = ms.distance_histogram(frames, bins=500, r_max=10.0)
    assert h.shape == (500,)
    assert h.sum() == pytest.approx(1.0, abs=1e-12)
    assert ms.hr_mae(h, ms.distance_histogram(frames.copy())) == 0.0
    other = ms.distance_histogram(frames * 1.1)
    assert ms.hr_mae(h, other) > 0.0


def test_distance_histogram_bins():
    # two atoms 1.01 Å apart: one pair, bin [1.00, 1.02) of width 0.02 Å
    frames = np.array([[[0.0, 0.0, 0.0], [1.01, 0.0, 0.0]]])
    h = ms.distance_histogram(frames)
    assert h[50] == 1.0 and h.sum() == 1.0


def test_missing_models_are_skipped_with_reason(tmp_path):
    spec = ms.resolve_model("et-scratch", "aspirin", {}, cache_dir=tmp_path, study_runs_dir=tmp_path)
    assert spec.skip_reason and "benchmarks.prepare" in spec.skip_reason
    assert spec.path == tmp_path / "aspirin-1000-scratch" / "best.pt"
    spec = ms.resolve_model("nequip", "aspirin", {}, cache_dir=tmp_path)
    assert spec.skip_reason and "nequip" in spec.skip_reason
    assert ms.resolve_model("nope", "aspirin", {}, cache_dir=tmp_path).skip_reason


def test_nequip_on_cuda_uses_its_cuda_compiled_model_when_there_is_one(tmp_path):
    folder = tmp_path / "nequip-aspirin"
    folder.mkdir()
    (folder / ms.NEQUIP_COMPILED_NAME).write_bytes(b"cpu")
    assert ms.resolve_model("nequip", "aspirin", {}, cache_dir=tmp_path, device="cuda").path.name == "model.nequip.pth"
    (folder / ms.NEQUIP_CUDA_COMPILED_NAME).write_bytes(b"cuda")
    assert ms.resolve_model("nequip", "aspirin", {}, cache_dir=tmp_path, device="cuda").path.name == (
        "model.cuda.nequip.pth")
    assert ms.resolve_model("nequip", "aspirin", {}, cache_dir=tmp_path).path.name == "model.nequip.pth"


def test_prepare_trains_nequip_on_the_gpu_accelerator_when_asked(tmp_path):
    from benchmarks.prepare import NEQUIP_MDSIM, nequip_config

    args = (["C", "H", "O"], tmp_path / "t.xyz", tmp_path / "v.xyz", NEQUIP_MDSIM, 10, "00:01:00:00")
    assert nequip_config(*args)["trainer"]["accelerator"] == "cpu"
    assert nequip_config(*args, device="cuda")["trainer"]["accelerator"] == "gpu"
    with pytest.raises(ValueError, match="device must be one of"):
        nequip_config(*args, device="tpu")


@pytest.fixture
def small_checkpoint(tmp_path):
    from forcefield_et import build_model, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path / "small.pt"
    save_checkpoint(path, build_model(hidden_channels=32, num_layers=2, num_heads=4, num_rbf=16))
    return path


def _die_on_run_call(monkeypatch, call: int) -> None:
    """Make ``forcefield_et.md.make_dynamics`` return dynamics whose ``call``-th ``run`` (counted
    per dynamics object) raises KeyboardInterrupt, as a killed job would; undo with monkeypatch.undo()."""
    import forcefield_et.md as fmd

    original = fmd.make_dynamics

    def dying_dynamics(*args, **kwargs):
        dynamics = original(*args, **kwargs)
        run, calls = dynamics.run, []

        def run_or_die(steps):
            calls.append(steps)
            if len(calls) == call:
                raise KeyboardInterrupt
            return run(steps)

        dynamics.run = run_or_die
        return dynamics

    monkeypatch.setattr(fmd, "make_dynamics", dying_dynamics)


def test_killed_run_resumes_exactly(tmp_path, small_checkpoint, monkeypatch):
    shared_path("rmd17", "rmd17_ethanol_test_01.npz")

    # A random model is unstable at 500 K: test the bookkeeping at 100 K with a loose threshold.
    protocol = ms.Protocol(time_ps=0.06, save_every=20, temperature_K=100.0, collapse_threshold_A=100.0)
    reference = ms.load_reference("ethanol", protocol)
    spec = ms.resolve_model("small", "ethanol", {"small": small_checkpoint})
    straight = ms.run_one(spec, reference, protocol, tmp_path / "a", checkpoint_every=1, quiet=True)

    _die_on_run_call(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        ms.run_one(spec, reference, protocol, tmp_path / "b", checkpoint_every=1, quiet=True)
    monkeypatch.undo()
    resumed = ms.run_one(spec, reference, protocol, tmp_path / "b", checkpoint_every=1, quiet=True)
    assert resumed["resume"] == "resumed at step 40"
    a = np.load(tmp_path / "a" / "trajectory.npz")["positions"]
    b = np.load(tmp_path / "b" / "trajectory.npz")["positions"]
    assert a.shape == b.shape == (7, 9, 3)
    np.testing.assert_array_equal(a, b)
    assert resumed["hr_mae"] == straight["hr_mae"]


def test_a_run_under_way_in_another_process_is_refused_and_left_untouched(tmp_path, small_checkpoint):
    from forcefield_et.files import DirectoryBusyError
    from tests.test_files import LockHolder

    shared_path("rmd17", "rmd17_ethanol_test_01.npz")
    protocol = ms.Protocol(time_ps=0.01, save_every=10, temperature_K=100.0, collapse_threshold_A=100.0)
    reference = ms.load_reference("ethanol", protocol)
    spec = ms.resolve_model("small", "ethanol", {"small": small_checkpoint})
    run, work = tmp_path / "run", tmp_path / "work"
    with LockHolder(work):
        with pytest.raises(DirectoryBusyError, match="MD-stability run folder"):
            ms.run_one(spec, reference, protocol, run, work_dir=work, quiet=True)
        assert not run.exists() and sorted(p.name for p in work.iterdir()) == [".lock"]
        # a caller that holds the lock itself (benchmarks.peers) runs with lock=False
        result = ms.run_one(spec, reference, protocol, run, work_dir=work, quiet=True, lock=False)
    assert result["steps"] == protocol.n_steps and (run / "result.json").is_file()
    assert ms.run_one(spec, reference, protocol, run, work_dir=work, quiet=True) == result  # free again: reused


def test_a_collapsed_run_records_its_bonds_and_an_older_result_gains_them(tmp_path, small_checkpoint):
    shared_path("rmd17", "rmd17_ethanol_test_01.npz")
    # a threshold 1 mÅ above the start frame's own deviation collapses at the first saved frame
    reference = ms.load_reference("ethanol", ms.Protocol())
    start = float(max_bond_deviation(reference.frames[0], reference.bonds, reference.bond_reference))
    threshold = start + 0.001
    protocol = ms.Protocol(time_ps=0.03, save_every=20, temperature_K=100.0, collapse_threshold_A=threshold)
    spec = ms.resolve_model("small", "ethanol", {"small": small_checkpoint})
    result = ms.run_one(spec, reference, protocol, tmp_path, quiet=True)
    assert result["collapsed"] and result["collapse_frame"] == 1
    frame = np.load(tmp_path / "trajectory.npz")["positions"][1]
    expected = bond_changes(reference.numbers, frame, reference.bonds, reference.bond_reference, threshold)
    assert result["collapse_bonds"] == expected and expected["stretched"]

    stored = json.loads((tmp_path / "result.json").read_text())
    del stored["collapse_bonds"]  # as written before the field existed
    (tmp_path / "result.json").write_text(json.dumps(stored))
    ms.add_missing_collapse_bonds(stored, reference, protocol)
    assert stored["collapse_bonds"] == expected
    assert json.loads((tmp_path / "result.json").read_text()) == result


def test_a_run_with_another_model_file_sets_the_old_run_aside(tmp_path, small_checkpoint):
    from forcefield_et import build_model, save_checkpoint

    shared_path("rmd17", "rmd17_ethanol_test_01.npz")
    protocol = ms.Protocol(time_ps=0.02, save_every=20, temperature_K=100.0, collapse_threshold_A=100.0)
    reference = ms.load_reference("ethanol", protocol)
    run_dir, work_dir = tmp_path / "runs" / "ethanol__small", tmp_path / "work" / "ethanol__small"
    first = ms.run_one(ms.resolve_model("small", "ethanol", {"small": small_checkpoint}), reference, protocol,
                       run_dir, quiet=True, work_dir=work_dir)
    torch.manual_seed(1)  # the same name, other weights: a different model file
    save_checkpoint(small_checkpoint, build_model(hidden_channels=32, num_layers=2, num_heads=4, num_rbf=16))
    second = ms.run_one(ms.resolve_model("small", "ethanol", {"small": small_checkpoint}), reference, protocol,
                        run_dir, quiet=True, work_dir=work_dir)
    assert second["fingerprint"] != first["fingerprint"] and second["resume"] == "fresh start"
    # the old result moves into superseded.json beside the new one; its state and trajectory into the work folder
    assert json.loads((run_dir / "superseded.json").read_text()) == [first]
    assert {p.name for p in run_dir.iterdir()} == {"result.json", "superseded.json"}
    kept = work_dir / "superseded" / first["fingerprint"][:12]
    assert {p.name for p in kept.iterdir()} == {"state.npz", "trajectory.npz"}
    [found] = ms.collect_previous_runs(tmp_path, protocol, [], tmp_path / "work")
    assert found["fingerprint"] == second["fingerprint"]
    entry = ms.summary_entry(found)
    assert [r["stability_ps"] for r in entry["superseded"]] == [first["stability_ps"]]
    assert "hr" not in entry and "hr" not in entry["superseded"][0] and "fingerprint" not in entry


def test_results_and_work_folders(tmp_path):
    results = ms.RESULTS_DIR
    assert ms.default_work_dir(results / "md_stability") == ms.WORK_ROOT / "md_stability"
    assert ms.default_work_dir(results / "ablation") == ms.REPO_ROOT / "runs" / "ablation"
    assert ms.default_work_dir(tmp_path / "out") == tmp_path / "out" / "work"


def test_the_report_needs_only_the_result_folders(tmp_path, small_checkpoint):
    """States and trajectories go to the work folder; without it the report rebuilds the same
    summary and h(r) plots from the results alone."""
    shared_path("rmd17", "rmd17_ethanol_test_01.npz")
    out, work = tmp_path / "out", tmp_path / "work"
    common = ["--model-path", f"small={small_checkpoint}", "--models", "small", "--out", str(out), "--quiet",
              "--save-every", "10", "--work", str(work)]
    assert ms.main(["--molecules", "ethanol", "--time-ps", "0.02", *common]) == 0
    run_dir = out / "runs" / "ethanol__small"
    assert {p.name for p in run_dir.iterdir()} == {"result.json"}
    assert {p.name for p in (work / "ethanol__small").iterdir()} == {".lock", "state.npz", "trajectory.npz"}
    result = json.loads((run_dir / "result.json").read_text())
    trajectory = np.load(work / "ethanol__small" / "trajectory.npz")["positions"]
    np.testing.assert_array_equal(result["hr"], ms.distance_histogram(trajectory))
    before = json.loads((out / "md_stability.json").read_text())
    for path in (work / "ethanol__small").iterdir():
        path.unlink()
    (out / "hr_ethanol.png").unlink()
    assert ms.main(["--report", *common]) == 0
    after = json.loads((out / "md_stability.json").read_text())
    assert after["runs"] == before["runs"] and "hr" not in after["runs"][0]
    assert (out / "hr_ethanol.png").stat().st_size > 1000


def test_the_summary_covers_earlier_runs_of_other_lengths(tmp_path, small_checkpoint):
    shared_path("rmd17", "rmd17_ethanol_test_01.npz")
    common = ["--model-path", f"small={small_checkpoint}", "--models", "small", "--out", str(tmp_path), "--quiet",
              "--save-every", "10"]
    assert ms.main(["--molecules", "ethanol", "--time-ps", "0.01", *common]) == 0
    assert ms.main(["--molecules", "aspirin", "--time-ps", "0.02", *common]) == 0
    summary = json.loads((tmp_path / "md_stability.json").read_text())
    assert summary["protocol"]["time_ps"] == 0.02
    assert sorted(r["molecule"] for r in summary["runs"]) == ["aspirin", "ethanol"]
    # a different trajectory setting is another protocol and stays out
    assert ms.main(["--molecules", "aspirin", "--time-ps", "0.02", "--seed", "1", "--restart", *common]) == 0
    runs = json.loads((tmp_path / "md_stability.json").read_text())["runs"]
    assert [r["molecule"] for r in runs] == ["aspirin"]


def test_report_rebuilds_the_summary_without_running_anything(tmp_path, small_checkpoint):
    shared_path("rmd17", "rmd17_ethanol_test_01.npz")
    common = ["--model-path", f"small={small_checkpoint}", "--models", "small", "--out", str(tmp_path), "--quiet",
              "--save-every", "10"]
    assert ms.main(["--molecules", "ethanol", "--time-ps", "0.01", *common]) == 0
    result = tmp_path / "runs" / "ethanol__small" / "result.json"
    stamp = result.stat().st_mtime_ns
    (tmp_path / "md_stability.json").unlink()
    assert ms.main(["--report", *common]) == 0
    summary = json.loads((tmp_path / "md_stability.json").read_text())
    assert summary["mode"] == "report"
    assert [(r["molecule"], r["model"]) for r in summary["runs"]] == [("ethanol", "small")]
    assert result.stat().st_mtime_ns == stamp and not (tmp_path / "runs" / "aspirin__small").exists()
    # a second report of the same runs leaves the summary alone (its mode, machine and wall time aside,
    # nothing would change)
    summary_path = tmp_path / "md_stability.json"
    summary["machine"] = {"cpu": "another machine"}
    summary_path.write_text(json.dumps(summary))
    assert ms.main(["--report", *common]) == 0
    assert json.loads(summary_path.read_text())["machine"] == {"cpu": "another machine"}


def test_a_finished_run_extends_to_a_longer_time_exactly(tmp_path, small_checkpoint):
    shared_path("rmd17", "rmd17_ethanol_test_01.npz")
    settings = {"save_every": 20, "temperature_K": 100.0, "collapse_threshold_A": 100.0}
    long, short = ms.Protocol(time_ps=0.06, **settings), ms.Protocol(time_ps=0.03, **settings)
    reference = ms.load_reference("ethanol", long)
    spec = ms.resolve_model("small", "ethanol", {"small": small_checkpoint})
    straight = ms.run_one(spec, reference, long, tmp_path / "a", checkpoint_every=1, quiet=True)
    first = ms.run_one(spec, reference, short, tmp_path / "b", checkpoint_every=1, quiet=True)
    assert first["steps"] == 60 and not first["collapsed"]
    extended = ms.run_one(spec, reference, long, tmp_path / "b", checkpoint_every=1, quiet=True)
    assert extended["resume"] == "resumed at step 60" and extended["steps"] == straight["steps"] == 120
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "trajectory.npz")["positions"],
                                  np.load(tmp_path / "b" / "trajectory.npz")["positions"])
    assert extended["hr_mae"] == straight["hr_mae"]
    # the longer run is reused as it is; a shorter request than the stored state is refused
    assert ms.run_one(spec, reference, long, tmp_path / "b", quiet=True)["resume"] == "resumed at step 60"
    for stored in ("result.json", "state.npz"):  # either file alone refuses it, and neither is lost
        with pytest.raises(ValueError, match="--time-ps"):
            ms.run_one(spec, reference, short, tmp_path / "b", quiet=True)
        assert (tmp_path / "b" / stored).is_file()
        (tmp_path / "b" / stored).rename(tmp_path / stored)


def test_a_stopped_extension_keeps_the_finished_result_and_the_summary_marks_it(tmp_path, small_checkpoint,
                                                                               monkeypatch):
    shared_path("rmd17", "rmd17_ethanol_test_01.npz")

    settings = {"save_every": 20, "temperature_K": 100.0, "collapse_threshold_A": 100.0}
    long, short = ms.Protocol(time_ps=0.06, **settings), ms.Protocol(time_ps=0.03, **settings)
    reference = ms.load_reference("ethanol", long)
    spec = ms.resolve_model("small", "ethanol", {"small": small_checkpoint})
    ms.run_one(spec, reference, short, tmp_path / "runs" / "ethanol__small", checkpoint_every=1, quiet=True)
    _die_on_run_call(monkeypatch, 2)  # one saved frame (20 steps) beyond the finished 60
    with pytest.raises(KeyboardInterrupt):
        ms.run_one(spec, reference, long, tmp_path / "runs" / "ethanol__small", checkpoint_every=1, quiet=True)
    kept = json.loads((tmp_path / "runs" / "ethanol__small" / "result.json").read_text())
    assert kept["steps"] == 60
    [found] = ms.collect_previous_runs(tmp_path, long, [])
    assert found["extension_reached_ps"] == pytest.approx(0.04)
    assert "(continued to 0.04 ps without collapse; other columns over the first " in ms.table([found])


def test_quick_end_to_end(tmp_path, small_checkpoint):
    shared_path("rmd17", "rmd17_aspirin_test_01.npz")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "benchmarks.md_stability", "--quick", "--model-path",
               f"small={small_checkpoint}", "--models", "small", "--time-ps", "0.05", "--out", str(out), "--quiet"]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "md_stability.json").read_text())
    assert summary["protocol"]["n_steps"] == 100 and summary["protocol"]["hr_bins"] == 500
    assert "cpu" in summary["machine"]
    runs = {r["molecule"]: r for r in summary["runs"]}
    assert set(runs) == {"aspirin", "ethanol"}
    for run in runs.values():
        assert run["model"] == "small" and run["steps_per_s"] > 0 and run["ns_per_day"] > 0
        assert 0 < run["stability_ps"] <= 0.05 and isinstance(run["collapsed"], bool)
        assert run["hr_mae"] >= 0 and run["n_bonds"] > 0
    for name in ("stability.png", "speed.png", "hr_aspirin.png", "hr_ethanol.png"):
        assert (out / name).stat().st_size > 1000
    assert Path(runs["aspirin"]["run_dir"], "result.json").is_file()
    rows = [line for line in (out / "md_stability.md").read_text().splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[:2] for row in rows[1:]] == [["| aspirin", "small"], ["| ethanol", "small"]]


def test_table_marks_collapse_and_gives_both_hr_scales():
    run = {"molecule": "ethanol", "model": "et", "stability_ps": 1.5, "simulated_ps": 1.5, "collapsed": True,
           "hr_mae": 3.05e-4, "hr_mae_mdsim": 0.1525, "mean_temperature_K": 501.2, "steps_per_s": 62.7,
           "ns_per_day": 2.71}
    lines = ms.table([run]).splitlines()
    assert lines[2] == "| ethanol | et | 1.50 of 1.50 (collapsed) | 3.05 | 0.152 | 501 | 62.7 | 2.71 |"
    run["collapse_bonds"] = {"stretched": [{"atoms": [3, 10], "bond": "O3-H10", "length_A": 1.52, "reference_A": 1.01}],
                             "formed": [{"atoms": [8, 10], "bond": "O8-H10", "length_A": 1.03}]}
    assert ms.table([run]).splitlines()[2].startswith(
        "| ethanol | et | 1.50 of 1.50 (collapsed: O3-H10 1.52 Å (ref 1.01); formed O8-H10 1.03 Å) |")

"""One round of committee-driven frame selection on rMD17 aspirin, against random frames.

    python -m benchmarks.selection_demo                      # resumable; about 1.7 CPU-hours at most
    python -m benchmarks.selection_demo --budget-hours 0.5 --md-ps 50   # larger budgets extend the runs
    python -m benchmarks.selection_demo --quick              # CI: tiny budgets, 10 test frames, 0.05 ps of MD

Protocol:

1. Frames: the start set is frames 0-24 of the rMD17 aspirin ``train_01`` split (the split is itself
   a random draw of the trajectory, so these are 25 random frames); the pool is frames 25-949 of the
   same split, their labels unused until chosen; frames 950-999 validate every run. The ``test_01``
   split is used for testing and as the MD start only.
2. Every committee is a heads committee (4 heads, ``forcefield-et finetune --committee 4
   --committee-kind heads``) fine-tuned from ``pretrained`` with the converged recipe of
   ``benchmarks.finetune_converged``: batch 8, energy + force loss (force weight 10), AdamW 5e-4 after
   100 warm-up steps, halved after 3 validations without improvement (floor 1e-6), EMA 0.99,
   validation every 100 steps; a run stops after 10 validations without a new best or when it has
   used ``--budget-hours`` CPU-hours (default 0.25), and keeps its best EMA weights by validation loss.
3. The start committee (25 start frames) chooses 25 pool frames with ``forcefield-et select --n 25
   --min-distance 0.05`` (largest per-atom force std first, skipping frames within 0.05 Å RMS
   interatomic distance of one already taken), from the pool's positions only; 25 more pool frames
   are drawn uniformly at random (seed 0).
4. Two 50-frame committees, start + selected and start + random, trained as in 2 (from
   ``pretrained``, the same recipe and budget as the start committee).
5. Test: force MAE of the committee mean on every ``--test-stride``-th frame of ``test_01``
   (default 1: all 1000 frames).
6. MD stability of both 50-frame committees under the protocol of ``benchmarks.md_stability``
   (MDsim: ``test_01`` frame 0, 500 K Nosé-Hoover chain, 0.5 fs, positions saved every 0.05 ps,
   collapse when a bond leaves its reference length by more than 0.5 Å), driven by the committee
   mean (eager), for at most ``--md-ps`` ps (default 20): simulated time, collapse and its time,
   and the largest per-atom force std of the committee over the saved frames (up to the collapse).

Trainings live in ``runs/selection_demo/<committee>/`` and the MD states in
``runs/selection_demo/md/<committee>/``; a rerun reuses finished trainings, the selection and
finished MD runs, resumes the others, and extends them when given a larger budget or ``--md-ps``.
CPU at the defaults: three trainings of at most 0.25 CPU-hours each, and two MD runs of 20 ps
(40,000 steps of an eager 4-head committee, about 0.45 CPU-hours each on one core).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch

from forcefield_et.checkpoint import read_checkpoint
from forcefield_et.data import ConformationSet, read_rmd17
from forcefield_et.registry import load_committee
from forcefield_et.training.committee import train_head_committee

from .finetune_converged import VALID, recipe_config
from .io import write_json_atomic
from .machine import machine_info
from .md_stability import ModelSpec, Protocol, describe_et, load_reference, run_one
from .paths import DATA_ROOT, REPO, rmd17_file
from .uncertainty import frame_reduce, predict_committee

RESULTS_DIR = Path(__file__).resolve().parent / "results" / "selection_demo"
RUNS_DIR = REPO / "runs" / "selection_demo"
MOLECULE = "aspirin"
N_START, N_ADD, POOL_STOP = 25, 25, 950
BUDGET_HOURS = 0.25
MD_PS = 20.0
QUICK = {"budget_s": 3.0, "valid_frames": "990:1000", "pool": 50, "test_stride": 100, "md_ps": 0.05}
ARMS = ("selected_50", "random_50")


def write_subset(source: Path, indices: np.ndarray, path: Path) -> None:
    """An rMD17-format npz holding ``indices`` of ``source`` (a train split file)."""
    data = np.load(source)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: data[k][indices] for k in ("coords", "energies", "forces", "old_indices")}
    np.savez(path, nuclear_charges=data["nuclear_charges"], **arrays)


def fit(runs: Path, name: str, train_file: Path, indices: List[int], heads: int, optim: Dict[str, Any],
        valid_frames: str = VALID) -> Dict[str, Any]:
    """Train (or resume, or reuse) the heads committee ``runs/<name>`` on frames ``indices`` of the train
    split with the converged recipe (``optim``: the entries replacing the recipe's, e.g. the budget);
    returns its training summary (also kept as ``done.json`` in the run folder)."""
    run_dir, indices = runs / name, [int(i) for i in indices]
    frames_path, done_path = run_dir / "frames.json", run_dir / "done.json"
    if frames_path.is_file() and json.loads(frames_path.read_text())["train_indices"] != indices:
        raise SystemExit(f"benchmarks.selection_demo: {run_dir} was trained on other frames (the start committee "
                         "has changed since); remove it to train it again")
    budget = optim["time_budget_s"]
    if done_path.is_file():
        done = json.loads(done_path.read_text())
        if done["time_budget_s"] >= budget or not done["stop_reason"].startswith("time budget"):
            return done
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(frames_path, {"train_indices": indices})
    subset = runs / "data" / f"{name}.npz"
    write_subset(train_file, np.array(indices), subset)
    source = {"name": MOLECULE, "format": "rmd17", "path": str(subset), "objective": "energy_forces",
              "valid_path": str(train_file), "valid_frames": valid_frames}
    train_head_committee(recipe_config(run_dir, [source], len(indices), "pretrained", optim), heads, progress=False)
    state = read_checkpoint(run_dir / "last.pt").get("training_state") or {}
    meta = read_checkpoint(run_dir / "best.pt")["metadata"]
    done = {
        "committee": name, "train_frames": len(indices), "heads": heads, "steps": int(state.get("step", -1)),
        "best_step": meta["training"]["step"], "stop_reason": state.get("stop_reason") or "max_steps",
        "cpu_s": float(state.get("cpu_seconds", float("nan"))), "time_budget_s": budget,
        "valid_force_mae_meV_A": (meta.get("validation") or {}).get(f"{MOLECULE}/force_mae_meV_A"),
    }
    write_json_atomic(done_path, done)
    return done


def select_with_cli(committee_dir: Path, train_file: Path, pool: np.ndarray, n: int, work: Path) -> List[int]:
    """Run ``forcefield-et select`` on the pool's positions (no labels); returns pool frame indices
    of the train split in the order chosen."""
    from ase import Atoms
    from ase.io import read, write

    from forcefield_et.cli import main as cli_main

    data = np.load(train_file)
    pool_file, chosen_file = work / "pool_positions.extxyz", work / "chosen.extxyz"
    write(str(pool_file), [Atoms(numbers=data["nuclear_charges"], positions=data["coords"][i]) for i in pool],
          format="extxyz")
    status = cli_main(["select", "--model", str(committee_dir), "--data", str(pool_file), "--n", str(n),
                       "--min-distance", "0.05", "--out", str(chosen_file), "--overwrite"])
    if status:
        raise RuntimeError(f"forcefield-et select exited with status {status}")
    return [int(pool[a.info["source_index"]]) for a in read(str(chosen_file), index=":")]


def select(runs: Path, start_dir: Path, train_file: Path, pool: np.ndarray) -> Dict[str, Any]:
    """The start committee's choice of ``N_ADD`` pool frames, kept in ``runs/selection.json`` for the
    start committee's weights it was made with (a rerun reuses it)."""
    path, weights = runs / "selection.json", hashlib.sha256((start_dir / "best.pt").read_bytes()).hexdigest()
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored["start_weights_sha256"] == weights and stored["pool_frames"] == len(pool):
            return stored
    t = time.process_time()
    selected = select_with_cli(start_dir, train_file, pool, N_ADD, runs)
    stored = {"selected_train_indices": selected, "start_weights_sha256": weights, "pool_frames": len(pool),
              "cpu_s": time.process_time() - t}
    write_json_atomic(path, stored)
    return stored


def test_errors(committee_dir: Path, test: ConformationSet) -> Dict[str, Any]:
    committee = load_committee(committee_dir, dtype="float32")
    start = time.process_time()
    pred = predict_committee(committee, test)
    member_mae = [1000 * float(np.mean(np.abs(f - test.forces))) for f in pred["member_forces"]]
    return {
        "force_mae_meV_A": 1000 * float(np.mean(np.abs(pred["forces"] - test.forces))),
        "energy_mae_meV": 1000 * float(np.mean(np.abs(pred["energy"] - test.energy))),
        "member_force_mae_meV_A": member_mae,
        "median_frame_max_force_std_meV_A": 1000 * float(np.median(frame_reduce(pred["forces_std"],
                                                                                  test.n_atoms, "max"))),
        "evaluation_cpu_s": time.process_time() - start,
    }


def md_stability(committee_dir: Path, name: str, md_dir: Path, md_ps: float, quiet: bool,
                 data_root: Path = DATA_ROOT) -> Dict[str, Any]:
    """Run (or resume, or reuse) the MDsim protocol of ``benchmarks.md_stability`` driven by the
    committee's mean for at most ``md_ps`` ps; the run's summary with the committee's largest per-atom
    force std over the saved frames up to the collapse (or the end)."""
    protocol = Protocol(time_ps=md_ps, compile=False)  # a heads committee is evaluated eagerly
    reference = load_reference(MOLECULE, protocol, data_root)
    checkpoint = committee_dir / "best.pt"  # the heads checkpoint is the committee (committee.json names it)
    spec = ModelSpec(name, "et", checkpoint, f"{name}: heads committee; " + describe_et(checkpoint))
    result = run_one(spec, reference, protocol, md_dir / name, quiet=quiet)
    with np.load(md_dir / name / "trajectory.npz") as saved:
        positions, times = saved["positions"], saved["time_ps"]
    last = result["collapse_frame"] if result["collapsed"] else len(positions) - 1
    keep = [i for i in range(last + 1) if np.isfinite(positions[i]).all()]
    n_atoms = len(reference.numbers)
    frames = ConformationSet(z=np.tile(reference.numbers, len(keep)).astype(np.int64),
                             pos=positions[keep].reshape(-1, 3).astype(np.float64),
                             n_atoms=np.full(len(keep), n_atoms, dtype=np.int64))
    start = time.process_time()
    frame_max = frame_reduce(predict_committee(load_committee(committee_dir), frames)["forces_std"],
                             frames.n_atoms, "max")
    return {
        "simulated_ps": result["simulated_ps"], "collapsed": result["collapsed"],
        "collapse_time_ps": result["stability_ps"] if result["collapsed"] else None,
        "collapse_reason": result["collapse_reason"], "stopped_by": result["stopped_by"],
        "max_bond_deviation_A": result["max_bond_deviation_A"], "hr_mae_mdsim": result["hr_mae_mdsim"],
        "max_force_std_meV_A": 1000 * float(frame_max.max()),
        "max_force_std_time_ps": float(times[keep][int(np.argmax(frame_max))]),
        "median_frame_max_force_std_meV_A": 1000 * float(np.median(frame_max)),
        "std_frames": len(keep), "std_cpu_s": time.process_time() - start,
        "steps_per_s": result["steps_per_s"], "md_cpu_s": result["md_cpu_s"], "start_frame": result["start_frame"],
        "protocol_key": result["protocol_key"],
    }


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--budget-hours", type=float, default=BUDGET_HOURS,
                        help=f"CPU-hours of each committee's training at most (default {BUDGET_HOURS:g}); "
                        "early stopping may end it sooner")
    parser.add_argument("--md-ps", type=float, default=MD_PS, help=f"MD of each 50-frame committee, ps at most "
                        f"(default {MD_PS:g})")
    parser.add_argument("--test-stride", type=int, default=1, help="every k-th test_01 frame (1: all 1000)")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default benchmarks/results/selection_demo; --quick: "
                        "runs/selection_demo_quick)")
    parser.add_argument("--runs", type=Path, default=None,
                        help="trainings and MD states (default runs/selection_demo for the default --out, else "
                        "<out>/runs)")
    parser.add_argument("--stage", choices=["all", "start", "random"], default="all",
                        help="'start': train the 25-frame committee only; 'random': the 50-frame committee on "
                        "random frames only (it does not need the selection, so it can train alongside)")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK['budget_s']:g} CPU-s per training, a pool of {QUICK['pool']} frames, 10 test "
                        f"frames, {QUICK['md_ps']:g} ps of MD (CI)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = args.out or (REPO / "runs" / "selection_demo_quick" if args.quick else RESULTS_DIR)
    runs = args.runs or (RUNS_DIR if out.resolve() == RESULTS_DIR.resolve() else out / "runs")
    optim: Dict[str, Any] = {"time_budget_s": 3600 * args.budget_hours}
    valid_frames, pool_stop = VALID, POOL_STOP
    if args.quick:
        args.test_stride, args.md_ps = QUICK["test_stride"], QUICK["md_ps"]
        optim = {"time_budget_s": QUICK["budget_s"], "valid_every": 4, "warmup_steps": 2}
        valid_frames, pool_stop = QUICK["valid_frames"], N_START + QUICK["pool"]
    train_file = rmd17_file(MOLECULE, "train", args.data_root)
    test_file = rmd17_file(MOLECULE, "test", args.data_root)
    if not train_file.is_file():
        raise SystemExit(f"benchmarks.selection_demo: rMD17 not found under {args.data_root}")
    start_idx = list(range(N_START))
    pool = np.arange(N_START, pool_stop)
    rng = np.random.default_rng(0)
    random_pick = sorted(int(i) for i in rng.choice(pool, N_ADD, replace=False))

    def train_on(name: str, indices: List[int]) -> Dict[str, Any]:
        return fit(runs, name, train_file, indices, args.heads, optim, valid_frames)

    if args.stage == "random":
        train_on("random_50", start_idx + random_pick)
        return
    training = {"start_25": train_on("start_25", start_idx)}
    if args.stage == "start":
        return
    start_dir = runs / "start_25"
    selection = select(runs, start_dir, train_file, pool)
    selected = selection["selected_train_indices"]
    training["selected_50"] = train_on("selected_50", start_idx + selected)
    training["random_50"] = train_on("random_50", start_idx + random_pick)

    test = read_rmd17(test_file)
    test = test.subset(np.arange(0, len(test), args.test_stride))
    results = {name: test_errors(runs / name, test) for name in training}
    md = {name: md_stability(runs / name, name, runs / "md", args.md_ps, args.quick, args.data_root) for name in ARMS}

    # the start committee's spread and actual error on the chosen and the random frames (labels read
    # only for this report)
    train = read_rmd17(train_file)
    start_committee = load_committee(start_dir, dtype="float32")

    def on_added(indices: List[int]) -> Dict[str, Any]:
        part = train.subset(np.array(indices))
        pred = predict_committee(start_committee, part)
        std = frame_reduce(pred["forces_std"], part.n_atoms, "max")
        error = frame_reduce(np.linalg.norm(pred["forces"] - part.forces, axis=1), part.n_atoms, "max")
        return {"frame_max_std_meV_A": (1000 * std).tolist(),
                "median_frame_max_std_meV_A": 1000 * float(np.median(std)),
                "median_frame_max_error_meV_A": 1000 * float(np.median(error))}

    command = "python -m benchmarks.selection_demo" + (" --quick" if args.quick else "")
    summary = {
        "benchmark": "selection_demo",
        "protocol": __doc__.split("Protocol:")[1].split("Trainings live")[0].strip(),
        "molecule": MOLECULE, "heads": args.heads, "budget_cpu_hours": optim["time_budget_s"] / 3600,
        "md_ps": args.md_ps, "test_stride": args.test_stride, "test_frames": len(test), "pool_frames": len(pool),
        "selected_train_indices": selected, "random_train_indices": random_pick,
        "start_committee_on_added_frames": {"selected": on_added(selected), "random": on_added(random_pick)},
        "training": training, "test": results, "md": md,
        "cpu_s": {"select": selection["cpu_s"], **{f"train_{k}": v["cpu_s"] for k, v in training.items()},
                  **{f"md_{k}": v["md_cpu_s"] for k, v in md.items()}},
        "machine": machine_info(), "command": command,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "selection_demo.json", summary)
    plot(summary, out / "selection_demo.png")
    for name, r in results.items():
        line = f"{name}: test force MAE {r['force_mae_meV_A']:.1f} meV/Å on {len(test)} frames"
        if name in md:
            m = md[name]
            collapse = f"collapsed at {m['collapse_time_ps']:g} ps" if m["collapsed"] else "no collapse"
            line += f"; MD {m['simulated_ps']:g} ps, {collapse}, largest force std {m['max_force_std_meV_A']:.0f} meV/Å"
        print(line, flush=True)


def plot(summary: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_m, ax_md, ax_s) = plt.subplots(1, 3, figsize=(14, 4))
    names = ["start_25", "random_50", "selected_50"]
    labels = ["25 start frames", "+25 random", "+25 selected"]
    values = [summary["test"][n]["force_mae_meV_A"] for n in names]
    ax_m.bar(labels, values, color=["0.6", "C0", "C1"])
    for x, v in enumerate(values):
        ax_m.text(x, v, f"{v:.1f}", ha="center", va="bottom")
    ax_m.set_ylabel("test force MAE, committee mean (meV/Å)")
    ax_m.set_title(f"rMD17 aspirin, {summary['test_frames']} test frames")
    md = [summary["md"][n] for n in names[1:]]
    ax_md.bar(labels[1:], [m["collapse_time_ps"] if m["collapsed"] else m["simulated_ps"] for m in md],
              color=["C0", "C1"])
    for x, m in enumerate(md):
        text = (f"collapsed at {m['collapse_time_ps']:g} ps" if m["collapsed"]
                else f"stable for {m['simulated_ps']:g} ps")
        ax_md.text(x, 0, text, ha="center", va="bottom", fontsize=8)
    ax_md.set_ylabel("ps without collapse (500 K)")
    ax_md.set_title(f"MD stability, at most {summary['md_ps']:g} ps")
    added = summary["start_committee_on_added_frames"]
    chosen = np.array(added["selected"]["frame_max_std_meV_A"])
    random = np.array(added["random"]["frame_max_std_meV_A"])
    bins = np.linspace(0, max(chosen.max(), random.max()), 25)
    ax_s.hist(random, bins=bins, alpha=0.6, label="25 random pool frames", color="C0")
    ax_s.hist(chosen, bins=bins, alpha=0.6, label="25 selected pool frames", color="C1")
    ax_s.set_xlabel("largest per-atom force std of the 25-frame committee (meV/Å)")
    ax_s.set_ylabel("frames")
    ax_s.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()

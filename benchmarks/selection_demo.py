"""One round of committee-driven frame selection on rMD17 aspirin, against random frames.

    python -m benchmarks.selection_demo                      # resumable; about 5 CPU-minutes
    python -m benchmarks.selection_demo --quick              # CI: a few steps, 10 test frames

Protocol (sized for a small shared CPU):

1. Start: frames 0-24 of the rMD17 aspirin ``train_01`` split (the split is itself a random draw
   of the trajectory, so these are 25 random frames). Pool: frames 25-949 of the same split, their
   labels unused until chosen. Validation: frames 950-999 (the same for every run).
2. Fine-tune a heads committee (``forcefield-et finetune --committee 4 --committee-kind heads``
   recipe: 4 heads, from ``pretrained``, batch 8, energy + force loss, AdamW 5e-4 with warm-up and
   cosine decay, EMA 0.99, seed 0) on the 25 start frames, ``--steps`` steps (default 300).
3. Choose 25 pool frames with ``forcefield-et select --n 25 --min-distance 0.05`` (largest per-atom
   force std first, skipping frames within 0.05 Å RMS interatomic distance of one already taken),
   from an extxyz file of the pool's positions only; and 25 pool frames uniformly at random (seed 0).
4. Fine-tune the same recipe from ``pretrained`` with ``--steps-added`` steps (default 100), the same
   for both, on start + selected and on start + random frames.
5. Test: force MAE of the committee mean (and energy MAE) on every ``--test-stride``-th frame of the
   ``test_01`` split.

Writes ``selection_demo.json`` and ``selection_demo.png`` to ``benchmarks/results/selection_demo/``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch

from forcefield_et.data import read_rmd17
from forcefield_et.registry import load_committee
from forcefield_et.training.committee import train_head_committee

from .io import write_json_atomic
from .machine import machine_info
from .uncertainty import DATA_ROOT, fine_tuning_config, frame_reduce, predict_committee, training_cpu_seconds

RESULTS_DIR = Path(__file__).resolve().parent / "results" / "selection_demo"
MOLECULE = "aspirin"
N_START, N_ADD, POOL_STOP, VALID_START = 25, 25, 950, 950


def write_subset(source: Path, indices: np.ndarray, path: Path) -> None:
    """An rMD17-format npz holding ``indices`` of ``source`` (a train split file)."""
    data = np.load(source)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: data[k][indices] for k in ("coords", "energies", "forces", "old_indices")}
    np.savez(path, nuclear_charges=data["nuclear_charges"], **arrays)


def run_config(run_dir: Path, train_file: Path, valid_file: Path, steps: int) -> Any:
    source = {"name": MOLECULE, "format": "rmd17", "path": str(train_file), "objective": "energy_forces",
              "valid_path": str(valid_file), "valid_frames": f"{VALID_START}:1000"}
    return fine_tuning_config(run_dir, source, steps)


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


def test_errors(committee_dir: Path, test) -> Dict[str, Any]:
    committee = load_committee(committee_dir, dtype="float32")
    start = time.process_time()
    pred = predict_committee(committee, test)
    member_mae = [1000 * float(np.mean(np.abs(f - test.forces))) for f in pred["member_forces"]]
    return {
        "force_mae_meV_A": 1000 * float(np.mean(np.abs(pred["forces"] - test.forces))),
        "member_force_mae_meV_A": member_mae,
        "median_frame_max_force_std_meV_A": 1000 * float(np.median(frame_reduce(pred["forces_std"],
                                                                                  test.n_atoms, "max"))),
        "evaluation_cpu_s": time.process_time() - start,
    }


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--steps", type=int, default=300, help="training steps of the 25-frame committee")
    parser.add_argument("--steps-added", type=int, default=100,
                        help="training steps of each 50-frame committee (the same for both)")
    parser.add_argument("--test-stride", type=int, default=20, help="every k-th test_01 frame (20: 50 frames)")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--stage", choices=["all", "start", "random"], default="all",
                        help="'start': train the 25-frame committee only; 'random': the 50-frame committee on "
                        "random frames only (it does not need the selection, so it can train alongside)")
    parser.add_argument("--quick", action="store_true", help="4 steps, a pool of 50 frames, 10 test frames (CI)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.quick:
        args.steps, args.steps_added, args.test_stride = 4, 4, 100
    train_file = args.data_root / "rmd17" / f"rmd17_{MOLECULE}_train_01.npz"
    test_file = args.data_root / "rmd17" / f"rmd17_{MOLECULE}_test_01.npz"
    if not train_file.is_file():
        raise SystemExit(f"benchmarks.selection_demo: rMD17 not found under {args.data_root}")
    runs, work = args.out / "runs", args.out / "work"
    start_idx = np.arange(N_START)
    pool = np.arange(N_START, POOL_STOP if not args.quick else N_START + 50)
    cpu: Dict[str, float] = {}

    def fit(name: str, indices: np.ndarray, steps: int) -> Path:
        subset = work / f"{name}.npz"
        write_subset(train_file, indices, subset)
        train_head_committee(run_config(runs / name, subset, train_file, steps), args.heads, progress=False)
        cpu[f"train_{name}"] = training_cpu_seconds(runs / name)  # across resumes
        return runs / name

    rng = np.random.default_rng(0)
    random_pick = sorted(int(i) for i in rng.choice(pool, N_ADD, replace=False))
    if args.stage == "random":
        fit("random_50", np.concatenate([start_idx, random_pick]), args.steps_added)
        return
    start_dir = fit("start_25", start_idx, args.steps)
    if args.stage == "start":
        return
    t = time.process_time()
    selected = select_with_cli(start_dir, train_file, pool, N_ADD, work)
    cpu["select"] = time.process_time() - t
    fit("selected_50", np.concatenate([start_idx, selected]), args.steps_added)
    fit("random_50", np.concatenate([start_idx, random_pick]), args.steps_added)

    test = read_rmd17(test_file)
    test = test.subset(np.arange(0, len(test), args.test_stride))
    # the start committee's spread on the chosen and the random frames (positions only)
    train = read_rmd17(train_file)
    start_committee = load_committee(start_dir, dtype="float32")
    chosen_std = frame_reduce(predict_committee(start_committee, train.subset(np.array(selected)))["forces_std"],
                              train.subset(np.array(selected)).n_atoms, "max")
    random_std = frame_reduce(predict_committee(start_committee, train.subset(np.array(random_pick)))["forces_std"],
                              train.subset(np.array(random_pick)).n_atoms, "max")
    # and their actual force error under the start committee (labels read only for this report)
    def frame_error(indices: List[int]) -> np.ndarray:
        part = train.subset(np.array(indices))
        pred = predict_committee(start_committee, part)
        return frame_reduce(np.linalg.norm(pred["forces"] - part.forces, axis=1), part.n_atoms, "max")

    results = {name: test_errors(runs / name, test) for name in ("start_25", "selected_50", "random_50")}
    summary = {
        "protocol": __doc__.split("Writes")[0].strip(),
        "molecule": MOLECULE, "heads": args.heads, "steps_start": args.steps, "steps_added": args.steps_added,
        "test_frames": len(test), "pool_frames": len(pool),
        "selected_train_indices": selected, "random_train_indices": random_pick,
        "start_committee_on_added_frames": {
            "selected": {"median_frame_max_std_meV_A": 1000 * float(np.median(chosen_std)),
                         "median_frame_max_error_meV_A": 1000 * float(np.median(frame_error(selected)))},
            "random": {"median_frame_max_std_meV_A": 1000 * float(np.median(random_std)),
                       "median_frame_max_error_meV_A": 1000 * float(np.median(frame_error(random_pick)))},
        },
        "test": results, "cpu_s": cpu, "machine": machine_info(),
        "command": "python -m benchmarks.selection_demo" + (" --quick" if args.quick else ""),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "selection_demo.json", summary)
    plot(summary, chosen_std, random_std, args.out / "selection_demo.png")
    for name, r in results.items():
        print(f"{name}: test force MAE {r['force_mae_meV_A']:.1f} meV/Å")


def plot(summary: Dict[str, Any], chosen_std: np.ndarray, random_std: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_m, ax_s) = plt.subplots(1, 2, figsize=(10, 4))
    names = ["start_25", "random_50", "selected_50"]
    labels = ["25 start frames", "+25 random", "+25 selected"]
    values = [summary["test"][n]["force_mae_meV_A"] for n in names]
    ax_m.bar(labels, values, color=["0.6", "C0", "C1"])
    for x, v in enumerate(values):
        ax_m.text(x, v, f"{v:.1f}", ha="center", va="bottom")
    ax_m.set_ylabel("test force MAE, committee mean (meV/Å)")
    ax_m.set_title(f"rMD17 aspirin, {summary['test_frames']} test frames")
    bins = np.linspace(0, 1000 * max(chosen_std.max(), random_std.max()), 25)
    ax_s.hist(1000 * random_std, bins=bins, alpha=0.6, label="25 random pool frames", color="C0")
    ax_s.hist(1000 * chosen_std, bins=bins, alpha=0.6, label="25 selected pool frames", color="C1")
    ax_s.set_xlabel("largest per-atom force std of the 25-frame committee (meV/Å)")
    ax_s.set_ylabel("frames")
    ax_s.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()

"""Torch CPU threads: the time of one energy+forces call at 1 and 2 threads and at the count that
forcefield_et's rule chooses (``forcefield_et.runtime.choose_threads``).

    python -m benchmarks.threads [--rounds 3] [--out benchmarks/results]

Systems: aspirin (21 atoms, the bundled structure) and the 64-water periodic box of
../shared/data/water/data_0 tiled 2 x 2 x 1 (768 atoms; skipped when the data is absent). Model: the
bundled ``pretrained`` checkpoint through ``ETCalculator``, float32. The thread settings are
interleaved over ``--rounds`` rounds; each entry is the median over all its timed calls. Run it
without OMP_NUM_THREADS and FORCEFIELD_ET_THREADS set, so that the rule sees the whole machine.
The 1-minute load average before and after is recorded: other processes on the cores change every
figure here.

Output: ``threads.json`` and ``threads.png`` in ``--out``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

import forcefield_et  # noqa: F401  (first: sets OMP_WAIT_POLICY=PASSIVE before torch loads OpenMP)
from benchmarks.io import write_json_atomic
from benchmarks.machine import machine_info
from benchmarks.paths import water_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
WATER_DIR = water_dir()
SETTINGS = ("1", "2", "rule")


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def systems() -> Dict[str, Any]:
    """name -> (ASE Atoms, timed calls per round)."""
    from ase.io import read

    from forcefield_et.structures import structure_path

    out: Dict[str, Any] = {"aspirin": (read(structure_path("aspirin")), 20)}
    if WATER_DIR.is_dir():
        from forcefield_et.data import read_deepmd

        out["water_768"] = (read_deepmd(str(WATER_DIR)).to_ase(0).repeat((2, 2, 1)), 2)
    else:
        print(f"water box skipped: {WATER_DIR} not found")
    return out


def time_calls(calculator: Any, atoms: Any, n_calls: int) -> List[float]:
    """Seconds of ``n_calls`` energy+forces calls, each on freshly moved positions."""
    times = []
    rng = np.random.default_rng(0)
    for _ in range(n_calls):
        atoms.positions += rng.normal(scale=1e-4, size=atoms.positions.shape)
        start = time.perf_counter()
        calculator.calculate(atoms, ["energy", "forces"], ["positions"])
        times.append(time.perf_counter() - start)
    return times


def run(rounds: int) -> Dict[str, Any]:
    import torch

    from forcefield_et import ETCalculator
    from forcefield_et.runtime import available_cpus, choose_threads

    load_before = load_average()
    results: Dict[str, Any] = {}
    for name, (atoms, n_calls) in systems().items():
        calculators = {
            setting: ETCalculator("pretrained", device="cpu", threads=None if setting == "rule" else int(setting))
            for setting in SETTINGS
        }
        times: Dict[str, List[float]] = {setting: [] for setting in SETTINGS}
        used: Dict[str, int] = {}
        for setting in SETTINGS:  # warm-up call per setting (allocations, neighbour-list path)
            time_calls(calculators[setting], atoms, 1)
        for round_index in range(rounds):
            for setting in SETTINGS:
                times[setting] += time_calls(calculators[setting], atoms, n_calls)
                used[setting] = torch.get_num_threads()
            print(f"{name} round {round_index + 1}/{rounds}: "
                  + ", ".join(f"{s}: {1000 * statistics.median(times[s]):.1f} ms" for s in SETTINGS), flush=True)
        results[name] = {
            "atoms": len(atoms),
            "calls_per_setting": len(times["1"]),
            "rule_threads": choose_threads(len(atoms)),
            "ms_per_call": {s: 1000 * statistics.median(times[s]) for s in SETTINGS},
            "threads_in_effect": used,
        }
    return {
        "benchmark": "one energy+forces call (ETCalculator, bundled pretrained model, float32) at 1 and 2 torch "
        "threads and at the count chosen by forcefield_et.runtime.choose_threads; median over interleaved rounds",
        "rounds": rounds,
        "available_cpus": available_cpus(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "nice": os.nice(0),  # this process's scheduling priority (19: lowest), against the other jobs
        "load_average_1min": {"before": load_before, "after": load_average()},
        "machine": machine_info(),
        "systems": results,
    }


def plot(summary: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["systems"])
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        entry = summary["systems"][name]
        labels = ["1 thread", "2 threads", f"rule ({entry['rule_threads']})"]
        values = [entry["ms_per_call"][s] for s in SETTINGS]
        ax.bar(labels, values, color=["#4c72b0", "#dd8452", "#55a868"])
        ax.set_title(f"{name} ({entry['atoms']} atoms)")
        ax.set_ylabel("ms per energy+forces call")
    load = summary["load_average_1min"]
    fig.suptitle(f"torch threads, {summary['available_cpus']} cores, load average {load['before']:.1f}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = run(args.rounds)
    write_json_atomic(out / "threads.json", summary)
    plot(summary, out / "threads.png")
    print(f"wrote {out / 'threads.json'} and {out / 'threads.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

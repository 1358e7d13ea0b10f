"""Scaling of ``forcefield_et.neighbors.radius_graph`` with the number of atoms.

    python -m benchmarks.neighbors                  # ~100 to ~41,000 atoms
    python -m benchmarks.neighbors --quick          # up to ~5,000 atoms, < 20 s (CI)
    python -m benchmarks.neighbors --out DIR        # default benchmarks/results/

Systems: liquid water at its real density, built by tiling the 64-water periodic box of
``../shared/data/water/data_0`` (frame 0) into n1 x n2 x n3 supercells; where that data is
absent, random positions at 0.1 atoms/Å^3 in cubic boxes. The smallest size (~100 atoms) is
always random positions at the water box's density. Cutoff 5 Å.

Timed, as the median of a few repeats after a warm-up call, in interleaved rounds over the sizes:
- ``radius_graph`` periodic (the supercell with its cell);
- ``radius_graph`` non-periodic (the same positions wrapped into the cell, no cell; ``auto``
  method: brute force up to 384 atoms, cell list above);
- matscipy's ``neighbour_list('ijS')`` on the periodic system (C implementation, reference).

Each time is recorded as wall clock and as process CPU time split into user and system time
(``resource.getrusage``): on a shared machine the wall time includes waiting for a core, and
the system time (page faults of freshly mmapped large tensors) grows faster than N.

Reports the log-log slope of time against N fitted over N >= 1000 (goal: <= 1.2, i.e. linear
scaling) for wall, CPU and user time, and for the fastest repeat's CPU and user time (the figures
that other jobs on the machine disturb least). Writes ``neighbors.json`` (with the machine and the load
average) and a log-log plot ``neighbors.png``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import torch

from forcefield_et.neighbors import radius_graph

from .paths import water_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
WATER_DIR = water_dir()
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"
CUTOFF = 5.0
RANDOM_DENSITY = 0.1  # atoms / Å^3, used without the water data
SLOPE_FIT_MIN_ATOMS = 1000
SLOPE_GOAL = 1.2

FULL_TILINGS = [
    (1, 1, 1), (2, 1, 1), (2, 2, 1), (2, 2, 2), (3, 2, 2), (3, 3, 2), (3, 3, 3),
    (4, 3, 3), (4, 4, 3), (4, 4, 4), (5, 4, 4), (5, 5, 4), (5, 5, 5), (6, 6, 6),
]
QUICK_TILINGS = [(1, 1, 1), (2, 2, 1), (2, 2, 2), (3, 3, 2), (3, 3, 3)]


def _machine() -> Dict[str, Any]:
    try:
        from .machine import machine_info

        info = machine_info()
    except Exception:  # pragma: no cover - fallback when the shared helper is unavailable
        info = {"platform": platform.platform(), "cores": os.cpu_count(), "torch": torch.__version__}
        try:
            with open("/proc/cpuinfo") as handle:
                info["cpu"] = next(
                    (ln.split(":", 1)[1].strip() for ln in handle if ln.startswith("model name")), "unknown"
                )
        except OSError:
            info["cpu"] = platform.processor() or "unknown"
    info["torch_threads"] = torch.get_num_threads()
    info["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS")
    return info


def _water_box() -> Tuple[np.ndarray, np.ndarray] | None:
    """(positions [192, 3] wrapped into the cell, cell [3, 3]) in Å, or None without the data."""
    coord_file = WATER_DIR / "set.000" / "coord.npy"
    box_file = WATER_DIR / "set.000" / "box.npy"
    if not (coord_file.exists() and box_file.exists()):
        return None
    pos = np.load(coord_file)[0].reshape(-1, 3).astype(np.float64)
    cell = np.load(box_file)[0].reshape(3, 3).astype(np.float64)
    frac = pos @ np.linalg.inv(cell)
    return (frac - np.floor(frac)) @ cell, cell


def _random_box(n_atoms: int, density: float, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    length = (n_atoms / density) ** (1.0 / 3.0)
    return rng.uniform(0.0, length, size=(n_atoms, 3)), length * np.eye(3)


def build_systems(quick: bool) -> List[Dict[str, Any]]:
    """Periodic liquid-density systems of increasing size: dicts with pos, cell, source."""
    rng = np.random.default_rng(0)
    water = _water_box()
    tilings = QUICK_TILINGS if quick else FULL_TILINGS
    if water is not None:
        density = water[0].shape[0] / abs(np.linalg.det(water[1]))
        source = "water_data_0_tiled"
    else:
        density = RANDOM_DENSITY
        source = "random"
    systems = []
    pos, cell = _random_box(96, density, rng)
    systems.append({"pos": pos, "cell": cell, "source": "random", "tiling": None})
    for tiling in tilings:
        if water is not None:
            base_pos, base_cell = water
            reps = np.array(list(itertools.product(*(range(k) for k in tiling))))
            pos = (base_pos[None, :, :] + (reps @ base_cell)[:, None, :]).reshape(-1, 3)
            cell = np.diag(tiling).astype(np.float64) @ base_cell
        else:
            pos, cell = _random_box(192 * int(np.prod(tiling)), density, rng)
        systems.append({"pos": pos, "cell": cell, "source": source, "tiling": list(tiling)})
    return systems


def _slope(n_atoms: List[int], seconds: List[float]) -> float | None:
    pts = [(n, t) for n, t in zip(n_atoms, seconds, strict=True) if n >= SLOPE_FIT_MIN_ATOMS and t > 0]
    if len(pts) < 2:
        return None
    x = np.log([p[0] for p in pts])
    y = np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


def _time_once(fn: Callable[[], Any]) -> Tuple[Dict[str, float], Any]:
    """Wall-clock, user and system time of one call, in seconds."""
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    result = fn()
    wall = time.perf_counter() - start
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall": wall, "user": r1.ru_utime - r0.ru_utime, "sys": r1.ru_stime - r0.ru_stime}, result


def _summary(samples: List[Dict[str, float]]) -> Dict[str, float]:
    """Medians (and the minima of wall and CPU time) of one size's timed calls."""
    cpu = [s["user"] + s["sys"] for s in samples]
    return {
        "wall": statistics.median(s["wall"] for s in samples),
        "cpu": statistics.median(cpu),
        "user": statistics.median(s["user"] for s in samples),
        "sys": statistics.median(s["sys"] for s in samples),
        "wall_min": min(s["wall"] for s in samples),
        "cpu_min": min(cpu),
        "user_min": min(s["user"] for s in samples),
    }


def run(quick: bool, dtype: torch.dtype = torch.float64) -> Dict[str, Any]:
    """Times every method on every size in interleaved rounds (round r times each size once, from
    the smallest up), after one warm-up call per size and method: a stretch of heavier load on a
    shared machine then slows one round of every size instead of every repeat of one size, so it
    cannot bend the fitted slope the way it could when each size's repeats ran back to back."""
    try:
        from matscipy.neighbours import neighbour_list
    except ImportError:  # pragma: no cover - matscipy is a test/bench dependency
        neighbour_list = None
    load_before = os.getloadavg()
    cases = []
    for system in build_systems(quick):
        pos = torch.tensor(system["pos"], dtype=dtype)
        cell = torch.tensor(system["cell"], dtype=dtype).unsqueeze(0)
        calls = {
            "periodic": lambda pos=pos, cell=cell: radius_graph(pos, CUTOFF, None, cell),
            "nonperiodic": lambda pos=pos: radius_graph(pos, CUTOFF),
        }
        if neighbour_list is not None:
            p, c = system["pos"], system["cell"]
            calls["matscipy"] = lambda p=p, c=c: neighbour_list("ijS", positions=p, cell=c, pbc=[True] * 3,
                                                                cutoff=CUTOFF)
        n = system["pos"].shape[0]
        # warm-up call (allocations, first-call overheads); keep only the pair counts
        edges = {}
        for name, fn in calls.items():
            output = fn()
            edges[name] = int(output[0].shape[0] if name == "matscipy" else output[0].shape[1])
            del output
        cases.append({"system": system, "n": n, "calls": calls, "samples": {name: [] for name in calls},
                      "repeats": 3 if (quick or n > 5000) else 5, "edges": edges})
    for round_ in range(max(case["repeats"] for case in cases)):
        for case in cases:
            if round_ < case["repeats"]:
                for name, fn in case["calls"].items():
                    timing, _ = _time_once(fn)
                    case["samples"][name].append(timing)
    results = []
    for case in cases:
        system, n, edges = case["system"], case["n"], case["edges"]
        timings = {name: _summary(samples) for name, samples in case["samples"].items()}
        row: Dict[str, Any] = {"n_atoms": n, "source": system["source"], "tiling": system["tiling"]}
        for name, t in timings.items():
            row.update({f"{name}_s": t["wall"], f"{name}_cpu_s": t["cpu"], f"{name}_user_s": t["user"],
                        f"{name}_sys_s": t["sys"], f"{name}_min_s": t["wall_min"], f"{name}_min_cpu_s": t["cpu_min"],
                        f"{name}_min_user_s": t["user_min"]})
        row["periodic_edges"] = edges["periodic"]
        row["nonperiodic_edges"] = edges["nonperiodic"]
        row["periodic_us_per_atom"] = 1e6 * timings["periodic"]["wall"] / n
        row["repeats"] = case["repeats"]
        if "matscipy" in edges:
            row["matscipy_edges"] = edges["matscipy"]
        results.append(row)
        print(
            f"N={n:6d}  periodic {row['periodic_s'] * 1e3:9.2f} ms (cpu {row['periodic_cpu_s'] * 1e3:9.2f})  "
            f"non-periodic {row['nonperiodic_s'] * 1e3:9.2f} ms (cpu {row['nonperiodic_cpu_s'] * 1e3:9.2f})  "
            f"matscipy {row.get('matscipy_s', float('nan')) * 1e3:8.2f} ms  edges {row['periodic_edges']}",
            flush=True,
        )
    ns = [r["n_atoms"] for r in results]
    series = ["periodic", "nonperiodic"] + (["matscipy"] if neighbour_list is not None else [])
    slopes = {name: _slope(ns, [r[f"{name}_s"] for r in results]) for name in series}
    cpu_slopes = {name: _slope(ns, [r[f"{name}_cpu_s"] for r in results]) for name in series}
    user_slopes = {name: _slope(ns, [r[f"{name}_user_s"] for r in results]) for name in series}
    min_cpu_slopes = {name: _slope(ns, [r[f"{name}_min_cpu_s"] for r in results]) for name in series}
    min_user_slopes = {name: _slope(ns, [r[f"{name}_min_user_s"] for r in results]) for name in series}
    return {
        "benchmark": "neighbors",
        "function": "forcefield_et.neighbors.radius_graph",
        "cutoff_angstrom": CUTOFF,
        "dtype": str(dtype).replace("torch.", ""),
        "quick": quick,
        "timing": "median of `repeats` calls after one warm-up call, timed in interleaved rounds over the "
        "sizes, seconds; *_s wall clock, "
        "*_cpu_s process CPU time = *_user_s + *_sys_s (system time: mostly page faults of large "
        "allocations); *_min_s, *_min_cpu_s, *_min_user_s: the fastest of the repeats (wall, CPU, user CPU)",
        "machine": _machine(),
        "load_average_before_after": [list(load_before), list(os.getloadavg())],
        "results": results,
        "slopes": slopes,
        "slopes_cpu_time": cpu_slopes,
        "slopes_user_time": user_slopes,
        "slopes_min_cpu_time": min_cpu_slopes,
        "slopes_min_user_time": min_user_slopes,
        "slope_edges": _slope(ns, [r["periodic_edges"] for r in results]),
        "slope_fit_min_atoms": SLOPE_FIT_MIN_ATOMS,
        "slope_goal": SLOPE_GOAL,
        "meets_goal": {k: (v is not None and v <= SLOPE_GOAL) for k, v in slopes.items()},
        "edges_match_matscipy": all(
            r["periodic_edges"] == r.get("matscipy_edges", r["periodic_edges"]) for r in results
        ),
    }


def plot(report: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    ns = np.array([r["n_atoms"] for r in results], dtype=float)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    series = [
        ("periodic_s", "radius_graph, periodic", "o-"),
        ("nonperiodic_s", "radius_graph, non-periodic", "s-"),
        ("matscipy_s", "matscipy neighbour_list, periodic", "^--"),
    ]
    for key, label, style in series:
        if key not in results[0]:
            continue
        name = key[:-2]
        slope = report["slopes"].get(name)
        suffix = f" (slope {slope:.2f})" if slope is not None else ""
        (line,) = ax.loglog(ns, [r[key] for r in results], style, label=label + ", wall" + suffix)
        user_key = f"{name}_user_s"
        if name != "matscipy" and user_key in results[0]:
            slope = report["slopes_user_time"].get(name)
            suffix = f" (slope {slope:.2f})" if slope is not None else ""
            ax.loglog(ns, [r[user_key] for r in results], ":", lw=1.2, color=line.get_color(),
                      label=f"  same, user CPU time{suffix}")
    ref = np.array([ns.min(), ns.max()])
    t0 = results[-1]["periodic_s"] * ref / ns.max()
    ax.loglog(ref, t0, "k:", lw=1, label="∝ N")
    ax.axvline(report["slope_fit_min_atoms"], color="grey", lw=0.5)
    ax.set_xlabel("atoms N")
    ax.set_ylabel("time per call (s)")
    machine = report["machine"]
    ax.set_title(
        f"Neighbour list, cutoff {report['cutoff_angstrom']} Å, {report['dtype']}\n"
        f"{machine.get('cpu', '?')}, {machine.get('torch_threads')} thread(s)",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="sizes up to ~5,000 atoms (< 20 s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default benchmarks/results)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report = run(args.quick, getattr(torch, args.dtype))
    (args.out / "neighbors.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out / "neighbors.png")
    for title, key in (("wall", "slopes"), ("CPU", "slopes_cpu_time"), ("user CPU", "slopes_user_time")):
        text = ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} n/a" for k, v in report[key].items())
        print(f"log-log slope of {title} time (N >= {SLOPE_FIT_MIN_ATOMS}): {text}; goal <= {SLOPE_GOAL}")
    print(f"wrote {args.out / 'neighbors.json'} and {args.out / 'neighbors.png'}")
    return report


if __name__ == "__main__":
    main()

"""Large periodic water boxes through ETCalculator on CPU: which memory path it takes, time per
call and peak memory, each size in a fresh process (so one size's heap does not inflate the next).

    python -m benchmarks.large_systems                          # 1,536 to 10,368 atoms
    python -m benchmarks.large_systems --repeats 2,2,2 --calls 2 # one size
    python -m benchmarks.large_systems --chunking none          # all edges or MemoryError

The structure is the 64-water periodic box of ../shared/data/water (192 atoms) tiled with
``atoms.repeat``; the model is the default-size ET (128 hidden, 6 layers) with random weights
(speed and memory do not depend on them), float32, 1 thread. ``--chunking auto`` is the
calculator's default: all edges when they fit, else the edge-chunked memory-saving mode
(``forcefield_et.runtime.plan_memory``). Peak memory is the process's VmHWM during the calls minus
its VmRSS before them. Output: ``<out>/large_systems.json`` and ``large_systems.png``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

DEFAULT_REPEATS = ["2,2,2", "2,2,4", "3,3,3", "3,3,6"]  # 1,536, 3,072, 5,184 and 10,368 atoms


def measure(repeat: str, chunking: str, calls: int) -> Dict[str, Any]:
    """One size in this process: path, seconds per call, peak memory above the RSS before."""
    import numpy as np
    import torch

    from forcefield_et import ETCalculator, build_model

    from .speed import _reset_peak_rss, _rss_mb, water_box

    torch.set_num_threads(1)
    atoms = water_box().repeat(tuple(int(r) for r in repeat.split(",")))
    torch.manual_seed(0)
    edge_chunking: Any = {"auto": "auto", "none": None}[chunking] if chunking in ("auto", "none") else int(chunking)
    calc = ETCalculator(build_model(), device="cpu", dtype="float32", edge_chunking=edge_chunking)
    rng = np.random.default_rng(0)
    start_positions = atoms.get_positions()
    row: Dict[str, Any] = {"atoms": len(atoms), "repeat": repeat, "chunking": chunking}
    before = _rss_mb("VmRSS")
    _reset_peak_rss()
    times: List[float] = []
    try:
        for call in range(calls):
            atoms.positions = start_positions + (0.0 if call == 0 else rng.normal(0.0, 0.01, start_positions.shape))
            t0 = time.perf_counter()
            calc.calculate(atoms, ["energy", "forces"], ["positions"])
            times.append(time.perf_counter() - t0)
    except MemoryError as error:
        row["error"] = f"MemoryError: {error}"
    plan = calc.last_memory_plan
    peak = _rss_mb("VmHWM")
    row.update(
        path=calc.last_path,
        estimated_gib=plan.estimated_bytes / 2**30 if plan else None,
        s_per_call=times,
        peak_increase_gib=(peak - before) / 1024 if peak is not None and before is not None else None,
        finite_forces=bool(np.isfinite(calc.results["forces"]).all()) if "forces" in calc.results else None,
    )
    return row


def plot(rows: List[Dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.get("s_per_call")]
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(10, 4))
    for path_name, marker in (("all_edges", "o"), ("chunked", "s")):
        pick = [r for r in done if r["path"] == path_name]
        if pick:
            ax_time.loglog([r["atoms"] for r in pick], [min(r["s_per_call"]) for r in pick], marker, label=path_name)
            ax_mem.loglog([r["atoms"] for r in pick], [r["peak_increase_gib"] for r in pick], marker, label=path_name)
    ax_time.set_xlabel("atoms")
    ax_time.set_ylabel("s per energy+forces call (fastest)")
    ax_mem.set_xlabel("atoms")
    ax_mem.set_ylabel("peak memory of the calls (GiB)")
    for ax in (ax_time, ax_mem):
        ax.legend()
    fig.suptitle("Periodic water, default ET, float32, 1 CPU thread")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", nargs="+", default=DEFAULT_REPEATS, help="tilings of the 192-atom box")
    parser.add_argument("--chunking", default="auto", help="auto (default), none, or edges per chunk")
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one size, print JSON
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.chunking, args.calls)))
        return
    from .machine import machine_info

    rows = []
    for repeat in args.repeats:
        command = [sys.executable, "-m", "benchmarks.large_systems", "--one", repeat, "--chunking", args.chunking,
                   "--calls", str(args.calls)]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            row = {"repeat": repeat, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
        else:
            row = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(row), flush=True)
        rows.append(row)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"benchmark": "large_systems", "machine": machine_info(), "doc": __doc__.strip(), "results": rows}
    (out / "large_systems.json").write_text(json.dumps(summary, indent=2))
    plot(rows, out / "large_systems.png")


if __name__ == "__main__":
    main()

"""The README's Python examples as a user runs them: wall time on an idle machine and with every core
but one busy.

    python -m benchmarks.readme_snippets [--blocks openmm ase] [--rounds 2] [--out benchmarks/results]

Each example block of README.md runs as written in a fresh interpreter, with the environment a user
has: ``OMP_NUM_THREADS``, ``OMP_WAIT_POLICY`` and ``FORCEFIELD_ET_THREADS`` removed, so that the
package's thread rule (``forcefield_et.runtime``) decides. "busy" starts one spinning process per
core but one (plain Python busy loops at nice 0) for the duration of the run; "idle" starts none.
The two conditions alternate over ``--rounds`` rounds. Run it on an otherwise idle machine: the
1-minute load average before each run is recorded, and anything else on the cores changes the
figures. ``--steps`` shortens the MD of each block (for tests); the default runs the blocks as
written.

Output: ``readme_snippets.json`` and ``readme_snippets.png`` in ``--out``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List

from .io import write_json_atomic
from .machine import machine_info

README = Path(__file__).resolve().parents[1] / "README.md"
RESULTS = Path(__file__).resolve().parent / "results"
USER_UNSET = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "FORCEFIELD_ET_THREADS", "MKL_NUM_THREADS")
SPIN = "while True:\n    pass\n"


def readme_blocks(readme: Path = README) -> Dict[str, str]:
    """The README's ```python blocks by name: ``ase`` (the ETCalculator example), ``openmm``."""
    blocks = {}
    for code in re.findall(r"```python\n(.*?)```", readme.read_text(), flags=re.S):
        name = "openmm" if "openmm" in code else "ase" if "ETCalculator" in code else None
        if name and name not in blocks:
            blocks[name] = code
    return blocks


def shortened(code: str, steps: int | None) -> str:
    """``code`` with its MD length (``.run(N)``/``.step(N)``) replaced by ``steps`` (None: as written)."""
    if steps is None:
        return code
    return re.sub(r"\.(run|step)\(\d+\)", rf".\1({steps})", code)


@contextmanager
def busy_cores(count: int) -> Iterator[List[int]]:
    """``count`` spinning processes for the duration of the block; their PIDs."""
    hogs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(count)]
    try:
        time.sleep(0.5)
        yield [hog.pid for hog in hogs]
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()


def run_block(code: str, timeout_s: float) -> Dict[str, Any]:
    """Run ``code`` in a fresh interpreter with a user's environment; wall seconds and exit status."""
    env = {k: v for k, v in os.environ.items() if k not in USER_UNSET}
    env["MPLBACKEND"] = "Agg"
    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True,
                                text=True, timeout=timeout_s)
        wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"README block failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
    return {"wall_s": wall}


def measure(blocks: List[str], rounds: int, steps: int | None, timeout_s: float,
            readme: Path = README) -> Dict[str, Any]:
    """Interleaved idle/busy runs of each named block; per-condition medians and the busy/idle ratio."""
    available = readme_blocks(readme)
    missing = [name for name in blocks if name not in available]
    if missing:
        raise SystemExit(f"--blocks: no README block named {', '.join(missing)} (have: {', '.join(available)})")
    cores = os.cpu_count() or 1
    hog_count = max(cores - 1, 1)
    runs: List[Dict[str, Any]] = []
    for round_index in range(rounds):
        for name in blocks:
            code = shortened(available[name], steps)
            for condition in ("idle", "busy"):
                load = os.getloadavg()[0]
                if condition == "busy":
                    with busy_cores(hog_count):
                        timing = run_block(code, timeout_s)
                else:
                    timing = run_block(code, timeout_s)
                runs.append({"block": name, "condition": condition, "round": round_index,
                             "load_average_1min_before": load, **timing})
                print(f"{name:7s} {condition:5s} round {round_index}: {timing['wall_s']:.1f} s (load {load:.2f})",
                      flush=True)
    summary: Dict[str, Any] = {}
    for name in blocks:
        medians = {c: statistics.median(r["wall_s"] for r in runs if r["block"] == name and r["condition"] == c)
                   for c in ("idle", "busy")}
        summary[name] = {"median_wall_s": medians, "busy_over_idle": medians["busy"] / medians["idle"]}
    return {
        "benchmark": "README Python examples run as written in a fresh interpreter with a user's environment "
                     "(no thread variables set); idle machine against every core but one busy",
        "rounds": rounds,
        "md_steps": "as written" if steps is None else steps,
        "busy_processes": hog_count,
        "machine": machine_info(),
        "blocks": summary,
        "runs": runs,
    }


def plot(result: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["blocks"])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    width = 0.38
    for offset, condition in ((-width / 2, "idle"), (width / 2, "busy")):
        values = [result["blocks"][n]["median_wall_s"][condition] for n in names]
        ax.bar([i + offset for i in range(len(names))], values, width, label=condition)
    ax.set_xticks(range(len(names)), [f"{n} ({result['blocks'][n]['busy_over_idle']:.2f}×)" for n in names])
    ax.set_ylabel("wall time (s)")
    ax.set_title("README examples: idle vs other cores busy", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", nargs="+", default=["openmm", "ase"], help="README blocks to run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved idle/busy rounds")
    parser.add_argument("--steps", type=int, default=None, help="MD steps per block (default: as written)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run before it is abandoned")
    parser.add_argument("--out", type=Path, default=RESULTS, help="output directory")
    parser.add_argument("--readme", type=Path, default=README, help="the markdown file whose blocks run")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")
    result = measure(args.blocks, args.rounds, args.steps, args.timeout, args.readme)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "readme_snippets.json", result)
    plot(result, args.out / "readme_snippets.png")
    for name, row in result["blocks"].items():
        print(f"{name}: idle {row['median_wall_s']['idle']:.1f} s, busy {row['median_wall_s']['busy']:.1f} s, "
              f"ratio {row['busy_over_idle']:.2f}")
    return result


if __name__ == "__main__":
    main()

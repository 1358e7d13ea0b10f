"""The pretraining-scaling curve: fine-tune from snapshots of one pretraining run taken at several
amounts of pretraining, and test each on rMD17.

    python -m benchmarks.pretrain_scaling                      # snapshots of runs/pretrain_mixed
    python -m benchmarks.pretrain_scaling --report             # table and plot of the finished runs

Every snapshot ``runs/<run>/snapshots/step_<N>.pt`` (the EMA weights after N steps, kept by
``optim.snapshot_steps``) and, as the zero point, the same architecture from scratch, is fine-tuned
with the protocol of ``benchmarks.finetune_converged`` on each molecule and training-set size, with
a smaller CPU budget per run (0.5 CPU-hours at 1000 frames, 0.25 at 50). The plot shows the test
force MAE (all 1000 ``test_01`` frames) against the conformations the start had seen in pretraining.
Runs live in ``runs/pretrain_scaling/`` and resume; results go to ``benchmarks/results/pretrain_scaling/``
(the figure is copied to ``docs/img/``). Two invocations, one per core, share the cells: a cell that
another one is training is skipped.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any, Dict, List

import torch

from forcefield_et.checkpoint import read_checkpoint
from forcefield_et.files import DirectoryBusyError

from .finetune_converged import run_cell
from .io import finished_runs, write_report
from .paths import DATA_ROOT, REPO

PRETRAIN_RUN = REPO / "runs" / "pretrain_mixed"
RUNS_DIR = REPO / "runs" / "pretrain_scaling"
RESULTS_DIR = Path(__file__).resolve().parent / "results" / "pretrain_scaling"
DOCS_IMG = REPO / "docs" / "img"
BUDGET_HOURS = {50: 0.25, 1000: 0.5}


def snapshots(run: Path) -> List[Dict[str, Any]]:
    """The run's snapshots, ordered by step: path, step and conformations seen."""
    found = []
    for path in (run / "snapshots").glob("step_*.pt"):
        info = read_checkpoint(path)["metadata"].get("snapshot", {})
        found.append({"path": path, "step": int(info["step"]), "conformations_seen": int(info["conformations_seen"])})
    return sorted(found, key=lambda s: s["step"])


def architecture(run: Path) -> Dict[str, Any]:
    """The pretraining run's model hyperparameters (so that the scratch zero point matches it)."""
    return dict(read_checkpoint(snapshots(run)[0]["path"])["metadata"]["hyperparameters"])


def table(rows: List[Dict[str, Any]]) -> str:
    keys = sorted({(r["molecule"], r["n_train"]) for r in rows})
    lines = ["| conformations seen in pretraining | " + " | ".join(f"{m}, {n} frames" for m, n in keys) + " |",
             "|---" * (len(keys) + 1) + "|"]
    by = {(r["conformations_seen"], r["molecule"], r["n_train"]): r for r in rows}
    for seen in sorted({r["conformations_seen"] for r in rows}):
        cells = [by.get((seen, m, n)) for m, n in keys]
        lines.append(f"| {seen:,} | " + " | ".join(f"{c['test_force_mae_meV_A']:.2f}" if c else "–" for c in cells)
                     + " |")
    equal_steps = equal_steps_table(rows)
    return ("\n".join(lines) + "\n\nTest force MAE (meV/Å) on all 1000 rMD17 test_01 frames; 0 = from scratch.\n\n"
            + runs_table(rows) + ("\nAt equal steps: monitored test force MAE (meV/Å) at the last validation "
                                  "within the step count (in brackets: its step).\n\n" + equal_steps
                                  if equal_steps else ""))


def runs_table(rows: List[Dict[str, Any]]) -> str:
    """Steps, CPU-hours and stop reason of every finished run: a CPU budget buys fewer steps on a slower
    machine, so budget-bound runs compare by their steps too."""
    lines = ["| molecule | train frames | conformations seen | steps | CPU-hours | stopped by |",
             "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["molecule"], r["n_train"], r["conformations_seen"])):
        lines.append(f"| {r['molecule']} | {r['n_train']} | {r['conformations_seen']:,} | {r['steps']:,} | "
                     f"{r['cpu_hours']:.2f} | {r['stop_reason']} |")
    return "\n".join(lines) + "\n"


def equal_steps_table(rows: List[Dict[str, Any]]) -> str:
    """For each molecule and training-set size whose runs all ended at their CPU budget: every run's
    monitored test force MAE (the test frames evaluated at each validation, EMA weights) at the last
    validation within the step count that the slowest run of the column reached. A CPU budget buys a
    different number of steps on another machine or beside another job; at equal steps the columns
    compare the starts alone."""
    columns: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in rows:
        columns.setdefault((r["molecule"], r["n_train"]), []).append(r)
    budget_bound = sorted(key for key, runs in columns.items()
                          if all(r["stop_reason"].startswith("time budget") for r in runs))
    if not budget_bound:
        return ""
    common = {key: min(r["steps"] for r in columns[key]) for key in budget_bound}
    by = {(r["conformations_seen"], r["molecule"], r["n_train"]): r for r in rows}

    def at_steps(run: Dict[str, Any] | None, steps: int) -> str:
        if run is None:
            return "–"
        within = [point for point in run.get("curve", []) if point["step"] <= steps]
        return f"{within[-1]['test_force_mae_meV_A']:.2f} ({within[-1]['step']:,})" if within else "–"

    lines = ["| conformations seen in pretraining | " + " | ".join(
        f"{m}, {n} frames, at ≤ {common[(m, n)]:,} steps" for m, n in budget_bound) + " |",
        "|---" * (len(budget_bound) + 1) + "|"]
    for seen in sorted({r["conformations_seen"] for r in rows if (r["molecule"], r["n_train"]) in common}):
        lines.append(f"| {seen:,} | " + " | ".join(at_steps(by.get((seen, m, n)), common[(m, n)])
                                                   for m, n in budget_bound) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: List[Dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for molecule, n_train in sorted({(r["molecule"], r["n_train"]) for r in rows}):
        points = sorted((max(r["conformations_seen"], 1e4), r["test_force_mae_meV_A"]) for r in rows
                        if r["molecule"] == molecule and r["n_train"] == n_train)
        ax.plot(*zip(*points), "o-", label=f"{molecule}, {n_train} frames")
    from matplotlib.ticker import ScalarFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xlabel("conformations seen in pretraining (scratch drawn at 10⁴)")
    ax.set_ylabel("test force MAE (meV/Å)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(results_dir: Path = RESULTS_DIR) -> str:
    rows = finished_runs(results_dir)
    protocol = __doc__.split("Every snapshot")[1].split("Runs live")[0].strip()
    return write_report(results_dir, "pretrain_scaling", protocol, rows, table(rows), plot)


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=str(PRETRAIN_RUN), help="pretraining run directory with snapshots/")
    parser.add_argument("--molecules", nargs="+", default=["aspirin", "ethanol"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[50, 1000])
    parser.add_argument("--data-root", default=str(DATA_ROOT), help="the shared data folder (holds rmd17/)")
    parser.add_argument("--runs", default=str(RUNS_DIR))
    parser.add_argument("--out", default=str(RESULTS_DIR))
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a 2 s budget per run, eager, 50 test frames")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out, run = Path(args.out), Path(args.run)
    out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        taken = snapshots(run)
        if not taken:
            raise SystemExit(f"{run / 'snapshots'} holds no step_*.pt snapshots yet")
        # the two ends of the curve first (scratch, the most pretrained snapshot), then the amounts between:
        # a study cut short still shows the whole range
        starts = [{"path": "scratch", "conformations_seen": 0}, taken[-1], *taken[:-1]]
        scratch_model = architecture(run)
        for start in starts:
            for molecule in args.molecules:
                for size in args.sizes:
                    optim: Dict[str, Any] = {"time_budget_s": 3600 * BUDGET_HOURS.get(size, 0.5)}
                    test_frames = 1000
                    if args.quick:
                        optim, test_frames = {"time_budget_s": 2, "compile": False, "valid_every": 5}, 50
                    try:
                        result = run_cell(molecule, size, str(start["path"]), Path(args.data_root), Path(args.runs),
                                          out, optim, test_frames,
                                          model=scratch_model if start["path"] == "scratch" else None,
                                          extra={"conformations_seen": start["conformations_seen"]})
                    except DirectoryBusyError as error:  # another process trains it: the next cell
                        print(f"skipped: {error}", flush=True)
                        continue
                    print(json.dumps({k: v for k, v in result.items() if k != "curve"}), flush=True)
    print(report(out))
    figure = out / "pretrain_scaling.png"
    if out.resolve() == RESULTS_DIR.resolve() and figure.is_file():  # the docs show the default run's figure
        shutil.copyfile(figure, DOCS_IMG / "pretrain_scaling.png")


if __name__ == "__main__":
    main()

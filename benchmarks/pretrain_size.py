"""Pretraining model size by accuracy per CPU-hour: several ET sizes pretrained on the mixed corpus
of ``configs/pretrain_mixed.yaml`` for the same CPU budget, held-out force errors against CPU-hours.

    python -m benchmarks.pretrain_size                    # 3 sizes, 0.5 CPU-hours each (resumes)
    python -m benchmarks.pretrain_size --report           # table and plot of what has run
    python -m benchmarks.pretrain_size --quick --out DIR  # pipeline check with tiny budgets (tests)

Protocol: the sources, objectives, batch (32), seed and compiled training step of
``configs/pretrain_mixed.yaml``; the learning rate held at 5e-4 after 500 warm-up steps (no decay, so
that no size gains from a schedule fitted to its step count); validation every 500 steps on at most
200 held-out frames per source (the config's held-out molecules); each size stops at its CPU budget,
which counts validation too. Sizes (hidden channels / layers, 8 heads, 32 radial functions, 5 Å):
64/3, 128/4 (the size of the pretraining run) and 128/6. The figure of merit is the held-out force
MAE on the GFN2-xTB MD frames of molecules never trained on (``xtb_md``) and on the rMD17 molecules
at the fine-tuning level of theory (``rmd17_others``), against training CPU-hours. The comparison
holds at this budget; a longer run can favour a larger model.

Runs live in ``runs/pretrain_size/<size>/`` (ignored by git) and resume; results go to
``benchmarks/results/pretrain_size/`` (``pretrain_size.json``, ``pretrain_size.md``,
``pretrain_size.png``, copied to ``docs/img/``).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch
import yaml

from forcefield_et.training import config_from_dict, train
from forcefield_et.training.curves import read_validation_rows

from .io import finished_runs, write_json_atomic, write_report

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "pretrain_mixed.yaml"
RUNS_DIR = REPO / "runs" / "pretrain_size"
RESULTS_DIR = Path(__file__).resolve().parent / "results" / "pretrain_size"
DOCS_IMG = REPO / "docs" / "img"
SIZES: List[Tuple[int, int]] = [(64, 3), (128, 4), (128, 6)]
BUDGET_HOURS = 0.5
METRICS = ("xtb_md", "rmd17_others")


def size_name(hidden: int, layers: int) -> str:
    return f"h{hidden}-l{layers}"


def size_config(hidden: int, layers: int, budget_s: float, runs_dir: Path, quick: bool = False) -> Any:
    """``configs/pretrain_mixed.yaml`` at another size, a constant learning rate and a CPU budget."""
    values: Dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    values["run_dir"] = str(runs_dir / size_name(hidden, layers))
    values["data_root"] = str((REPO / values["data_root"]).resolve())
    values["model"] = {**values["model"], "hidden_channels": hidden, "num_layers": layers}
    if quick:  # two sources are enough to check the pipeline
        values["sources"] = [s for s in values["sources"] if s["name"] in METRICS]
    for source in values["sources"]:
        source["valid_max_frames"] = 20 if quick else 200
    values["optim"].update({
        "max_steps": 10**8, "time_budget_s": budget_s, "schedule": "plateau", "plateau_patience": 10**6,
        "early_stop_patience": 0, "valid_every": 5 if quick else 500, "snapshot_steps": [],
        "checkpoint_every": 5 if quick else 200, "warmup_steps": 2 if quick else 500,
    })
    if quick:
        values["optim"]["compile"] = False
    return config_from_dict(values)


def run_size(hidden: int, layers: int, budget_s: float, runs_dir: Path, results_dir: Path,
             quick: bool = False) -> Dict[str, Any]:
    """Pretrain (or resume) one size to its budget; returns its result (curve of held-out errors)."""
    result_path = results_dir / "runs" / size_name(hidden, layers) / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    config = size_config(hidden, layers, budget_s, runs_dir, quick)
    trainer, _ = train(config, progress=False)
    rows = [r for r in read_validation_rows(Path(config.run_dir)) if r.get("cpu_hours")]
    curve = [{"step": int(r["step"]), "cpu_hours": float(r["cpu_hours"]),
              **{name: float(r[f"{name}/force_mae_meV_A"]) for name in METRICS if r.get(f"{name}/force_mae_meV_A")}}
             for r in rows]
    result = {
        "size": size_name(hidden, layers), "hidden_channels": hidden, "num_layers": layers,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "steps": trainer.step, "conformations_seen": trainer.step * config.optim.batch_size,
        "cpu_hours": trainer.cpu_seconds / 3600, "stop_reason": trainer.stop_reason or "max_steps",
        "final_force_mae_meV_A": {name: curve[-1].get(name) for name in METRICS} if curve else {},
        "curve": curve,
    }
    (Path(config.run_dir) / "last.pt").unlink(missing_ok=True)  # a finished run keeps no optimiser state
    result_path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(result_path, result)
    return result


def table(rows: List[Dict[str, Any]]) -> str:
    lines = ["| size (hidden / layers) | parameters | steps in the budget | CPU-hours | held-out force MAE, "
             "xtb_md (meV/Å) | rmd17_others (meV/Å) |", "|---|---|---|---|---|---|"]
    for r in rows:
        final = r["final_force_mae_meV_A"]
        cells = [f"{final[name]:.1f}" if final.get(name) is not None else "–" for name in METRICS]
        lines.append(f"| {r['hidden_channels']} / {r['num_layers']} | {r['parameters']:,} | {r['steps']:,} "
                     f"| {r['cpu_hours']:.2f} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def plot(rows: List[Dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 3.8), squeeze=False)
    for ax, name in zip(axes[0], METRICS):
        for r in rows:
            points = [(p["cpu_hours"], p[name]) for p in r["curve"] if p.get(name) is not None]
            if points:
                ax.plot(*zip(*points), "o-", ms=3, label=f"{r['hidden_channels']} / {r['num_layers']}")
        ax.set_title(f"held-out {name}")
        ax.set_xlabel("pretraining CPU-hours")
        ax.set_ylabel("force MAE (meV/Å)")
        ax.grid(alpha=0.3)
        ax.legend(title="hidden / layers", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(results_dir: Path = RESULTS_DIR) -> str:
    rows = finished_runs(results_dir, lambda r: (r["hidden_channels"], r["num_layers"]))
    protocol = __doc__.split("Protocol: ")[1].split("Runs live")[0].strip()
    return write_report(results_dir, "pretrain_size", protocol, rows, table(rows), plot)


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=[f"{h}x{n}" for h, n in SIZES], metavar="HIDDENxLAYERS")
    parser.add_argument("--budget-hours", type=float, default=BUDGET_HOURS, help="CPU-hours per size")
    parser.add_argument("--runs", default=str(RUNS_DIR))
    parser.add_argument("--out", default=str(RESULTS_DIR))
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--quick", action="store_true", help="one tiny size, two sources, 3 CPU-seconds, eager")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = [tuple(int(x) for x in text.lower().split("x")) for text in args.sizes]
    budget_s = 3600 * args.budget_hours
    if args.quick:
        sizes, budget_s = [(16, 1)], 3.0
    if not args.report:
        for hidden, layers in sizes:
            result = run_size(hidden, layers, budget_s, Path(args.runs), out, args.quick)
            print(json.dumps({k: v for k, v in result.items() if k != "curve"}), flush=True)
    print(report(out))
    figure = out / "pretrain_size.png"
    if out.resolve() == RESULTS_DIR.resolve() and figure.is_file():  # the docs show the default run's figure
        shutil.copyfile(figure, DOCS_IMG / "pretrain_size.png")


if __name__ == "__main__":
    main()

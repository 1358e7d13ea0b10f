"""Ablation of the force-centric pretraining objectives: force-only, + zero-force, + denoising.

    python -m benchmarks.ablation                          # pretrain 3 variants, fine-tune, 500 K MD, report
    python -m benchmarks.ablation --variants denoise       # one variant (run one per core)
    python -m benchmarks.ablation --report                 # summarise what has finished
    python -m benchmarks.ablation --quick --out /tmp/abl   # pipeline check with a tiny model (tests)

Protocol. Each variant pretrains the same model (``configs/ablation_<variant>.yaml``: 128 hidden,
4 layers, seed 0, batch 32) on the same off-equilibrium force data and the same short budget
(1,500 steps), and differs only in its equilibrium objectives:

- ``force_only``: forces on xtb MD/displaced, QM7-X and combustion; no equilibrium data;
- ``zero_force``: + zero-force regularisation on the xtb relaxed and QM9 equilibrium geometries;
- ``denoise``: + force denoising on half of those (the full objective of ``configs/pretrain_cpu_small.yaml``).

Pretraining resumes from ``runs/ablation_<variant>/last.pt``. Each variant's best EMA checkpoint
(selected by the validation loss without the denoising term, so the three are selected alike) is
then fine-tuned exactly like the fine-tuning study (``benchmarks.finetune_study.run_one``: rMD17
``train_01`` frames, 2,000 steps of batch 8, tested on ``test_01``) and run for a short 500 K
Nose-Hoover MD with the MDsim protocol of ``benchmarks.md_stability`` (default 5 ps, not 300 ps).

The fine-tuning study's own runs with the same protocol are shown beside them as references:
``scratch`` (no pretraining) and ``pretrained`` (the fine-tuning study's start,
``configs/pretrain_cpu_small.yaml``: full objective, 14,000 steps).
Their fine-tuning results come from ``benchmarks/results/finetune_study``; their MD is run here
when the study's weights are on this machine. Every stage writes its own result file, so the
ablation resumes where it stopped. Outputs ``ablation.json``, ``ablation.md`` and ``ablation.png``;
each MD run's ``result.json`` goes to ``<out>/md/<molecule>__<start>/``, its resumable state and
trajectory to the work folder of ``benchmarks.md_stability`` (``runs/ablation/md/`` for the default
``--out``, which git ignores).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any, Dict, List, Sequence

from .io import write_report
from .md_stability import stability_text

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"
ABLATION_DIR = Path(__file__).resolve().parent / "results" / "ablation"
VARIANTS = ("force_only", "zero_force", "denoise")
REFERENCE_STARTS = ("scratch", "pretrained")
PRETRAIN_SOURCES = ("xtb_md", "qm7x", "combustion")


def pretrain_config(variant: str, run_root: Path | None = None, quick: bool = False):
    """The variant's training config; ``run_root`` moves its run folder, ``quick`` shrinks it to a
    few steps of a tiny model (pipeline check only)."""
    import yaml

    from forcefield_et.training import config_from_dict

    path = CONFIG_DIR / f"ablation_{variant}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (known variants: {', '.join(VARIANTS)})")
    values = yaml.safe_load(path.read_text())
    if values.get("data_root") and not Path(values["data_root"]).is_absolute():
        values["data_root"] = str((REPO_ROOT / values["data_root"]).resolve())
    run_dir = Path(values["run_dir"])
    values["run_dir"] = str((run_root / run_dir.name) if run_root else (REPO_ROOT / run_dir))
    if quick:
        values["model"] = {**values["model"], "hidden_channels": 16, "num_layers": 1, "num_heads": 2, "num_rbf": 8}
        values["optim"] = {**values["optim"], "max_steps": 4, "batch_size": 8, "warmup_steps": 1, "valid_every": 2,
                           "checkpoint_every": 2, "log_every": 2}
        for source in values["sources"]:
            source["max_frames"] = 40
    return config_from_dict(values)


def last_validation(run_dir: Path) -> Dict[str, float]:
    """The last 'valid' row of ``run_dir/metrics.csv`` (empty when there is none)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("kind") == "valid"]
    if not rows:
        return {}
    return {key: float(value) for key, value in rows[-1].items() if key not in ("kind",) and value not in ("", None)}


def pretrain(variant: str, run_root: Path | None, quick: bool) -> Path:
    """Pretrain (or resume, or reuse) one variant; returns its best checkpoint."""
    from forcefield_et.training import train

    config = pretrain_config(variant, run_root, quick)
    run_dir = Path(config.run_dir)
    best = run_dir / "best.pt"
    if best.is_file() and int(last_validation(run_dir).get("step", -1)) >= config.optim.max_steps:
        return best
    print(f"pretraining {variant} -> {run_dir} ({config.optim.max_steps} steps)", flush=True)
    train(config, progress=True)
    return best


def finetune(variant_checkpoint: Path, molecule: str, size: int, steps: int, out: Path, data_root: Path,
             test_frames: int | None) -> Dict[str, Any]:
    from .finetune_study import run_one

    return run_one(molecule, size, str(variant_checkpoint), steps, out, data_root, test_frames)


def short_md(name: str, checkpoint: Path, molecule: str, time_ps: float, out: Path) -> Dict[str, Any]:
    """MDsim-protocol NVT at 500 K for ``time_ps`` with one ET checkpoint (resumable). The result
    goes to ``out/md``, the state and trajectory to the work folder of ``out`` (see
    :func:`benchmarks.md_stability.default_work_dir`)."""
    from . import md_stability as md

    protocol = md.Protocol(time_ps=time_ps)
    if not checkpoint.is_file():
        return {"model": name, "molecule": molecule, "skipped": f"{checkpoint} not found"}
    spec = md.ModelSpec(name, "et", checkpoint, md.describe_et(checkpoint))
    reference = md.load_reference(molecule, protocol)
    folder = f"{molecule}__{name}"
    return md.run_one(spec, reference, protocol, out / "md" / folder, quiet=True,
                      work_dir=md.default_work_dir(out) / "md" / folder)


def study_reference(study_dir: Path, molecule: str, size: int, start: str) -> Dict[str, Any] | None:
    path = study_dir / "runs" / f"{molecule}-{size}-{start}" / "result.json"
    return json.loads(path.read_text()) if path.is_file() else None


START_LABELS = {
    "ablation_force_only": "force only",
    "ablation_zero_force": "+ zero-force",
    "ablation_denoise": "+ denoising",
    "pretrained": "small-corpus pretrained (full objective)",
}


def table(rows: Sequence[Dict[str, Any]]) -> str:
    """Markdown: one row per (start, size): pretraining validation, fine-tuned test errors, MD."""

    def number(value: Any, fmt: str = ".1f") -> str:
        return format(value, fmt) if isinstance(value, (int, float)) else "–"

    lines = [
        "| start | pretraining valid force MAE xtb_md / QM7-X / combustion (meV/Å) | train frames "
        "| test force MAE (meV/Å) | test energy MAE (meV) | MD stable (ps) | h(r) MAE (×1e-4) | MD steps/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        pre = row.get("pretrain_valid") or {}
        pre_text = " / ".join(number(pre.get(f"{s}/force_mae_meV_A")) for s in PRETRAIN_SOURCES) if pre else "–"
        fine, md = row.get("finetune") or {}, row.get("md") or {}
        stable = stability_text(md) if "stability_ps" in md else "–"
        hr = md.get("hr_mae")
        label = START_LABELS.get(row["start"], row["start"])
        if pre.get("step") is not None:
            label += f", {int(pre['step']):,} steps"
        lines.append(
            f"| {label} | {pre_text} | {fine.get('n_train', row['size'])} "
            f"| {number(fine.get('test_force_mae_meV_A'))} | {number(fine.get('test_energy_mae_meV'))} "
            f"| {stable} | {number(hr * 1e4 if hr is not None else None, '.2f')} | {number(md.get('steps_per_s'))} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[Dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sizes = sorted({r["size"] for r in rows})
    starts = list(dict.fromkeys(r["start"] for r in rows))
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / max(1, len(starts))
    for k, start in enumerate(starts):
        values = []
        for size in sizes:
            row = next((r for r in rows if r["start"] == start and r["size"] == size), None)
            values.append((row.get("finetune") or {}).get("test_force_mae_meV_A", np.nan) if row else np.nan)
        ax.bar(np.arange(len(sizes)) + k * width, values, width, label=start)
    ax.set_xticks(np.arange(len(sizes)) + 0.4 - width / 2, [f"{s} frames" for s in sizes])
    ax.set_ylabel("fine-tuned test force MAE (meV/Å)")
    ax.set_title("Pretraining-objective ablation (rMD17, fine-tuned)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(out: Path, molecule: str, sizes: Sequence[int], run_root: Path | None, study_dir: Path,
           md_time_ps: float) -> str:
    """Collect every finished stage into ablation.json / ablation.md / ablation.png; returns the table."""
    from .finetune_study import start_label

    rows: List[Dict[str, Any]] = []
    for size in sizes:
        for start in REFERENCE_STARTS[:1] + tuple(f"ablation_{v}" for v in VARIANTS) + REFERENCE_STARTS[1:]:
            row: Dict[str, Any] = {"start": start, "size": size}
            if start.startswith("ablation_"):
                run_dir = (run_root / start) if run_root else (REPO_ROOT / "runs" / start)
                row["pretrain_valid"] = last_validation(run_dir)
                fine = out / "runs" / f"{molecule}-{size}-{start_label(str(run_dir / 'best.pt'))}" / "result.json"
                row["finetune"] = json.loads(fine.read_text()) if fine.is_file() else None
            else:
                row["finetune"] = study_reference(study_dir, molecule, size, start)
                if start == "pretrained":
                    row["pretrain_valid"] = last_validation(REPO_ROOT / "runs" / "pretrain_cpu_small")
            md_result = out / "md" / f"{molecule}__{start}-{size}" / "result.json"
            md = json.loads(md_result.read_text()) if md_result.is_file() else None
            # the summary leaves out the h(r) histogram (500 numbers, in the run's result.json)
            row["md"] = {k: v for k, v in md.items() if k != "hr"} if md else None
            if row["finetune"] or row["md"] or row.get("pretrain_valid"):
                rows.append(row)
    return write_report(out, "ablation", __doc__.split("Protocol.")[1].strip(), rows, table(rows), plot,
                        rows_key="rows", molecule=molecule, md_time_ps=md_time_ps)


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ablation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--molecule", default="ethanol")
    parser.add_argument("--sizes", nargs="+", type=int, default=[100, 1000])
    parser.add_argument("--steps", type=int, default=2000, help="fine-tuning steps (the study's budget)")
    parser.add_argument("--md-time-ps", type=float, default=5.0)
    parser.add_argument("--test-frames", type=int, default=1000)
    parser.add_argument("--out", default=str(ABLATION_DIR))
    parser.add_argument("--run-root", help="folder for the pretraining runs (default: the configs' runs/)")
    parser.add_argument("--study-dir", default=str(Path(__file__).resolve().parent / "results" / "finetune_study"))
    parser.add_argument("--no-reference-md", action="store_true", help="skip MD of the study's scratch/pretrained runs")
    parser.add_argument("--report", action="store_true", help="train nothing; summarise finished stages")
    parser.add_argument("--quick", action="store_true", help="tiny model, few steps, 0.05 ps MD (pipeline check)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    out, study_dir = Path(args.out), Path(args.study_dir)
    run_root = Path(args.run_root) if args.run_root else (out / "pretrain" if args.quick else None)
    if args.quick:
        args.sizes, args.steps, args.md_time_ps, args.test_frames = [50], 4, 0.05, 20
    out.mkdir(parents=True, exist_ok=True)
    from .paths import DATA_ROOT

    if not args.report:
        for variant in args.variants:
            best = pretrain(variant, run_root, args.quick)
            for size in args.sizes:
                result = finetune(best, args.molecule, size, args.steps, out, DATA_ROOT, args.test_frames)
                print(json.dumps(result), flush=True)
                fine_best = out / "runs" / f"{args.molecule}-{size}-ablation_{variant}" / "best.pt"
                short_md(f"ablation_{variant}-{size}", fine_best, args.molecule, args.md_time_ps, out)
        if not args.no_reference_md and not args.quick:
            for size in args.sizes:
                for start in REFERENCE_STARTS:
                    weights = study_dir / "runs" / f"{args.molecule}-{size}-{start}" / "best.pt"
                    short_md(f"{start}-{size}", weights, args.molecule, args.md_time_ps, out)
    print(report(out, args.molecule, args.sizes, run_root, study_dir, args.md_time_ps))


if __name__ == "__main__":
    main()

"""Fine-tuning study on rMD17: pretrained -> fine-tuned ET against the same ET from scratch.

    python -m benchmarks.finetune_study                      # 4 molecules x {50,100,250,1000}
    python -m benchmarks.finetune_study --quick              # CI: ethanol, 50 frames, a few steps
    python -m benchmarks.finetune_study --molecules aspirin --sizes 50 100 --steps 3000
    python -m benchmarks.finetune_study --report             # summary of every finished run
    python -m benchmarks.finetune_study --bundle             # export rmd17-<mol> from the 1000-frame runs

Protocol (identical for both starts): train on the first N frames of the rMD17 ``train_01``
split (N = 1000 means the first 950, because the last 50 frames of the same 1000-frame split
are the validation set that selects the best EMA checkpoint), a fixed step budget, batch 8,
energy + force loss; test on the ``test_01`` split (never seen in training). Each run writes
its own JSON, so the study resumes where it stopped. Every invocation (and ``--report``, which
trains nothing) rebuilds ``finetune_study.json``, ``finetune_curves.png`` and the markdown table
``finetune_table.md`` in the output folder from all finished runs there, so runs made by separate
invocations (one per core, one per session) add up to one summary.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Dict, List

from forcefield_et.checkpoint import read_checkpoint
from forcefield_et.registry import BUNDLED_DIR, bundled_models
from forcefield_et.training import config_from_dict, train

from .io import finished_runs as io_finished_runs
from .io import write_report, write_text_atomic
from .paths import DATA_ROOT, rmd17_file
from .rmd17_errors import rmd17_test_errors
from .rmd17_models import add_training_domain, export_rmd17_model

STUDY_DIR = Path(__file__).resolve().parent / "results" / "finetune_study"
VALID_FRAMES = 50
SPLIT_FRAMES = 1000
GENERIC_CHECKPOINT_STEMS = ("best", "last", "model", "checkpoint")


def run_one(
    molecule: str,
    n_train: int,
    start: str,
    steps: int,
    out: Path,
    data_root: Path,
    test_frames: int | None,
    seed: int = 0,
    threads: int = 1,
    need_weights: bool = False,
) -> Dict[str, Any]:
    """Fine-tune (start='pretrained' or a checkpoint path) or train from scratch (start='scratch').

    A finished run (its ``result.json``) is reused. The weights (``best.pt``) are not committed; with
    ``need_weights`` a finished run whose weights are missing is trained again with the same recipe.
    The stored result, training log and config stay (they are the record of the original run, which
    the tables show; during the rebuild they wait in ``original_metrics.csv`` and
    ``original_config.yaml``, so an interrupted rebuild resumes without losing them); the rebuilt
    run's errors go beside them in ``rebuild.json``, with their relative differences, and its log in
    ``rebuild_metrics.csv``. A rebuild on the same machine gives the same bits; elsewhere it need
    not (docs/results.md lists the rebuilds against the stored runs)."""
    run_dir = out / "runs" / f"{molecule}-{n_train}-{start_label(start)}"
    result_path = run_dir / "result.json"
    stored = json.loads(result_path.read_text()) if result_path.exists() else None
    if stored is not None and (not need_weights or (run_dir / "best.pt").is_file()):
        return stored
    # the original run's log and config, kept on disk through a rebuild (an interrupted rebuild resumes)
    originals = {name: run_dir / f"original_{name}" for name in ("metrics.csv", "config.yaml")}
    if stored is not None:
        if any(path.is_file() for path in originals.values()):
            print(f"{run_dir.name}: resuming the rebuild of its weights", flush=True)
        else:
            print(f"{run_dir.name}: best.pt is missing; training the run again to rebuild it", flush=True)
            for name, backup in originals.items():
                if (run_dir / name).is_file():
                    write_text_atomic(backup, (run_dir / name).read_text())
            for stale in ("metrics.csv", "last.pt"):  # the training starts from step 0 with a new log
                (run_dir / stale).unlink(missing_ok=True)
    n_used = min(n_train, SPLIT_FRAMES - VALID_FRAMES)
    train_file = rmd17_file(molecule, "train", data_root)
    source = {
        "name": molecule,
        "format": "rmd17",
        "path": str(train_file),
        "objective": "energy_forces",
        "frames": f"0:{n_used}",
        # Validation: the last 50 frames of the same 1000-frame train split.
        "valid_path": str(train_file),
        "valid_frames": f"{SPLIT_FRAMES - VALID_FRAMES}:{SPLIT_FRAMES}",
    }
    objectives = {"energy_weight": 1.0, "force_weight": 10.0}
    config = study_config(run_dir, seed, [source], objectives, start, steps, batch_size=8, threads=threads)
    start_time = time.perf_counter()
    trainer, valid_metrics = train(config, progress=False)
    wall = time.perf_counter() - start_time
    best = run_dir / "best.pt"
    metrics = rmd17_test_errors(best, molecule, data_root, test_frames)
    result = {
        "molecule": molecule,
        "n_train": n_used,
        "n_train_requested": n_train,
        "start": start_label(start),
        "steps": steps,
        "wall_time_s": wall,
        "test_frames": metrics["frames"],
        "test_force_mae_meV_A": metrics["force_mae_meV_A"],
        "test_energy_mae_meV": metrics["energy_mae_meV"],
        "test_force_rmse_meV_A": metrics["force_rmse_meV_A"],
        "valid_force_mae_meV_A": valid_metrics.get(f"{molecule}/force_mae_meV_A"),
    }
    if stored is not None:
        (run_dir / "metrics.csv").replace(run_dir / "rebuild_metrics.csv")
        for name, backup in originals.items():
            if backup.is_file():
                backup.replace(run_dir / name)
        compared = [k for k in stored if k.startswith(("test_", "valid_")) and k != "test_frames"]
        rebuild = {"stored": {k: stored[k] for k in compared}, "rebuilt": {k: result[k] for k in compared},
                   "relative_difference": {k: result[k] / stored[k] - 1.0 for k in compared},
                   "rebuilt_wall_time_s": wall}
        write_text_atomic(run_dir / "rebuild.json", json.dumps(rebuild, indent=2))
        worst = max(abs(v) for v in rebuild["relative_difference"].values())
        print(f"{run_dir.name}: rebuilt; test force MAE {result['test_force_mae_meV_A']:.2f} meV/Å against "
              f"{stored['test_force_mae_meV_A']:.2f} stored (largest relative difference {worst:.2%}); result.json "
              f"kept, comparison in {run_dir / 'rebuild.json'}", flush=True)
        return stored
    write_text_atomic(result_path, json.dumps(result, indent=2))
    return result


def start_label(start: str) -> str:
    """Short name of a start: 'pretrained', 'scratch', or a checkpoint file's stem; a run folder's
    generic file name (best.pt, last.pt) is named after its folder, so that
    ``runs/ablation_denoise/best.pt`` becomes 'ablation_denoise'."""
    if start in ("pretrained", "scratch"):
        return start
    path = Path(start)
    if path.stem in GENERIC_CHECKPOINT_STEMS and path.parent.name:
        return path.parent.name
    return path.stem


def study_config(
    run_dir: Path,
    seed: int,
    sources: List[Dict[str, Any]],
    objectives: Dict[str, float],
    start: str,
    steps: int,
    batch_size: int,
    threads: int = 1,
):
    """The training config every study run shares: AdamW lr 5e-4 with 5 % warm-up and cosine decay to
    1e-6, EMA 0.99, validation and checkpoints every 10 % of ``steps``. ``start`` is 'scratch' (the
    bundled pretrained model's architecture, freshly initialised), 'pretrained' or a checkpoint path."""
    values: Dict[str, Any] = {
        "run_dir": str(run_dir),
        "seed": seed,
        "dtype": "float32",
        "sources": sources,
        "objectives": objectives,
        "optim": {
            "batch_size": batch_size,
            "max_steps": steps,
            "lr": 5e-4,
            "min_lr": 1e-6,
            "warmup_steps": max(1, steps // 20),
            "valid_every": max(1, steps // 10),
            "checkpoint_every": max(1, steps // 10),
            "log_every": max(1, steps // 50),
            "ema_decay": 0.99,
            "threads": threads,
        },
    }
    if start == "scratch":
        values["model"] = pretrained_architecture()
    else:
        values["init_from"] = start
    return config_from_dict(values)


def pretrained_architecture() -> Dict[str, Any]:
    """The bundled pretrained model's hyperparameters, so that scratch runs match it."""
    models = bundled_models()
    if "pretrained" not in models:
        raise FileNotFoundError(
            "the bundled pretrained checkpoint is missing (forcefield_et/checkpoints/pretrained.pt)"
        )
    hyper = dict(read_checkpoint(models["pretrained"])["metadata"]["hyperparameters"])
    return hyper


def plot(results: List[Dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    molecules = sorted({r["molecule"] for r in results})
    fig, axes = plt.subplots(1, len(molecules), figsize=(4 * len(molecules), 3.6), squeeze=False)
    for ax, molecule in zip(axes[0], molecules):
        for start, style in (("pretrained", "o-"), ("scratch", "s--")):
            rows = sorted(
                (r for r in results if r["molecule"] == molecule and r["start"] == start), key=lambda r: r["n_train"]
            )
            if rows:
                ax.loglog([r["n_train"] for r in rows], [r["test_force_mae_meV_A"] for r in rows], style, label=start)
        ax.set_title(molecule)
        ax.set_xlabel("training frames")
        ax.set_ylabel("test force MAE (meV/Å)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--molecules", nargs="+", default=["aspirin", "ethanol", "naphthalene", "salicylic"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[50, 100, 250, 1000])
    parser.add_argument(
        "--starts",
        nargs="+",
        default=["pretrained", "scratch"],
        help="'pretrained', 'scratch', or checkpoint paths (e.g. ablation models)",
    )
    parser.add_argument("--steps", type=int, default=2000, help="optimiser steps per run (batch 8)")
    parser.add_argument("--test-frames", type=int, default=1000)
    parser.add_argument("--data-root", default=str(DATA_ROOT), help="the shared data folder (holds rmd17/)")
    parser.add_argument("--out", default=str(STUDY_DIR))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="ethanol, 50 frames, 10 steps, 50 test frames")
    parser.add_argument("--report", action="store_true", help="train nothing; summarise the finished runs")
    parser.add_argument(
        "--bundle",
        action="store_true",
        help="train nothing; export each molecule's finished 1000-frame pretrained run as the bundled "
        "forcefield_et/checkpoints/rmd17-<molecule>.pt",
    )
    parser.add_argument(
        "--add-training-domain",
        action="store_true",
        help="train nothing; store the training domain (elements, composition) of each molecule's training "
        "frames in its bundled checkpoint's card (weights and the other entries unchanged)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.molecules, args.sizes, args.steps, args.test_frames = ["ethanol"], [50], 10, 50
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.bundle:
        for molecule in args.molecules:
            print(bundle(out, molecule))
        return
    if args.add_training_domain:
        for molecule in args.molecules:
            print(add_training_domain(BUNDLED_DIR / f"rmd17-{molecule}.pt", molecule, Path(args.data_root)))
        return
    if not args.report:
        for molecule in args.molecules:
            for size in args.sizes:
                for start in args.starts:
                    result = run_one(
                        molecule, size, start, args.steps, out, Path(args.data_root), args.test_frames,
                        threads=args.threads,
                    )
                    print(json.dumps(result))
    print(report(out))


def bundle(out: Path, molecule: str, destination_dir: Path = BUNDLED_DIR) -> Path:
    """Export ``<molecule>-1000-pretrained/best.pt`` as the inference checkpoint ``rmd17-<molecule>``,
    with a model card that states its data, recipe and test errors."""
    run_dir = out / "runs" / f"{molecule}-1000-pretrained"
    result_path = run_dir / "result.json"
    if not result_path.exists():
        raise FileNotFoundError(
            f"{result_path} not found: run python -m benchmarks.finetune_study --molecules {molecule} "
            "--sizes 1000 --starts pretrained first"
        )
    result = json.loads(result_path.read_text())
    card = {
        "name": f"rmd17-{molecule}",
        "description": (
            f"The bundled pretrained ET fine-tuned on rMD17 {molecule} (train_01 frames 0-{result['n_train'] - 1}; "
            f"best EMA checkpoint by the validation frames {SPLIT_FRAMES - VALID_FRAMES}-{SPLIT_FRAMES - 1}) with "
            f"benchmarks/finetune_study.py: {result['steps']} steps of batch 8, energy + force loss."
        ),
        "limits": f"Fitted to one molecule: use it for {molecule} only.",
        "test_errors": {
            "split": "rmd17 test_01",
            "frames": result["test_frames"],
            "force_mae_meV_A": result["test_force_mae_meV_A"],
            "energy_mae_meV": result["test_energy_mae_meV"],
        },
    }
    return export_rmd17_model(run_dir, destination_dir / f"rmd17-{molecule}.pt", molecule, card, result["n_train"])


def finished_runs(out: Path) -> List[Dict[str, Any]]:
    """Results of every finished run under ``out/runs``, ordered by molecule, size and start."""
    return io_finished_runs(out, lambda r: (r["molecule"], r["n_train"], r["start"]))


def table(results: List[Dict[str, Any]]) -> str:
    """Markdown table: test force / energy MAE of scratch and pretrained per molecule and size."""
    by_key = {(r["molecule"], r["n_train"], r["start"]): r for r in results}
    lines = [
        "| molecule | train frames | force MAE scratch | force MAE pretrained | scratch / pretrained "
        "| energy MAE scratch | energy MAE pretrained |",
        "|---|---|---|---|---|---|---|",
    ]

    def cell(run: Dict[str, Any] | None, key: str) -> str:
        return f"{run[key]:.1f}" if run else "not run"

    for molecule, n_train in sorted({(m, n) for m, n, _ in by_key}):
        scratch, pretrained = by_key.get((molecule, n_train, "scratch")), by_key.get((molecule, n_train, "pretrained"))
        ratio = (
            f"{scratch['test_force_mae_meV_A'] / pretrained['test_force_mae_meV_A']:.2f}×"
            if scratch and pretrained
            else "–"
        )
        lines.append(
            f"| {molecule} | {n_train} | {cell(scratch, 'test_force_mae_meV_A')} "
            f"| {cell(pretrained, 'test_force_mae_meV_A')} | {ratio} | {cell(scratch, 'test_energy_mae_meV')} "
            f"| {cell(pretrained, 'test_energy_mae_meV')} |"
        )
    return "\n".join(lines) + "\n"


MOLECULE_NAMES = {"salicylic": "salicylic acid"}


def summary_table(results: List[Dict[str, Any]], sizes: Dict[int, str] | None = None) -> str:
    """Markdown table: test force MAE scratch -> pretrained (and their ratio) per molecule at the
    given training-set sizes (default 50 and 950 frames, shown as "1000 frames": 950 train + 50
    validation)."""
    sizes = sizes or {50: "50 frames", 950: "1000 frames"}
    by_key = {(r["molecule"], r["n_train"], r["start"]): r for r in results}
    lines = ["| molecule | " + " | ".join(sizes.values()) + " |", "|---" * (len(sizes) + 1) + "|"]
    for molecule in sorted({m for m, _, _ in by_key}):
        cells = []
        for n_train in sizes:
            scratch = by_key.get((molecule, n_train, "scratch"))
            pretrained = by_key.get((molecule, n_train, "pretrained"))
            if scratch and pretrained:
                a, b = scratch["test_force_mae_meV_A"], pretrained["test_force_mae_meV_A"]
                cells.append(f"{a:.1f} → {b:.1f} ({a / b:.2f}×)")
            else:
                cells.append("not run")
        lines.append(f"| {MOLECULE_NAMES.get(molecule, molecule)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report(out: Path) -> str:
    """Rebuild the summary JSON, the learning-curve plot and the markdown table from ``out/runs``;
    returns the table."""
    results = finished_runs(out)
    return write_report(out, "finetune_study", __doc__.split("Protocol")[1].split("Each run")[0].strip(), results,
                        table(results), plot, table_name="finetune_table.md", figure_name="finetune_curves.png")

if __name__ == "__main__":
    main()

"""QM9 U0 with the pretrained encoder: 5-fold cross-validation on 500 molecules, pretrained vs scratch.

    python -m benchmarks.qm9_property                      # 5 folds x {pretrained, scratch}
    python -m benchmarks.qm9_property --quick              # CI: 1 fold, a few steps

A small-data check of the paper's "on par on QM9" claim, NOT the 110k-molecule QM9 benchmark.
Data: ../shared/data/qm9/qm9_500_U0_eV.db (the first 500 QM9 molecules, B3LYP/6-31G(2df,p)
equilibrium geometries, U0 in eV). The molecules are shuffled once (seed 0) and cut into 5 folds
of 100; for fold k the other 400 are split into 360 training and 40 validation molecules (the
validation set selects the best EMA checkpoint), and fold k is the test set, less any molecule
with an element that none of the fold's training molecules has (CF4, the only fluorine molecule,
falls in fold 4's test set; it is listed in that run's ``test_excluded``). Both starts train
the same architecture (the bundled pretrained model's) with the same steps, schedule and loss,
``objective: energy`` (per-atom U0 MSE; per-element reference energies are fitted by least
squares on the training molecules first). The pretrained start loads the bundled ``pretrained``
weights; the scratch start is freshly initialised.

Note on data overlap: these 500 molecules' geometries (not their U0) were used in pretraining for
zero-force regularisation and denoising, and GFN2-xTB MD started from them; report results with
that in mind. Each run writes its own result.json, so the study resumes where it stopped.
Outputs qm9_property.json and qm9_property.png in --out.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import torch

from forcefield_et import load_model
from forcefield_et.data import ConformationSet, read_qm9
from forcefield_et.evaluation import error_metrics, predict
from forcefield_et.files import file_sha256
from forcefield_et.registry import resolve_model_path
from forcefield_et.training import train

from .finetune_study import pretrained_architecture, study_config
from .io import write_json_atomic
from .machine import machine_info
from .paths import DATA_ROOT

DATA_FILE = DATA_ROOT / "qm9" / "qm9_500_U0_eV.db"
N_FOLDS = 5
N_VALID = 40


def fold_indices(n: int, n_folds: int, fold: int, seed: int = 0) -> Dict[str, np.ndarray]:
    """Train / valid / test frame indices of ``fold`` (disjoint, covering all n frames)."""
    order = np.random.default_rng(seed).permutation(n)
    folds = np.array_split(order, n_folds)
    test = folds[fold]
    rest = np.concatenate([f for k, f in enumerate(folds) if k != fold])
    return {"train": rest[N_VALID:], "valid": rest[:N_VALID], "test": test}


def testable_molecules(data: ConformationSet, split: Dict[str, np.ndarray]) -> Tuple[np.ndarray, List[Dict[str, Any]]]:
    """The fold's test molecules whose elements all occur in its training molecules, and the others
    (index and formula): a per-element reference energy fitted without an element is meaningless,
    so such a molecule (in these 500, CF4, the only one with fluorine) cannot be tested."""
    trained = set().union(*(set(data.to_ase(int(i)).numbers.tolist()) for i in split["train"]))
    keep, excluded = [], []
    for index in split["test"]:
        atoms = data.to_ase(int(index))
        if set(atoms.numbers.tolist()) <= trained:
            keep.append(int(index))
        else:
            excluded.append({"index": int(index), "formula": atoms.get_chemical_formula()})
    return np.asarray(keep, dtype=int), excluded


def _write_extxyz(data: ConformationSet, indices: np.ndarray, path: Path) -> None:
    from ase.io import write

    write(str(path), [data.to_ase(int(i)) for i in indices], format="extxyz")


def start_model(start: str) -> str:
    """What a run of ``start`` starts from: the SHA-256 of the bundled pretrained checkpoint, or for
    'scratch' the architecture it copies (a result of another start model is not reused)."""
    if start == "scratch":
        return "scratch: " + json.dumps(pretrained_architecture(), sort_keys=True)
    return f"{start}: sha256 {file_sha256(resolve_model_path(start))}"


def recorded_start_model(result: Dict[str, Any], run_dir: Path) -> str | None:
    """The start model of a finished run: recorded in its result, or, for a scratch run from before
    the record, the architecture of its configuration; None when unknown."""
    if "start_model" in result:
        return result["start_model"]
    config_path = run_dir / "config.yaml"
    if result["start"] == "scratch" and config_path.is_file():
        import yaml

        architecture = yaml.safe_load(config_path.read_text()).get("model") or {}
        keys = pretrained_architecture().keys()
        return "scratch: " + json.dumps({key: architecture.get(key) for key in keys}, sort_keys=True)
    return None


def run_fold(data: ConformationSet, fold: int, start: str, steps: int, batch_size: int, out: Path,
             threads: int = 1) -> Dict[str, Any]:
    """Train (or read back) one fold's run of ``start`` and its test U0 errors; a finished run of
    another start model (a newer bundled ``pretrained``) is trained again."""
    run_dir = out / "runs" / f"fold{fold}-{start}"
    result_path = run_dir / "result.json"
    start_from = start_model(start)
    if result_path.exists():
        result = json.loads(result_path.read_text())
        recorded = recorded_start_model(result, run_dir)
        if recorded == start_from:
            return result
        print(f"fold {fold}, {start}: the finished run started from another model ({recorded or 'not recorded'}); "
              f"training it again from {start_from}", flush=True)
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    split = fold_indices(len(data), N_FOLDS, fold)
    for name in ("train", "valid"):
        _write_extxyz(data, split[name], run_dir / f"{name}.xyz")
    source = {"name": "qm9_u0", "format": "ase", "path": str(run_dir / "train.xyz"), "objective": "energy",
              "valid_path": str(run_dir / "valid.xyz")}
    config = study_config(run_dir, fold, [source], {"energy_weight": 1.0}, start, steps, batch_size, threads)
    started = time.perf_counter()
    train(config, progress=False)
    wall = time.perf_counter() - started
    model = load_model(run_dir / "best.pt", dtype="float32")
    test_indices, excluded = testable_molecules(data, split)
    test = data.subset(test_indices)
    with torch.enable_grad():
        metrics = error_metrics(test, predict(model, test))
    result = {
        "fold": fold, "start": start, "steps": steps, "batch_size": batch_size, "wall_time_s": wall,
        "start_model": start_from,
        "n_train": len(split["train"]), "n_valid": len(split["valid"]), "n_test": len(test_indices),
        "test_excluded": excluded,
        "test_u0_mae_meV": metrics["energy_mae_meV"], "test_u0_mae_meV_per_atom": metrics["energy_mae_meV_per_atom"],
    }
    write_json_atomic(result_path, result)
    return result


def plot(results: List[Dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    starts = sorted({r["start"] for r in results})
    folds = sorted({r["fold"] for r in results})
    fig, ax = plt.subplots(figsize=(6, 3.6))
    width = 0.8 / len(starts)
    for k, start in enumerate(starts):
        values = [next((r["test_u0_mae_meV"] for r in results if r["fold"] == f and r["start"] == start), np.nan)
                  for f in folds]
        ax.bar(np.arange(len(folds)) + k * width, values, width, label=start)
    ax.set_xticks(np.arange(len(folds)) + 0.4 - width / 2, [f"fold {f}" for f in folds])
    ax.set_ylabel("test U0 MAE (meV)")
    ax.set_title("QM9 U0, 500 molecules, 5-fold CV")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(summary: Dict[str, Any]) -> str:
    """Markdown: test U0 MAE of both starts per fold, and their means."""
    runs = {(r["fold"], r["start"]): r for r in summary["runs"]}
    lines = ["| fold | test molecules | U0 MAE pretrained (meV) | U0 MAE scratch (meV) | scratch / pretrained |",
             "|---|---|---|---|---|"]
    for fold in sorted({f for f, _ in runs}):
        pretrained, scratch = runs.get((fold, "pretrained")), runs.get((fold, "scratch"))
        if not (pretrained and scratch):
            continue
        molecules = str(pretrained["n_test"])
        excluded = [m["formula"] for m in pretrained.get("test_excluded") or []]
        if excluded:
            molecules += f" ({', '.join(excluded)} excluded)"
        a, b = pretrained["test_u0_mae_meV"], scratch["test_u0_mae_meV"]
        lines.append(f"| {fold} | {molecules} | {a:.1f} | {b:.1f} | {b / a:.2f} |")
    p_mean, s_mean = summary["pretrained_mean_mae_meV"], summary["scratch_mean_mae_meV"]
    lines.append(f"| mean ± std | | **{p_mean:.1f} ± {summary['pretrained_std_mae_meV']:.1f}** "
                 f"| **{s_mean:.1f} ± {summary['scratch_std_mae_meV']:.1f}** "
                 f"| {s_mean / p_mean:.2f} (ratio of the means) |")
    return "\n".join(lines) + "\n"


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", nargs="+", type=int, default=list(range(N_FOLDS)))
    parser.add_argument("--starts", nargs="+", default=["pretrained", "scratch"])
    parser.add_argument("--steps", type=int, default=2000, help="optimiser steps per run")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--data", default=str(DATA_FILE))
    parser.add_argument("--out", default="benchmarks/results/qm9_property")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="fold 0 only, 10 steps (pipeline check)")
    args = parser.parse_args(argv)
    if args.quick:
        args.folds, args.steps = [0], 10
    data_path = Path(args.data)
    if not data_path.is_file():
        raise FileNotFoundError(f"{data_path} not found (../shared/data/qm9 is needed)")
    data = read_qm9(data_path)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for fold in args.folds:
        for start in args.starts:
            result = run_fold(data, fold, start, args.steps, args.batch_size, out, args.threads)
            print(json.dumps(result))
            results.append(result)
    summary: Dict[str, Any] = {"benchmark": "qm9_property", "machine": machine_info(), "runs": results}
    for start in args.starts:
        maes = [r["test_u0_mae_meV"] for r in results if r["start"] == start]
        summary[f"{start}_mean_mae_meV"] = statistics.mean(maes)
        summary[f"{start}_std_mae_meV"] = statistics.stdev(maes) if len(maes) > 1 else 0.0
    path = out / "qm9_property.json"
    write_json_atomic(path, summary)
    plot(results, out / "qm9_property.png")
    return summary


if __name__ == "__main__":
    main()

"""Does a committee's force spread warn before an MD run breaks a bond? Lead time on rMD17 MD runs.

    python -m benchmarks.md_warning --train-watcher      # the watcher committee (resumable, ~6 CPU-min)
    python -m benchmarks.md_stability --molecules aspirin --models s50 --time-ps 60 --save-every 20 \\
        --model-path s50=benchmarks/results/md_warning/drivers/aspirin-50-scratch.pt \\
        --out runs/md_warning/out --work runs/md_warning/work
    python -m benchmarks.prepare --molecules aspirin --models et-scratch   # the short-budget scratch ET
    python -m benchmarks.md_stability --molecules aspirin --models et-scratch --time-ps 100 --save-every 20 \\
        --out runs/md_warning/out --work runs/md_warning/work
    python -m benchmarks.md_stability --molecules aspirin --models et-pretrained-finetuned --time-ps T \\
        --save-every 20 --out runs/md_warning/out --work runs/md_warning/work   # T >= the break times above
    python -m benchmarks.md_warning --runs runs/md_warning/out --work runs/md_warning/work \\
        --stable et-pretrained-finetuned --collapsing s50 et-scratch --stride 5
    python -m benchmarks.md_warning --molecule ethanol --train-watcher --runs runs/md_warning/out \\
        --work runs/md_warning/work --stable et-pretrained-finetuned --collapsing et-scratch --stride 5

Watcher (``--train-watcher``, into ``--watcher``, default ``<out>/watcher/``): a heads committee
(4 heads) fine-tuned from ``pretrained`` with the short recipe of
:func:`benchmarks.uncertainty.fine_tuning_config` on the rMD17 ``train_01`` frames 0-949 of ``--molecule``
(default aspirin),
validated on frames 950-999 of the same file (train split only; 1000 frames in all), 1200 steps of
batch 8. Its ``best.pt`` and ``committee.json`` are kept with the results, so the watching step
reruns without retraining. The collapsing runs' drivers are kept there too, in ``drivers/``: the
50-frame scratch ET of :mod:`benchmarks.finetune_converged` and the scratch ET of the short-budget
fine-tuning study (:mod:`benchmarks.finetune_study`: 2,000 steps on 950 frames; ``et-scratch`` of
:mod:`benchmarks.md_stability`).

Protocol: the MD-stability runs (:mod:`benchmarks.md_stability`: 500 K Nosé-Hoover chain, 0.5 fs,
collapse = the first saved frame with a bond more than 0.5 Å from its reference length) are driven
by one model each; a committee that does not drive them (``--watcher``) is evaluated afterwards on
every saved frame (the watcher does not change the dynamics, so this equals watching online, e.g.
with ``forcefield-et md --max-force-std`` or ``ForceStdReporter``). Per frame: the largest per-atom
force std of the watcher (eV/Å). Threshold: the largest value reached on any frame of the stable
runs (``--stable``, runs that did not collapse). For each collapsing run (``--collapsing``): the first
saved frame before the break whose value exceeds the threshold, and the lead time = break time -
that frame's time (ps). A run still in progress is read from its resumable state (marked partial).

Writes ``md_warning.json`` and ``md_warning.png`` to ``--out`` (default
``benchmarks/results/md_warning/`` for aspirin, ``benchmarks/results/md_warning_<molecule>/`` for the
others; for a folder in ``benchmarks/results/``, the figure is copied to ``docs/img/<folder>.png``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch

from forcefield_et.data import ConformationSet
from forcefield_et.registry import load_committee

from .io import write_json_atomic
from .machine import machine_info
from .paths import DATA_ROOT, repo_relative, rmd17_file
from .uncertainty import fine_tuning_config, frame_reduce, predict_committee, training_cpu_seconds

RESULTS_DIR = Path(__file__).resolve().parent / "results" / "md_warning"
DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"
WATCHER_DIR = RESULTS_DIR / "watcher"
MOLECULE = "aspirin"
WATCHER_HEADS = 4
WATCHER_STEPS = 1200
WATCHER_TRAIN_FRAMES = "0:950"  # rMD17 train_01 only; never test frames
WATCHER_VALID_FRAMES = "950:1000"


def results_dir(molecule: str = MOLECULE) -> Path:
    """The default results folder of ``molecule``'s runs (``md_warning`` for aspirin, ``md_warning_<molecule>``)."""
    return RESULTS_DIR if molecule == MOLECULE else RESULTS_DIR.parent / f"md_warning_{molecule}"


def watcher_config(run_dir: Path = WATCHER_DIR, data_root: Path = DATA_ROOT, steps: int = WATCHER_STEPS,
                   molecule: str = MOLECULE) -> Any:
    """The watcher's training configuration: ``molecule``'s ``train_01`` frames 0-949, validated on 950-999."""
    train_file = str(rmd17_file(molecule, "train", data_root))
    source = {"name": molecule, "format": "rmd17", "path": train_file, "objective": "energy_forces",
              "frames": WATCHER_TRAIN_FRAMES, "valid_path": train_file, "valid_frames": WATCHER_VALID_FRAMES}
    return fine_tuning_config(run_dir, source, steps)


def train_watcher(run_dir: Path = WATCHER_DIR, data_root: Path = DATA_ROOT, steps: int = WATCHER_STEPS,
                  molecule: str = MOLECULE) -> Path:
    """Train (or resume, or keep a finished) heads committee into ``run_dir``; returns its directory."""
    from forcefield_et.training.committee import train_head_committee

    train_head_committee(watcher_config(run_dir, data_root, steps, molecule), WATCHER_HEADS, progress=False)
    return run_dir


def load_run(runs: Path, work: Path, model: str, molecule: str = MOLECULE) -> Dict[str, Any]:
    """Saved frames [T, N, 3], times (ps), the collapse time (or None), and whether the run is finished."""
    name = f"{molecule}__{model}"
    result_path = runs / "runs" / name / "result.json"
    result = json.loads(result_path.read_text()) if result_path.is_file() else None
    trajectory, state = work / name / "trajectory.npz", work / name / "state.npz"
    if result is not None and trajectory.is_file():
        data = np.load(trajectory)
        frames, numbers = data["positions"], data["numbers"]
        times = data["time_ps"]
    elif state.is_file():  # in progress: the frames of the last state checkpoint
        saved = np.load(state)
        md_cpu_s = float(saved["md_cpu_s"]) if "md_cpu_s" in saved.files else None
        return {"frames": saved["frames"], "numbers": None, "times": None, "result": None,
                "partial": True, "name": name, "md_cpu_s": md_cpu_s}
    else:
        raise FileNotFoundError(f"no trajectory or state for {name} under {work}")
    return {"frames": frames, "numbers": numbers, "times": times, "result": result, "partial": False, "name": name,
            "md_cpu_s": result.get("md_cpu_s")}


def watch(committee: Any, frames: np.ndarray, numbers: np.ndarray, stride: int) -> np.ndarray:
    """The largest per-atom force std (eV/Å) of every ``stride``-th frame (finite frames only; NaN otherwise)."""
    picks = np.arange(0, len(frames), stride)
    out = np.full(len(picks), np.nan)
    ok = [i for i, f in enumerate(picks) if np.isfinite(frames[f]).all()]
    if ok:
        chosen = frames[picks[ok]].astype(np.float64)
        n = len(numbers)
        data = ConformationSet(z=np.tile(numbers, len(chosen)).astype(np.int64), pos=chosen.reshape(-1, 3),
                               n_atoms=np.full(len(chosen), n, dtype=np.int64))
        std = predict_committee(committee, data)["forces_std"]
        out[ok] = frame_reduce(std, data.n_atoms, "max")
    return out


def lead_times(runs: Dict[str, Dict[str, Any]]) -> float:
    """Threshold = the largest ``max_force_std_eV_A`` of the runs with role 'stable'; adds to every
    'collapsing' run ``first_crossing_ps`` (the first ``time_ps`` above the threshold, or None),
    ``lead_time_ps`` (``break_ps`` minus it, or None) and ``frames_above_threshold``. Returns the threshold."""
    stable_max = [np.nanmax(r["max_force_std_eV_A"]) for r in runs.values() if r["role"] == "stable"]
    if not stable_max:
        raise ValueError("lead times need at least one stable run")
    threshold = float(max(stable_max))
    for r in runs.values():
        if r["role"] != "collapsing":
            continue
        std, times = np.asarray(r["max_force_std_eV_A"], dtype=float), np.asarray(r["time_ps"], dtype=float)
        above = np.flatnonzero(std > threshold)
        r["first_crossing_ps"] = float(times[above[0]]) if len(above) else None
        r["lead_time_ps"] = (r["break_ps"] - r["first_crossing_ps"]
                             if r.get("break_ps") is not None and r["first_crossing_ps"] is not None else None)
        r["frames_above_threshold"] = int(len(above))
    return threshold


def watcher_info(watcher: str) -> Dict[str, Any] | None:
    """Kind, size, training frames and steps, validation and training CPU of a committee directory
    trained by :func:`train_watcher` (None for anything else, e.g. a comma-separated list)."""
    directory = Path(watcher)
    if directory.name == "committee.json":
        directory = directory.parent
    committee_file = directory / "committee.json"
    if not committee_file.is_file():
        return None
    committee = json.loads(committee_file.read_text())
    info: Dict[str, Any] = {"kind": committee.get("kind", "checkpoints"),
                            "members": committee.get("heads", len(committee["members"]))}
    validation = committee.get("validation") or {}
    keys = [k for k in validation if k.endswith("/force_mae_meV_A")]  # one source: the molecule's
    if keys:
        info["validation_force_mae_meV_A"] = float(validation[keys[0]])
    config = directory / "config.yaml"
    if config.is_file():
        import yaml

        settings = yaml.safe_load(config.read_text())
        source = settings["sources"][0]
        paths = source["path"] if isinstance(source["path"], list) else [source["path"]]
        info.update(train_file=", ".join(Path(p).name for p in paths), train_frames=source.get("frames"),
                    valid_frames=source.get("valid_frames"), init_from=settings.get("init_from"),
                    steps=settings["optim"]["max_steps"])
    info["training_cpu_s"] = training_cpu_seconds(directory)
    return info


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-watcher", action="store_true",
                        help=f"train the watcher committee into --watcher (resumes; default {WATCHER_STEPS} steps), "
                        "then watch if --runs is given")
    parser.add_argument("--watcher-steps", type=int, default=WATCHER_STEPS, help="with --train-watcher")
    parser.add_argument("--molecule", default=MOLECULE, help="the rMD17 molecule of the runs and the watcher")
    parser.add_argument("--runs", type=Path, help="md_stability --out folder")
    parser.add_argument("--work", type=Path, help="md_stability --work folder")
    parser.add_argument("--stable", nargs="+", help="model names of the stable runs")
    parser.add_argument("--collapsing", nargs="+", help="model names of the collapsing runs")
    parser.add_argument("--watcher",
                        help="committee: directory, committee.json or checkpoints (default: <out>/watcher, where "
                        "--train-watcher trains it)")
    parser.add_argument("--save-interval-ps", type=float, default=0.01,
                        help="time between saved frames (md_stability --save-every x --timestep)")
    parser.add_argument("--stride", type=int, default=1, help="watch every k-th saved frame")
    parser.add_argument("--out", type=Path, help="results folder (default: benchmarks/results/md_warning for "
                        "aspirin, benchmarks/results/md_warning_<molecule> for the others)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.out = args.out or results_dir(args.molecule)
    args.watcher = args.watcher or str(args.out / "watcher")
    if args.train_watcher:
        start = time.process_time()
        train_watcher(Path(args.watcher), steps=args.watcher_steps, molecule=args.molecule)
        print(f"watcher committee in {args.watcher} ({time.process_time() - start:.0f} CPU-s in this invocation)")
        if args.runs is None:
            return
    missing = [name for name in ("runs", "work", "stable", "collapsing") if getattr(args, name) is None]
    if missing:
        parser.error("watching needs " + ", ".join("--" + name for name in missing))
    committee = load_committee(args.watcher.split(",") if "," in args.watcher else args.watcher, dtype="float32")
    numbers = None
    start_cpu = time.process_time()
    runs: Dict[str, Dict[str, Any]] = {}
    for role, names in (("stable", args.stable), ("collapsing", args.collapsing)):
        for model in names:
            run = load_run(args.runs, args.work, model, args.molecule)
            if run["numbers"] is None:
                if numbers is None:
                    from forcefield_et.data import read_rmd17

                    test = read_rmd17(rmd17_file(args.molecule, "test"), max_frames=1)
                    numbers = test.z[: int(test.n_atoms[0])]
                run["numbers"] = numbers
            numbers = run["numbers"] if numbers is None else numbers
            frames = run["frames"]
            times = (np.arange(len(frames)) * args.save_interval_ps if run["times"] is None
                     else np.asarray(run["times"]))
            result = run["result"] or {}
            collapsed = bool(result.get("collapsed")) if result else False
            break_ps = float(result["stability_ps"]) if collapsed else None
            if collapsed:  # frames strictly before the break
                keep = times < break_ps - 1e-9
                frames, times = frames[keep], times[keep]
            std = watch(committee, frames, run["numbers"], args.stride)
            runs[model] = {"role": role, "driver": result.get("model_description"), "partial": run["partial"],
                           "collapsed": collapsed, "break_ps": break_ps,
                           "simulated_ps": float(times[-1]) if len(times) else 0.0,
                           "collapse_reason": result.get("collapse_reason") or result.get("reason"),
                           "md_cpu_s": run["md_cpu_s"],
                           "time_ps": times[:: args.stride].round(4).tolist(),
                           "max_force_std_eV_A": std.round(5).tolist()}
    threshold = lead_times(runs)
    summary = {
        "molecule": args.molecule,
        "protocol": __doc__.split("Writes")[0].strip(),
        "watcher": repo_relative(args.watcher),
        "watcher_info": watcher_info(args.watcher),
        "threshold_eV_A": threshold,
        "stable_runs_length_ps": {m: r["simulated_ps"] for m, r in runs.items() if r["role"] == "stable"},
        "runs": runs,
        "watch_cpu_s": time.process_time() - start_cpu,
        "machine": machine_info(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "md_warning.json", summary)
    plot(summary, args.out / "md_warning.png")
    if args.out.resolve().parent == RESULTS_DIR.parent.resolve():  # a results folder: the figure the docs show
        shutil.copyfile(args.out / "md_warning.png", DOCS_IMG / f"{args.out.name}.png")
    for model, r in runs.items():
        print(f"{model} ({r['role']}): max std {np.nanmax(r['max_force_std_eV_A']):.3f} eV/Å over "
              f"{r['simulated_ps']:.2f} ps; break {r['break_ps']}; lead {r.get('lead_time_ps')}")
    print(f"threshold {threshold:.3f} eV/Å")


def plot(summary: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.2))
    for k, (model, r) in enumerate(summary["runs"].items()):
        colour = f"C{k}"
        if r["role"] == "stable":
            label = f"{model} (stable, driver)"
        elif r.get("break_ps") is not None:
            label = f"{model} (driver; bond breaks at {r['break_ps']:.2f} ps)"
        else:
            label = f"{model} (driver; no bond break within {r['simulated_ps']:.2f} ps)"
        ax.plot(r["time_ps"], 1000 * np.asarray(r["max_force_std_eV_A"], dtype=float), lw=0.8, color=colour,
                label=label)
        if r.get("break_ps") is not None:
            ax.axvline(r["break_ps"], color=colour, ls=":", lw=1.2)
            ax.text(r["break_ps"], 0.02, " bond break", color=colour, rotation=90, va="bottom", fontsize=8,
                    transform=ax.get_xaxis_transform())
        if r.get("first_crossing_ps") is not None:
            ax.plot([r["first_crossing_ps"]], [1000 * summary["threshold_eV_A"]], "v", color=colour, ms=8,
                    label=f"{model}: first frame above the threshold")
    ax.axhline(1000 * summary["threshold_eV_A"], color="k", ls="--", lw=1,
               label=f"threshold: max of the stable run(s), {1000 * summary['threshold_eV_A']:.0f} meV/Å")
    ax.set_yscale("log")
    ax.set_xlabel("time (ps), 500 K")
    ax.set_ylabel("largest per-atom force std (meV/Å)")
    ax.set_title(f"rMD17 {summary.get('molecule', MOLECULE)} MD at 500 K, watched by {Path(summary['watcher']).name}")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()

"""Repairing an MD collapse with DFT frames of the collapse: label, fine-tune, run again.

    python -m benchmarks.collapse_repair                      # the collapsed salicylic acid run, up to 3 rounds
    python -m benchmarks.collapse_repair --run salicylic__et-pretrained-finetuned --frames 20 --rounds 2
    python -m benchmarks.collapse_repair --quick              # CI: a tiny model, coarse DFT, short MD
    python -m benchmarks.collapse_repair --bundle             # the repaired model replaces the bundled one

Protocol, for one collapsed run of ``benchmarks.md_stability`` (default: the converged salicylic acid
model with the pretrained start, in ``benchmarks/results/md_stability_converged``). Round r = 1, 2, ...:

1. frames: the last ``--frames`` saved frames (0.05 ps apart) up to and including the frame that broke
   the bond criterion, of the collapsed trajectory of the round before (round 1: the run itself).
2. labels: PBE/def2-SVP, rMD17's level of theory, with PySCF (the code of ``benchmarks.collapse_dft``).
3. training: the collapsed run's model, fine-tuned on its own training frames (rMD17 ``train_01``
   frames 0-949; validation 950-999, which selects the weights) with every round's DFT frames so far
   replayed in each batch (``--ratio`` of its frames, forces only: the PySCF and rMD17 energy zeros need
   not agree), with the recipe of ``benchmarks.finetune_converged`` at the learning rate ``--lr``, for
   ``--budget-hours`` CPU-hours or until the validation error stops improving.
4. test: force and energy MAE on all 1000 ``test_01`` frames (the rMD17 accuracy must hold).
5. MD: the protocol of the collapsed run again (``benchmarks.md_stability``: the same start frame,
   velocity seed, 500 K Nosé-Hoover chain and 0.5 fs, 300 ps) with the round's model. A stable run ends
   the repair; a collapse starts the next round from its trajectory.

The repaired models use DFT frames that no rMD17 protocol has (the model's own trajectory, labelled
here): report them apart from the rMD17 results. DFT labels, training runs and MD states go to
``runs/collapse_repair/<run>/`` and resume; the results (``collapse_repair.json``, ``collapse_repair.md``,
and the MD results under ``md/``) to ``--out`` (default ``benchmarks/results/collapse_repair/``).

``--bundle`` trains nothing: where the repaired model was a bundled ``rmd17-<molecule>`` checkpoint, the
stable round's weights replace it, with the bundled card's entries, the round's test errors, and the repair
(frames, level of theory, CPU time, MD) in its description and its ``repair`` entry.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch

from forcefield_et.training import train, with_replay

from .collapse_dft import MD_RESULTS, MD_WORK, labelled_window, model_file, window
from .finetune_converged import VALID, fine_tuned_from, recipe_config
from .io import write_json_atomic, write_text_atomic
from .machine import machine_info
from .paths import DATA_ROOT, RUNS_DIR, checkout_path, repo_relative, rmd17_file
from .rmd17_errors import rmd17_test_errors

RESULTS_DIR = Path(__file__).resolve().parent / "results" / "collapse_repair"
WORK_DIR = RUNS_DIR / "collapse_repair"
DEFAULT_RUN = "salicylic__et-pretrained-finetuned"


def repair_frames_file(labels: List[Dict[str, np.ndarray]], z: np.ndarray, path: Path) -> Path:
    """Write every round's DFT frames (positions Å, forces eV/Å) to one extxyz file for the trainer."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    frames = []
    for round_labels in labels:
        for positions, energy, forces in zip(round_labels["positions"], round_labels["energy"], round_labels["forces"]):
            atoms = Atoms(numbers=z, positions=positions)
            atoms.calc = SinglePointCalculator(atoms, energy=float(energy), forces=forces)
            frames.append(atoms)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    write(temporary, frames, format="extxyz")
    temporary.replace(path)
    return path


def train_round(molecule: str, start: Path, frames_file: Path, run_dir: Path, data_root: Path,
                args: argparse.Namespace):
    """Fine-tune ``start`` on the molecule's 950 rMD17 training frames with the repair frames replayed."""
    train_file = str(rmd17_file(molecule, "train", data_root))
    source = {"name": molecule, "format": "rmd17", "path": train_file, "objective": "energy_forces",
              "frames": "0:950", "valid_path": train_file, "valid_frames": VALID}
    sources = with_replay([source], [str(frames_file)], args.ratio, format="ase")
    sources[-1]["name"] = "repair"
    optim = {"time_budget_s": 3600 * args.budget_hours, "lr": args.lr}
    if args.quick:
        optim.update(compile=False, valid_every=25)
    trainer, _ = train(recipe_config(run_dir, sources, 1000, str(start), optim), progress=False)
    return trainer


def run_md(molecule: str, name: str, model_path: Path, protocol: Dict[str, Any], out: Path, work: Path,
           data_root: Path, quick: bool) -> Dict[str, Any]:
    """The collapsed run's MD protocol with another model (``benchmarks.md_stability``, resumable)."""
    from . import md_stability

    argv = ["--molecules", molecule, "--models", name, "--model-path", f"{name}={model_path}",
            "--out", str(out), "--work", str(work), "--data-root", str(data_root), "--quiet",
            "--time-ps", f"{protocol['time_ps']:g}", "--temperature", f"{protocol['temperature_K']:g}",
            "--timestep", f"{protocol['timestep_fs']:g}", "--save-every", str(protocol["save_every"]),
            "--tdamp", f"{protocol['tdamp_fs']:g}", "--start-frame", str(protocol["start_frame"]),
            "--seed", str(protocol["seed"]), "--dtype", protocol["dtype"]]
    md_stability.main(argv + (["--no-compile"] if quick else []))
    return json.loads((out / "runs" / f"{molecule}__{name}" / "result.json").read_text())


def round_frames(labels_path: Path, trajectory_dir: Path, result: Dict[str, Any],
                 args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """Atomic numbers [N] and the positions [F, N, 3] (Å) one round labels: the frames before the
    collapse in ``trajectory_dir``'s trajectory, or those of a round labelled in full already (whose
    trajectory a new machine no longer has)."""
    trajectory_path = trajectory_dir / "trajectory.npz"
    if labels_path.is_file() and not trajectory_path.is_file():
        stored = np.load(labels_path)
        if np.isfinite(stored["energy"]).all():
            z = np.load(rmd17_file(result["molecule"], "train", args.data_root))["nuclear_charges"]
            return z.astype(np.int64), stored["positions"]
    if not trajectory_path.is_file():
        raise SystemExit(f"{trajectory_path} not found: benchmarks.md_stability writes it; run "
                         f"that MD again (--out {args.md_results} --work {args.md_work}) to make it")
    trajectory = dict(np.load(trajectory_path))
    frames = window(trajectory, int(result["collapse_frame"]), args.frames)
    return trajectory["numbers"].astype(np.int64), trajectory["positions"][frames].astype(np.float64)


def repair(run: str, args: argparse.Namespace) -> Dict[str, Any]:
    """Rounds of label, fine-tune, test and MD for the collapsed run ``run`` until one is stable."""
    result = json.loads((args.md_results / "runs" / run / "result.json").read_text())
    if not result.get("collapsed"):
        raise SystemExit(f"{run} did not collapse: nothing to repair")
    molecule = result["molecule"]
    if args.quick:  # the protocol's defaults, shortened
        from .md_stability import Protocol

        protocol = {**asdict(Protocol()), **QUICK_PROTOCOL}
    else:
        protocol = json.loads((args.md_results / "md_stability.json").read_text())["protocol"]
    start = model_file(result)
    work = args.work / run
    trajectory_dir = args.md_work / run
    labels: List[Dict[str, np.ndarray]] = []
    rounds: List[Dict[str, Any]] = []
    for index in range(1, args.rounds + 1):
        z, positions = round_frames(work / "labels" / f"round{index}.npz", trajectory_dir, result, args)
        labels.append(labelled_window(f"round{index}", z, positions, args.grid_level, work / "labels"))
        frames_file = repair_frames_file(labels, z, work / "repair_frames.extxyz")
        trainer = train_round(molecule, start, frames_file, work / f"round{index}", args.data_root, args)
        model_path = work / f"round{index}" / "best.pt"
        name = f"repaired-{index}"
        md = run_md(molecule, name, model_path, protocol, args.out / "md", work / "md", args.data_root, args.quick)
        rounds.append({
            "round": index, "repair_frames": int(sum(len(l["energy"]) for l in labels)),
            "frames_from_collapse_at_ps": result["stability_ps"], "dft_cpu_s": float(np.nansum(labels[-1]["cpu_s"])),
            "training_steps": trainer.step, "training_cpu_hours": trainer.cpu_seconds / 3600,
            "stop_reason": trainer.stop_reason or "max_steps",
            "test": {key: value for key, value in rmd17_test_errors(model_path, molecule, args.data_root,
                                                                    args.test_frames).items()
                     if key in ("frames", "force_mae_meV_A", "energy_mae_meV")},
            "md": {key: md.get(key) for key in ("simulated_ps", "stability_ps", "collapsed", "collapse_reason",
                                                "collapse_bonds", "hr_mae")},
        })
        print(f"{run}, round {index}: {rounds[-1]['repair_frames']} DFT frames, test force MAE "
              f"{rounds[-1]['test']['force_mae_meV_A']:.2f} meV/Å, MD "
              f"{'collapsed at' if md['collapsed'] else 'stable for'} {md['stability_ps']:.2f} ps", flush=True)
        if not md["collapsed"]:
            break
        result, trajectory_dir = md, work / "md" / f"{molecule}__{name}"
    return {"run": run, "molecule": molecule, "model": repo_relative(start), "rounds": rounds}


QUICK_PROTOCOL = {"time_ps": 0.05, "save_every": 10}
# the entries of a bundled model's card that its export wrote (benchmarks.rmd17_models.export_rmd17_model)
CARD_ENTRIES = ("name", "description", "level_of_theory", "limits", "priors", "training_cost", "test_errors")
REPAIR_LEVEL_OF_THEORY = "PBE/def2-SVP, rMD17's level of theory, computed with PySCF (density fitting)"


def repaired_card(card: Dict[str, Any], entry: Dict[str, Any], settings: Dict[str, Any],
                  closest_pair: float) -> Dict[str, Any]:
    """The card of a bundled model after the repair ``entry`` (a ``repairs`` value of collapse_repair.json
    whose last round was stable): the bundled ``card``'s entries, the stable round's test errors, the repair's
    training time added to the training cost, and the repair in the description, the limits and ``repair``.
    ``closest_pair``: the smallest r_ij over the covalent-radii sum in the repair's DFT frames."""
    stable = entry["rounds"][-1]
    if stable["md"]["collapsed"]:
        raise ValueError(f"{entry['run']}: the last round collapsed too; nothing repaired to bundle")
    train_hours = sum(r["training_cpu_hours"] for r in entry["rounds"])
    dft_hours = sum(r["dft_cpu_s"] for r in entry["rounds"]) / 3600
    frames, at_ps, md = stable["repair_frames"], entry["rounds"][0]["frames_from_collapse_at_ps"], stable["md"]
    repair = {
        "benchmark": "benchmarks/collapse_repair.py", "run": entry["run"], "rounds": stable["round"],
        "repaired_cell": (card.get("training_cost") or {}).get("cell"), "repaired_test_errors": card.get("test_errors"),
        "dft_frames": frames, "level_of_theory": REPAIR_LEVEL_OF_THEORY,
        "frames_from": (f"the model's own 500 K MD trajectory (benchmarks.md_stability), up to its collapse at "
                        f"{at_ps:g} ps"),
        "replay_ratio": settings["ratio"], "learning_rate": settings["lr"],
        "training_cpu_hours": round(train_hours, 3), "dft_cpu_hours": round(dft_hours, 3),
        "md_after": {key: md[key] for key in ("simulated_ps", "stability_ps", "collapsed")},
    }
    new = dict(card)
    new["description"] = (
        f"{card.get('description', '')} Then repaired for a 500 K MD collapse (benchmarks/collapse_repair.py): "
        f"fine-tuned {train_hours:.2f} CPU-hours more on the same frames with {frames} PBE/def2-SVP frames of its "
        f"own trajectory up to the collapse at {at_ps:g} ps replayed ({settings['ratio']:.0%} of every batch, "
        f"forces only; learning rate {settings['lr']:g}); the same {md['simulated_ps']:g} ps then ran without a "
        "collapse.")
    new["limits"] = (f"{card.get('limits', '')} Besides its rMD17 frames it saw the {frames} DFT frames of its "
                     "repair: compare its test errors with other rMD17 models with that in mind.").strip()
    new["test_errors"] = {**card.get("test_errors", {}), "force_mae_meV_A": stable["test"]["force_mae_meV_A"],
                          "energy_mae_meV": stable["test"]["energy_mae_meV"], "frames": stable["test"]["frames"]}
    new["test_errors"].pop("force_rmse_meV_A", None)  # not measured after the repair
    if "training_cost" in card:
        new["training_cost"] = {**card["training_cost"],
                                "cpu_hours": round(card["training_cost"]["cpu_hours"] + train_hours, 3),
                                "repair_cpu_hours": round(train_hours, 3)}
    if "priors" in card:
        new["priors"] = {**card["priors"], "note": (
            f"{card['priors']['note']}; the repair trained with the prior on, on DFT frames whose closest pair is at "
            f"{closest_pair:.3f} x that sum")}
    new["repair"] = repair
    return new


def bundle_repair(entry: Dict[str, Any], settings: Dict[str, Any], work: Path) -> str:
    """Write the stable round of the repair ``entry`` over the bundled checkpoint it repaired, with
    :func:`repaired_card`; returns what it did (nothing where the model was not a bundled one)."""
    from ase.io import read

    from forcefield_et.checkpoint import read_checkpoint
    from forcefield_et.registry import BUNDLED_DIR, export_checkpoint

    from .rmd17_models import frames_closest_pair_ratio

    bundled = checkout_path(entry["model"])
    if bundled.parent != BUNDLED_DIR:
        return f"{entry['run']}: its model {entry['model']} is not a bundled checkpoint; nothing to bundle"
    weights = work / entry["run"] / f"round{entry['rounds'][-1]['round']}" / "best.pt"
    frames_file = work / entry["run"] / "repair_frames.extxyz"
    for needed in (weights, frames_file):
        if not needed.is_file():
            raise SystemExit(f"{needed} not found: the repair of {entry['run']} did not run on this machine")
    card = read_checkpoint(bundled)["metadata"]
    repaired = read_checkpoint(weights)["metadata"]
    if card.get("training") == repaired.get("training"):
        return f"{bundled} is this repair already"
    if not fine_tuned_from(repaired, card):  # the bundled file is another model by now
        raise SystemExit(f"{bundled} is not the model the repair of {entry['run']} started from (exported again "
                         "since?): repair the bundled model itself (python -m benchmarks.collapse_repair)")
    from forcefield_et.data import ConformationSet

    frames = ConformationSet.from_ase(read(frames_file, index=":"))
    # the card's own entries; the training, its parent, validation and provenance are the repair round's
    own = {key: card[key] for key in CARD_ENTRIES if key in card}
    new = repaired_card(own, entry, settings, frames_closest_pair_ratio(frames))
    export_checkpoint(weights, bundled, new)
    return f"bundled the repair of {entry['run']} (round {entry['rounds'][-1]['round']}) as {bundled}"


def table(repairs: Dict[str, Dict[str, Any]]) -> str:
    lines = ["| run | round | DFT frames (all rounds) | training: steps, CPU-h | test force / energy MAE "
             "(meV/Å, meV) | MD |", "|---|---|---|---|---|---|"]
    for run, entry in repairs.items():
        for r in entry["rounds"]:
            md = r["md"]
            text = (f"collapsed at {md['stability_ps']:.2f} ps" if md["collapsed"]
                    else f"stable for {md['simulated_ps']:.1f} ps")
            lines.append(f"| {run} | {r['round']} | {r['repair_frames']} | {r['training_steps']:,}, "
                         f"{r['training_cpu_hours']:.2f} | {r['test']['force_mae_meV_A']:.2f} / "
                         f"{r['test']['energy_mae_meV']:.2f} | {text} |")
    return "\n".join(lines) + "\n"


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.collapse_repair", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=[DEFAULT_RUN], help="collapsed md_stability runs")
    parser.add_argument("--md-results", type=Path, default=MD_RESULTS, help="their md_stability results folder")
    parser.add_argument("--md-work", type=Path, default=MD_WORK, help="its work folder (the trajectories)")
    parser.add_argument("--frames", type=int, default=20, help="saved frames up to each collapse, labelled per round")
    parser.add_argument("--rounds", type=int, default=3, help="at most this many rounds")
    parser.add_argument("--ratio", type=float, default=0.1, help="share of every batch from the DFT frames")
    parser.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (the start is converged)")
    parser.add_argument("--budget-hours", type=float, default=0.5, help="CPU-hours of training per round")
    parser.add_argument("--grid-level", type=int, default=3, help="PySCF DFT grid level")
    parser.add_argument("--test-frames", type=int, default=1000, help="test_01 frames for the test errors")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--work", type=Path, default=WORK_DIR)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--quick", action="store_true",
                        help="pipeline check: 2 frames, coarse DFT, 6 CPU-s of training, 0.05 ps of MD, 20 test frames")
    parser.add_argument("--bundle", action="store_true",
                        help="train nothing: the stable round of each finished repair (--out/collapse_repair.json) "
                        "replaces the bundled checkpoint it repaired")
    args = parser.parse_args(argv)
    if args.bundle:
        summary_path = args.out / "collapse_repair.json"
        if not summary_path.is_file():
            raise SystemExit(f"{summary_path} not found: run python -m benchmarks.collapse_repair first")
        summary = json.loads(summary_path.read_text())
        for entry in summary["repairs"].values():
            print(bundle_repair(entry, summary["settings"], args.work))
        return
    for name in ("frames", "rounds", "grid_level", "test_frames"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not (0 < args.ratio < 1 and 0 < args.lr < 1 and args.budget_hours > 0):
        raise SystemExit("--ratio must lie in (0, 1), --lr in (0, 1) and --budget-hours above 0")
    try:
        import pyscf  # noqa: F401
    except ImportError as error:
        raise SystemExit(f"benchmarks.collapse_repair needs pyscf ({error}): pip install pyscf") from None
    torch.set_num_threads(1)
    if args.quick:
        args.frames, args.grid_level, args.test_frames, args.budget_hours = 2, 1, 20, 6 / 3600
    repairs = {run: repair(run, args) for run in args.runs}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "collapse_repair.json", {
        "benchmark": "collapse_repair", "protocol": __doc__.split("The repaired models")[0].strip(),
        "settings": {k: getattr(args, k) for k in ("frames", "rounds", "ratio", "lr", "budget_hours", "grid_level",
                                                  "test_frames", "quick")},
        "repairs": repairs, "machine": machine_info()})
    markdown = table(repairs)
    write_text_atomic(args.out / "collapse_repair.md", markdown)
    print(markdown)


if __name__ == "__main__":
    main()

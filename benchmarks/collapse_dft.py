"""Is an MD collapse real at the reference level of theory? The frames leading up to a collapse of
``benchmarks.md_stability``, relabelled with DFT and set against the model that drove them.

    python -m benchmarks.collapse_dft                         # every collapsed run of the converged models
    python -m benchmarks.collapse_dft --runs salicylic__et-pretrained-finetuned --frames 8
    python -m benchmarks.collapse_dft --quick                 # CI: 2 frames, coarse DFT

Protocol, per collapsed run:

1. frames: the last ``--frames`` saved frames of the run's trajectory up to and including the frame
   that broke the bond criterion (0.05 ps apart in the MDsim protocol), read from the run's work folder
   (``trajectory.npz``, written by ``benchmarks.md_stability``).
2. labels: PBE/def2-SVP, rMD17's level of theory, with PySCF (the settings of
   ``benchmarks.dft_generalisation``): energy and analytic forces.
3. the model of the run (the checkpoint its result names) on the same frames, in float64, and so
   every other model of the same molecule in the results folder (e.g. the other start), whether its own
   run collapsed or not: a model whose run stayed stable may still share the hole and only not have
   reached it.
4. per frame: the lengths of the bonds that the collapse stretched or formed, the energy relative to
   the first frame from the model and from DFT, and the force MAE of the model against DFT. Where the
   model's energy profile and forces follow DFT through the event, the trajectory did what the
   reference surface does: the collapse is chemistry that the bond criterion counts (for example a
   proton moving between two oxygens), not a hole in the model.

DFT labels are data made here: they go to ``<work>/collapse_dft/<run>.npz`` (saved after every frame, so
a stopped run resumes), never to the repository. Writes ``collapse_dft.json``, ``collapse_dft.md`` and
``collapse_dft.png`` to ``--out`` (default ``benchmarks/results/collapse_dft/``; there, the figure is also
copied to ``docs/img/``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import torch

from forcefield_et.data.labelling import dft_single_point
from forcefield_et.inference import Evaluator

from .io import savez_atomic, write_json_atomic, write_text_atomic
from .machine import machine_info
from .paths import REPO, RUNS_DIR, checkout_path, repo_relative

RESULTS_DIR = Path(__file__).resolve().parent / "results" / "collapse_dft"
DOCS_IMG = REPO / "docs" / "img"
MD_RESULTS = Path(__file__).resolve().parent / "results" / "md_stability_converged"
MD_WORK = RUNS_DIR / "md_stability_converged"


def all_runs(md_results: Path) -> Dict[str, Dict[str, Any]]:
    """Result of every run under ``md_results/runs/`` (name -> result.json)."""
    return {path.parent.name: json.loads(path.read_text())
            for path in sorted((md_results / "runs").glob("*/result.json"))}


def collapsed_runs(md_results: Path) -> Dict[str, Dict[str, Any]]:
    """Result of every collapsed run under ``md_results/runs/`` (name -> result.json)."""
    return {name: result for name, result in all_runs(md_results).items() if result.get("collapsed")}


def other_models(name: str, runs: Dict[str, Dict[str, Any]]) -> Dict[str, Tuple[str, Dict[str, Any]]]:
    """The runs of ``runs[name]``'s molecule with another model (model name -> (run name, result))."""
    molecule, model = runs[name]["molecule"], runs[name]["model"]
    return {result["model"]: (run, result) for run, result in runs.items()
            if result["molecule"] == molecule and result["model"] != model}


def closest_approach(trajectory_path: Path, formed: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """For each bond that a collapse formed: its shortest length (Å) along another run's saved trajectory
    and the number of saved frames in which it is shorter than in any reference frame."""
    if not trajectory_path.is_file():
        return {}
    positions = np.load(trajectory_path)["positions"]
    approach = {}
    for bond in formed:
        a, b = bond["atoms"]
        lengths = np.linalg.norm(positions[:, a] - positions[:, b], axis=1)
        approach[bond["bond"]] = {"shortest_A": float(lengths.min()), "saved_frames": len(lengths),
                                  "frames_shorter_than_reference": int((lengths < bond["reference_min_A"]).sum()),
                                  "reference_min_A": bond["reference_min_A"]}
    return approach


def model_file(result: Dict[str, Any]) -> Path:
    """The checkpoint a run's result names, in this checkout where the recorded path is from another."""
    path = checkout_path(result["model_path"])
    if not path.is_file():
        raise FileNotFoundError(f"the model of this run, {result['model_path']}, is not here")
    return path


def window(trajectory: Dict[str, np.ndarray], collapse_frame: int, frames: int) -> np.ndarray:
    """Indices of the last ``frames`` saved frames up to and including ``collapse_frame``."""
    if collapse_frame >= len(trajectory["positions"]):
        raise ValueError(f"the trajectory holds {len(trajectory['positions'])} frames, the collapse is at "
                         f"frame {collapse_frame}: it is not this run's trajectory")
    return np.arange(max(0, collapse_frame - frames + 1), collapse_frame + 1)


def labelled_window(name: str, z: np.ndarray, positions: np.ndarray, grid_level: int, work: Path,
                    log: Any = print) -> Dict[str, np.ndarray]:
    """DFT energies [F] (eV), forces [F, N, 3] (eV/Å) and CPU seconds [F] of ``positions`` [F, N, 3],
    from ``work/<name>.npz`` where labelled already, frame by frame otherwise (saved after each)."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{name}.npz"
    frames = len(positions)
    if path.is_file():
        stored = dict(np.load(path))
        if stored["positions"].shape != positions.shape or not np.allclose(stored["positions"], positions) \
                or int(stored["grid_level"]) != grid_level:
            raise ValueError(f"{path} holds other frames or another grid level; delete it to label these")
        labels = stored
    else:
        labels = {"positions": positions, "grid_level": np.array(grid_level), "energy": np.full(frames, np.nan),
                  "forces": np.full(positions.shape, np.nan), "cpu_s": np.full(frames, np.nan)}
    for i in range(frames):
        if np.isfinite(labels["energy"][i]):
            continue
        start = time.process_time()
        labels["energy"][i], labels["forces"][i] = dft_single_point(z, positions[i], "pbe", "def2-svp",
                                                                    grid_level=grid_level)
        labels["cpu_s"][i] = time.process_time() - start
        savez_atomic(path, **labels)
        log(f"{name}: DFT frame {i + 1}/{frames} ({labels['cpu_s'][i]:.0f} CPU-s)")
    return labels


def model_on_frames(result: Dict[str, Any], z: np.ndarray, positions: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Energies [F] (eV) and forces [F, N, 3] (eV/Å) of the model of a run's result on ``positions``
    [F, N, 3] (Å), in float64."""
    evaluator = Evaluator(str(model_file(result)), dtype="float64", threads=1)
    outputs = [evaluator.evaluate(z, frame) for frame in positions]
    return (np.array([float(out["energy"]) for out in outputs]),
            np.stack([out["forces"].numpy() for out in outputs]))


def against_dft(energies: np.ndarray, forces: np.ndarray, labels: Dict[str, np.ndarray]) -> Dict[str, Any]:
    """A model's energy profile (relative to the first frame, eV) and forces against the DFT labels: the
    profile, the per-frame force MAE (meV/Å) and both errors before and at the last (collapse) frame."""
    profile = energies - energies[0]
    dft_profile = labels["energy"] - labels["energy"][0]
    profile_error = 1000 * np.abs(profile - dft_profile)
    force_mae = 1000 * np.mean(np.abs(forces - labels["forces"]), axis=(1, 2))
    return {
        "energy_eV": [float(e) for e in profile], "force_mae_meV_A": [float(f) for f in force_mae],
        "max_energy_profile_error_meV": float(profile_error.max()),
        "before_collapse": {"max_energy_profile_error_meV": float(profile_error[:-1].max()) if len(profile) > 1
                            else None,
                            "force_mae_meV_A": float(force_mae[:-1].mean()) if len(profile) > 1 else None},
        "at_collapse": {"energy_profile_error_meV": float(profile_error[-1]), "force_mae_meV_A": float(force_mae[-1])},
    }


def check_run(name: str, result: Dict[str, Any], md_work: Path, frames: int, grid_level: int,
              work: Path, others: Dict[str, Tuple[str, Dict[str, Any]]] | None = None) -> Dict[str, Any]:
    """The collapse window of run ``name`` against DFT, for the run's model and for the ``others`` (model
    name -> (run name, result) of one of its runs in ``md_work``, whose result names its checkpoint)."""
    trajectory = dict(np.load(md_work / name / "trajectory.npz"))
    indices = window(trajectory, int(result["collapse_frame"]), frames)
    z = trajectory["numbers"].astype(np.int64)
    positions = trajectory["positions"][indices].astype(np.float64)
    labels = labelled_window(name, z, positions, grid_level, work)
    energies, forces = model_on_frames(result, z, positions)
    bonds = result.get("collapse_bonds") or {"stretched": [], "formed": []}
    watched = [(b["bond"], b["atoms"]) for b in bonds["stretched"] + bonds["formed"]]
    own = against_dft(energies, forces, labels)
    rows = [{"frame": int(i), "time_ps": float(trajectory["time_ps"][i]),
             "bond_lengths_A": {label: float(np.linalg.norm(positions[k, a] - positions[k, b]))
                                for label, (a, b) in watched},
             "model_energy_eV": own["energy_eV"][k],
             "dft_energy_eV": float(labels["energy"][k] - labels["energy"][0]),
             "force_mae_meV_A": own["force_mae_meV_A"][k]}
            for k, i in enumerate(indices)]
    other_checks, other_skipped = {}, {}
    for model, (other_run, other) in (others or {}).items():
        try:
            other_energies, other_forces = model_on_frames(other, z, positions)
        except FileNotFoundError as error:  # model_file: its checkpoint is not in this checkout
            other_skipped[model] = str(error)
            print(f"{name}: {model} not compared, {error}", flush=True)
            continue
        other_checks[model] = {"model_description": other.get("model_description"),
                               "own_run": {"collapsed": bool(other.get("collapsed")),
                                           "stability_ps": other.get("stability_ps"),
                                           "simulated_ps": other.get("simulated_ps"),
                                           # how near its own trajectory came to the collapse's new bonds
                                           "closest_approach": closest_approach(
                                               md_work / other_run / "trajectory.npz", bonds["formed"])},
                               **against_dft(other_energies, other_forces, labels)}
    return {
        "molecule": result["molecule"], "model": result["model"], "model_description": result["model_description"],
        "collapse_ps": result["stability_ps"], "collapse_reason": result["collapse_reason"],
        "collapse_bonds": result.get("collapse_bonds"), "frames": rows,
        "max_energy_profile_error_meV": own["max_energy_profile_error_meV"],
        "force_mae_meV_A": float(np.mean(own["force_mae_meV_A"])),
        # the frames before the collapse frame, and the collapse frame itself
        "before_collapse": own["before_collapse"], "at_collapse": own["at_collapse"],
        # the molecule's other models on the same frames
        "other_models": other_checks, "other_models_skipped": other_skipped,
        "dft_cpu_s_per_frame": float(np.nanmedian(labels["cpu_s"])),
    }


def _error_cells(check: Dict[str, Any], dft_energy_eV: float, model_energy_eV: float) -> str:
    before, at = check["before_collapse"], check["at_collapse"]
    before_energy = "–" if before["max_energy_profile_error_meV"] is None else \
        f"≤ {before['max_energy_profile_error_meV']:.0f}"
    before_forces = "–" if before["force_mae_meV_A"] is None else f"{before['force_mae_meV_A']:.1f}"
    return (f"| {1000 * model_energy_eV:.0f} / {1000 * dft_energy_eV:.0f} "
            f"| {before_energy} / {at['energy_profile_error_meV']:.0f} "
            f"| {before_forces} / {at['force_mae_meV_A']:.1f} |")


def _own_run(other: Dict[str, Any]) -> str:
    run = other["own_run"]
    text = (f"its own run collapsed at {run['stability_ps']:.2f} ps" if run["collapsed"] else
            f"its own run stable for {run['simulated_ps']:g} of {run['simulated_ps']:g} ps")
    for bond, approach in run.get("closest_approach", {}).items():
        text += (f"; {bond} there ≥ {approach['shortest_A']:.2f} Å, shorter than in any reference frame "
                 f"({approach['reference_min_A']:.2f} Å) in {approach['frames_shorter_than_reference']} of "
                 f"{approach['saved_frames']:,} saved frames")
    return text


def table(checks: Dict[str, Dict[str, Any]]) -> str:
    """One row per collapsed run (its own model), then one per other model of the molecule on the same
    frames."""
    lines = ["| run | collapse at (ps) | bonds at the collapse frame (Å) | frames | ΔE at the collapse frame, "
             "model / DFT (meV) | model − DFT in ΔE (meV): before / at the collapse frame | force MAE against DFT "
             "(meV/Å): before / at |", "|---|---|---|---|---|---|---|"]
    for check in checks.values():
        last = check["frames"][-1]
        bonds = ", ".join(f"{label} {length:.2f}" for label, length in last["bond_lengths_A"].items())
        lines.append(f"| {check['molecule']} / {check['model']} | {check['collapse_ps']:.2f} | {bonds} "
                     f"| {len(check['frames'])} " + _error_cells(check, last["dft_energy_eV"], last["model_energy_eV"]))
        for model, other in check.get("other_models", {}).items():
            lines.append(f"| {check['molecule']} / {model} on the frames of {check['model']} ({_own_run(other)}) "
                         f"| – | {bonds} | {len(check['frames'])} "
                         + _error_cells(other, last["dft_energy_eV"], other["energy_eV"][-1]))
    return "\n".join(lines) + "\n"


def plot(checks: Dict[str, Dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(checks), figsize=(4.6 * len(checks), 3.6), squeeze=False)
    for ax, check in zip(axes[0], checks.values()):
        t = [r["time_ps"] for r in check["frames"]]
        ax.plot(t, [1000 * r["dft_energy_eV"] for r in check["frames"]], "o-", color="k", label="PBE/def2-SVP")
        ax.plot(t, [1000 * r["model_energy_eV"] for r in check["frames"]], "s--", color="C0", label=check["model"])
        for k, (model, other) in enumerate(check.get("other_models", {}).items()):
            ax.plot(t, [1000 * e for e in other["energy_eV"]], "^:", color=f"C{k + 1}", label=model)
        ax.set_xlabel("time (ps)")
        ax.set_ylabel("energy relative to the first frame (meV)")
        ax.set_title(f"{check['molecule']}: collapse at {check['collapse_ps']:.2f} ps", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.collapse_dft", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--md-results", type=Path, default=MD_RESULTS,
                        help="the md_stability results folder whose collapsed runs are checked")
    parser.add_argument("--md-work", type=Path, default=MD_WORK, help="its work folder (the trajectories)")
    parser.add_argument("--runs", nargs="+", help="run names (default: every collapsed run)")
    parser.add_argument("--frames", type=int, default=6, help="saved frames up to the collapse")
    parser.add_argument("--grid-level", type=int, default=3, help="PySCF DFT grid level")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--quick", action="store_true", help="2 frames, grid level 1 (pipeline check)")
    args = parser.parse_args(argv)
    try:
        import pyscf  # noqa: F401
    except ImportError as error:
        raise SystemExit(f"benchmarks.collapse_dft needs pyscf ({error}): pip install pyscf") from None
    if args.frames < 1:
        raise SystemExit(f"--frames must be at least 1, got {args.frames}")
    torch.set_num_threads(1)
    if args.quick:
        args.frames, args.grid_level = 2, 1
    every_run = all_runs(args.md_results)
    runs = collapsed_runs(args.md_results)
    names = args.runs or list(runs)
    unknown = [n for n in names if n not in runs]
    if unknown:
        raise SystemExit(f"not a collapsed run of {args.md_results}: {', '.join(unknown)} "
                         f"(collapsed runs: {', '.join(runs) or 'none'})")
    work = args.md_work / "collapse_dft"
    checks, skipped = {}, {}
    for name in names:
        trajectory = (args.md_work / name / "trajectory.npz").resolve()
        if not trajectory.is_file():
            skipped[name] = (f"{repo_relative(trajectory)} not found (benchmarks.md_stability writes it; run the MD "
                             "again to make it)")
            print(f"{name}: skipped, {skipped[name]}", flush=True)
            continue
        checks[name] = check_run(name, runs[name], args.md_work, args.frames, args.grid_level,
                                 work / "quick" if args.quick else work, other_models(name, every_run))
        print(f"{name}: largest energy-profile difference {checks[name]['max_energy_profile_error_meV']:.0f} meV, "
              f"force MAE {checks[name]['force_mae_meV_A']:.1f} meV/Å against DFT", flush=True)
    if not checks:
        print(f"no collapsed run in {args.md_results}", flush=True)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "collapse_dft.json", {
        "benchmark": "collapse_dft", "protocol": __doc__.split("DFT labels are")[0].strip(),
        "md_results": repo_relative(args.md_results), "frames": args.frames, "grid_level": args.grid_level,
        "quick": args.quick, "runs": checks, "skipped": skipped, "machine": machine_info()})
    markdown = table(checks)
    write_text_atomic(args.out / "collapse_dft.md", markdown)
    plot(checks, args.out / "collapse_dft.png")
    if args.out.resolve() == RESULTS_DIR.resolve():
        shutil.copyfile(args.out / "collapse_dft.png", DOCS_IMG / "collapse_dft.png")
    print(markdown)


if __name__ == "__main__":
    main()

"""Force errors on new DFT frames: do the rMD17 models hold their test_01 error on frames from
another trajectory of the same molecule?

    python -m benchmarks.dft_generalisation                          # all four molecules (resumes)
    python -m benchmarks.dft_generalisation --molecules ethanol      # one molecule
    python -m benchmarks.dft_generalisation --quick                  # CI: ethanol, 2 frames, coarse DFT

Protocol, per molecule:

1. frames: a GFN2-xTB (tblite) Langevin trajectory at 500 K (rMD17's temperature), 0.5 fs steps,
   friction 0.01 fs^-1, seed 0, started from frame 0 of the rMD17 ``test_01`` split; after 1 ps of
   equilibration one frame every 0.25 ps (``--frames``, default 16). The trajectory is driven by
   another potential than rMD17's and than the models', so its frames are neither training nor test
   frames of anyone.
2. labels: PBE/def2-SVP, rMD17's level of theory, with PySCF (restricted Kohn-Sham, density fitting,
   grid level 3, SCF tolerance 1e-10 Eh); forces from the analytic gradient.
3. reference check: the same PySCF setup on the first ``--check-frames`` frames of ``test_01`` (default
   2) against rMD17's own labels: the force MAE there is the agreement of the two DFT codes, the floor
   below which no model error on the new frames means anything.
4. models: the bundled ``rmd17-<molecule>`` and any ``--model NAME=PATH`` (``{molecule}`` in PATH is
   replaced): force MAE (meV/Å) on the new frames and on all 1000 ``test_01`` frames, and their ratio.

A run evaluates the molecules it is given and keeps the others' entries from an earlier run with the
same settings (each model entry records the SHA-256 of the file evaluated). The xTB frames and DFT
labels are data made here: they go to ``runs/dft_generalisation/<molecule>.npz``
(saved after every frame, so a stopped run resumes), never to the repository. Writes
``dft_generalisation.json`` and ``dft_generalisation.png`` to ``benchmarks/results/dft_generalisation/``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch

from forcefield_et.data import ConformationSet
from forcefield_et.data.labelling import dft_single_point, file_sha256
from forcefield_et.evaluation import error_metrics, predict
from forcefield_et.registry import load_model, resolve_model_path

from .io import savez_atomic, write_json_atomic
from .machine import machine_info
from .paths import DATA_ROOT, RUNS_DIR, rmd17_file
from .rmd17_errors import rmd17_test_set
from .xtb_md import xtb_frames

RESULTS_DIR = Path(__file__).resolve().parent / "results" / "dft_generalisation"
WORK_DIR = RUNS_DIR / "dft_generalisation"
MOLECULES = ("aspirin", "ethanol", "naphthalene", "salicylic")
KCAL_MOL_EV = 0.0433641153087705


def dft_forces(z: np.ndarray, positions: np.ndarray, grid_level: int = 3) -> np.ndarray:
    """PBE/def2-SVP forces [N, 3] (eV/Å) of a neutral closed-shell molecule (the package's PySCF
    single point, density fitting)."""
    return dft_single_point(z, positions, "pbe", "def2-svp", grid_level=grid_level)[1]


def labelled_frames(molecule: str, data_root: Path, n_frames: int, n_check: int, grid_level: int,
                    work: Path, log: Any = print) -> Dict[str, np.ndarray]:
    """The molecule's xTB frames with DFT forces, and the reference check (rMD17 test frames with both
    rMD17's and PySCF's forces), from ``work/<molecule>.npz`` where present, made and saved frame by
    frame otherwise. Keys: z, positions [F, N, 3], forces [F, N, 3] (NaN: not yet labelled),
    check_positions, check_forces_rmd17, check_forces (eV/Å), cpu_s [F]."""
    test = np.load(rmd17_file(molecule, "test", data_root))
    z = test["nuclear_charges"].astype(np.int64)
    path = work / f"{molecule}.npz"
    settings = np.array([n_frames, n_check, grid_level])
    if path.is_file():
        stored = dict(np.load(path))
        if not np.array_equal(stored["settings"], settings):
            raise ValueError(f"{path} was made with other settings (frames, check frames, grid level "
                             f"{stored['settings'].tolist()}); delete it or use those settings")
    else:
        log(f"{molecule}: GFN2-xTB Langevin MD at 500 K for {n_frames} frames")
        start = time.process_time()
        positions = xtb_frames(z, test["coords"][0], n_frames)
        stored = {
            "settings": settings, "z": z, "positions": positions, "forces": np.full_like(positions, np.nan),
            "cpu_s": np.full(n_frames, np.nan), "xtb_cpu_s": np.array(time.process_time() - start),
            "check_positions": test["coords"][:n_check], "check_forces_rmd17": test["forces"][:n_check] * KCAL_MOL_EV,
            "check_forces": np.full((n_check, len(z), 3), np.nan),
        }
        work.mkdir(parents=True, exist_ok=True)
        savez_atomic(path, **stored)
    for key, positions_key in (("check_forces", "check_positions"), ("forces", "positions")):
        for k in range(len(stored[positions_key])):
            if np.isfinite(stored[key][k]).all():
                continue
            start = time.process_time()
            stored[key][k] = dft_forces(z, stored[positions_key][k], grid_level)
            if key == "forces":
                stored["cpu_s"][k] = time.process_time() - start
            savez_atomic(path, **stored)
            log(f"{molecule}: {key.replace('_', ' ')} {k + 1}/{len(stored[positions_key])} "
                f"({time.process_time() - start:.0f} CPU-s)")
    return stored


def force_mae_meV_A(model: Any, z: np.ndarray, positions: np.ndarray, forces: np.ndarray) -> float:
    """Force MAE (meV/Å) of ``model`` on frames of one molecule (positions and forces [F, N, 3])."""
    frames, atoms = positions.shape[:2]
    data = ConformationSet(z=np.tile(z, frames), pos=positions.reshape(-1, 3), n_atoms=np.full(frames, atoms),
                           forces=forces.reshape(-1, 3), energy=np.zeros(frames))
    return float(error_metrics(data, predict(model, data))["force_mae_meV_A"])


def molecule_models(models: Dict[str, str], molecule: str) -> Dict[str, str | None]:
    """``models``' paths for ``molecule`` ({molecule} replaced); None for a model file that is missing (a
    registry name is never missing)."""
    paths: Dict[str, str | None] = {}
    for name, path in models.items():
        path = path.replace("{molecule}", molecule)
        paths[name] = None if ("/" in path or path.endswith(".pt")) and not Path(path).is_file() else path
    return paths


def evaluate_molecule(molecule: str, models: Dict[str, str], data_root: Path, n_frames: int, n_check: int,
                      grid_level: int, work: Path, test_frames: int | None) -> Dict[str, Any]:
    labels = labelled_frames(molecule, data_root, n_frames, n_check, grid_level, work)
    test = rmd17_test_set(molecule, data_root, test_frames)
    result: Dict[str, Any] = {
        "frames": n_frames, "atoms": int(len(labels["z"])),
        "reference_check_force_mae_meV_A": 1000 * float(np.mean(np.abs(labels["check_forces"]
                                                                     - labels["check_forces_rmd17"]))),
        "reference_check_frames": n_check,
        "mean_abs_force_meV_A": {"new_frames": 1000 * float(np.mean(np.abs(labels["forces"]))),
                                 "test_01": 1000 * float(np.mean(np.abs(test.forces)))},
        "dft_cpu_s_per_frame": float(np.nanmedian(labels["cpu_s"])) if np.isfinite(labels["cpu_s"]).any() else None,
        "xtb_md_cpu_s": float(labels["xtb_cpu_s"]), "test_frames": len(test), "models": {},
    }
    for name, path in molecule_models(models, molecule).items():
        if path is None:
            print(f"{molecule} {name}: {models[name].replace('{molecule}', molecule)} not found; skipped", flush=True)
            continue
        model = load_model(path, dtype="float32")
        with torch.enable_grad():
            new = force_mae_meV_A(model, labels["z"], labels["positions"], labels["forces"])
            on_test = float(error_metrics(test, predict(model, test))["force_mae_meV_A"])
        result["models"][name] = {"path": path, "sha256": file_sha256(resolve_model_path(path)),
                                  "new_frames_force_mae_meV_A": new,
                                  "test_01_force_mae_meV_A": on_test, "ratio_new_over_test": new / on_test}
        print(f"{molecule} {name}: new frames {new:.1f}, test_01 {on_test:.1f} meV/Å ({new / on_test:.2f}×)",
              flush=True)
    return result


def up_to_date(entry: Dict[str, Any], models: Dict[str, str], molecule: str) -> bool:
    """Whether ``entry`` (one molecule's results) holds every model in ``models`` whose file exists, each with
    the weights it has now (sha256), so that evaluating the molecule again would repeat it."""
    evaluated = entry.get("models", {})
    for name, path in molecule_models(models, molecule).items():
        if path is None:
            continue
        if name not in evaluated or evaluated[name].get("sha256") != file_sha256(resolve_model_path(path)):
            return False
    return True


def plot(results: Dict[str, Dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    molecules = list(results)
    names = sorted({n for r in results.values() for n in r["models"]})
    fig, ax = plt.subplots(figsize=(2.2 + 2.2 * len(molecules), 3.8))
    width = 0.8 / (2 * len(names))
    for k, name in enumerate(names):
        for j, (key, label, hatch) in enumerate((("test_01_force_mae_meV_A", "test_01", ""),
                                                 ("new_frames_force_mae_meV_A", "new 500 K frames", "//"))):
            values = [results[m]["models"].get(name, {}).get(key, np.nan) for m in molecules]
            offset = (2 * k + j - len(names) + 0.5) * width
            ax.bar(np.arange(len(molecules)) + offset, values, width, color=f"C{k}", hatch=hatch, alpha=0.85,
                   label=f"{name}: {label}")
    floor = [results[m]["reference_check_force_mae_meV_A"] for m in molecules]
    ax.scatter(np.arange(len(molecules)), floor, marker="_", s=400, color="k", label="PySCF vs rMD17 labels")
    ax.set_xticks(np.arange(len(molecules)), molecules)
    ax.set_ylabel("force MAE (meV/Å)")
    ax.set_title("rMD17 test_01 against new PBE/def2-SVP frames (500 K GFN2-xTB trajectory)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--molecules", nargs="+", default=list(MOLECULES), choices=MOLECULES)
    parser.add_argument("--frames", type=int, default=16, help="new frames per molecule")
    parser.add_argument("--check-frames", type=int, default=2, help="rMD17 test frames relabelled with PySCF")
    parser.add_argument("--grid-level", type=int, default=3, help="PySCF DFT grid level")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                        help="another model to evaluate ({molecule} in PATH is replaced; a missing file is "
                        "skipped); repeatable")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--work", type=Path, default=WORK_DIR, help="where the frames and labels are kept")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--again", action="store_true",
                        help="evaluate molecules anew even when the results already hold every model with the "
                        "same weights and settings")
    parser.add_argument("--quick", action="store_true", help="ethanol, 2 frames, 1 check frame, grid level 1, "
                        "50 test frames (pipeline check)")
    args = parser.parse_args(argv)
    try:
        import pyscf  # noqa: F401
        import tblite  # noqa: F401
    except ImportError as error:
        raise SystemExit(f"benchmarks.dft_generalisation needs pyscf and tblite ({error}): pip install pyscf tblite") \
            from None
    torch.set_num_threads(1)
    test_frames = None
    if args.quick:
        args.molecules, args.frames, args.check_frames, args.grid_level, test_frames = ["ethanol"], 2, 1, 1, 50
    models = {"bundled": "rmd17-{molecule}"}
    for item in args.model:
        name, _, path = item.partition("=")
        if not path:
            raise SystemExit(f"--model takes NAME=PATH, got {item!r}")
        models[name] = path
    if not rmd17_file(args.molecules[0], "test", args.data_root).is_file():
        raise SystemExit(f"benchmarks.dft_generalisation: rMD17 not found under {args.data_root}")
    # molecules not evaluated now keep their entries from an earlier run with the same settings
    previous_path = args.out / "dft_generalisation.json"
    previous = json.loads(previous_path.read_text()) if previous_path.is_file() else {}
    same = (previous.get("quick") == args.quick and previous.get("grid_level") == args.grid_level
            and all(r.get("frames") == args.frames for r in previous.get("molecules", {}).values()))
    results = {m: r for m, r in previous.get("molecules", {}).items() if same and m not in args.molecules}
    for molecule in args.molecules:
        entry = previous.get("molecules", {}).get(molecule) if same else None
        if entry is not None and not args.again and up_to_date(entry, models, molecule):
            print(f"{molecule}: every model already evaluated with these settings and the same weights; kept "
                  "(--again evaluates it anew)", flush=True)
            results[molecule] = entry
            continue
        results[molecule] = evaluate_molecule(molecule, models, args.data_root, args.frames, args.check_frames,
                                              args.grid_level, args.work / "quick" if args.quick else args.work,
                                              test_frames)
    if same and results == previous.get("molecules"):
        print(f"nothing evaluated anew; {previous_path} left as it is", flush=True)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"protocol": __doc__.split("A run evaluates")[0].strip(), "quick": args.quick,
               "grid_level": args.grid_level,
               "molecules": {m: results[m] for m in MOLECULES if m in results}, "machine": machine_info()}
    write_json_atomic(args.out / "dft_generalisation.json", summary)
    plot(summary["molecules"], args.out / "dft_generalisation.png")


if __name__ == "__main__":
    main()

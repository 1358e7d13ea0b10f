"""Train and cache the peer models of the MD stability benchmark (benchmarks/md_stability.py).

    python -m benchmarks.prepare                                   # 4 molecules, ET scratch + NequIP
    python -m benchmarks.prepare --molecules aspirin --models nequip --nequip-max-time 06:00:00
    python -m benchmarks.prepare --quick                           # tiny models, pipeline test (< 3 min)

Both models see the same data: the 1000 frames of the rMD17 ``train_01`` split, frames 0-949 for
training and frames 950-999 for validation (checkpoint selection), as in
benchmarks/finetune_study.py. Nothing here trains on the ``test_01`` split (the study run behind
``et-scratch`` reports its test error, as every study run does).

- ``et-scratch``: the fine-tuning study's 1000-frame scratch run (benchmarks/finetune_study.py:
  the bundled pretrained model's architecture, freshly initialised; batch 8, AdamW lr 5e-4 with
  warm-up and cosine decay, EMA 0.99, per-atom energy weight 1 and force weight 10), so it differs
  from the pretrained->fine-tuned ``rmd17-<mol>`` model in its start only ->
  ``benchmarks/results/finetune_study/runs/<mol>-1000-scratch/best.pt``. ``--et-steps`` sets the
  step budget (default 2000, the study's).
- ``nequip``: nequip 0.19's own ``nequip-train`` with a generated Hydra config that follows MDsim's
  NequIP settings for MD17 (configs/md17/nequip/*.yml in github.com/kyonofx/MDsim: r_max 4 Å,
  5 interaction layers, l_max 3 with both parities, 32 features, 8 trainable Bessel functions,
  polynomial cutoff p=6, radial MLP 2 x 64, Adam lr 5e-3, batch 5, ReduceLROnPlateau(0.8, 5),
  EMA 0.99, loss = 1 x per-atom energy MSE + 1000 x force MSE, early stopping patience 50 epochs),
  float32 model, training data as extxyz in eV and eV/Å; then ``nequip-compile --mode torchscript``
  -> ``<cache>/nequip-<mol>/model.nequip.pth`` for ``NequIPCalculator.from_compiled_model``.
  ``--nequip-max-epochs`` / ``--nequip-max-time`` bound the budget (MDsim: 2000 epochs on GPU).
  Re-running resumes from ``last.ckpt`` (``--fresh`` starts over).

Every model is checked after training: loaded in its ASE calculator, force MAE on the 50
validation frames, and 20 steps of 500 K Nose-Hoover MD. Wall times and these checks are written
to ``<cache>/prepare_log.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from .paths import DATA_ROOT, rmd17_file

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = Path(__file__).resolve().parent / "cache"
MOLECULES = ("aspirin", "ethanol", "naphthalene", "salicylic")
NEQUIP_DEVICES = ("cpu", "cuda")
TRAIN_FRAMES, VALID_FRAMES = (0, 950), (950, 1000)
TINY_ARCHITECTURE = {"hidden_channels": 32, "num_layers": 2, "num_heads": 4, "num_rbf": 16, "cutoff": 5.0}

# MDsim's NequIP settings for MD17, in nequip 0.19 names.
NEQUIP_MDSIM = {
    "r_max": 4.0, "num_layers": 5, "l_max": 3, "parity": True, "num_features": 32, "num_bessels": 8,
    "bessel_trainable": True, "polynomial_cutoff_p": 6, "radial_mlp_depth": 2, "radial_mlp_width": 64,
    "lr": 0.005, "batch_size": 5, "ema_decay": 0.99, "energy_coeff": 1.0, "forces_coeff": 1000.0,
    "plateau_factor": 0.8, "plateau_patience": 5, "early_stopping_patience": 50, "max_epochs": 2000,
}
NEQUIP_TINY = {**NEQUIP_MDSIM, "num_layers": 2, "l_max": 1, "num_features": 8, "radial_mlp_width": 16}


def rmd17_train_path(molecule: str) -> Path:
    path = rmd17_file(molecule)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (../shared/data/rmd17 is needed)")
    return path


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def update_prepare_log(cache: Path, key: str, entry: Dict[str, Any]) -> None:
    path = cache / "prepare_log.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[key] = entry
    tmp = path.with_name(".prepare_log.json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------ checks
def check_calculator(calc, molecule: str, md_steps: int = 20) -> Dict[str, Any]:
    """Force MAE on the 50 validation frames and a short 500 K Nose-Hoover run with ``calc``."""
    from ase import Atoms

    from forcefield_et.data import read_rmd17
    from forcefield_et.md import initial_velocities, make_dynamics

    data = read_rmd17(rmd17_train_path(molecule))
    n = int(data.n_atoms[0])
    pos, forces = data.pos.reshape(len(data), n, 3), data.forces.reshape(len(data), n, 3)
    numbers = data.z[:n]
    errors = []
    start = time.perf_counter()
    for k in range(*VALID_FRAMES):
        atoms = Atoms(numbers=numbers, positions=pos[k])
        atoms.calc = calc
        errors.append(np.abs(atoms.get_forces() - forces[k]).mean())
    eval_ms = 1000 * (time.perf_counter() - start) / (VALID_FRAMES[1] - VALID_FRAMES[0])
    atoms = Atoms(numbers=numbers, positions=pos[VALID_FRAMES[0]])
    atoms.calc = calc
    initial_velocities(atoms, 500.0, seed=0, remove_rotation=False)
    dynamics = make_dynamics(atoms, "nose-hoover", 0.5, 500.0, 0.01, 0, tdamp_fs=10.0)
    start = time.perf_counter()
    dynamics.run(md_steps)
    md_s = time.perf_counter() - start
    final = atoms.get_positions()
    energy = float(atoms.get_potential_energy())
    return {
        "valid_force_mae_meV_A": 1000 * float(np.mean(errors)),
        "eval_ms_per_frame": eval_ms,
        "md_steps": md_steps,
        "md_steps_per_s": md_steps / md_s,
        "md_finite": bool(np.isfinite(final).all() and np.isfinite(energy)),
        "md_final_temperature_K": float(atoms.get_temperature()),
    }


# ------------------------------------------------------------------------------------ ET from scratch
def prepare_et_scratch(molecule: str, cache: Path, steps: int, threads: int, quick: bool, fresh: bool = False,
                       seed: int = 0) -> Dict:
    """The scratch ET peer. Full mode: exactly the fine-tuning study's 1000-frame scratch run
    (same frames, recipe and step budget as the pretrained run that becomes ``rmd17-<mol>``), in
    ``benchmarks/results/finetune_study/runs/<mol>-1000-scratch``. Quick mode: a tiny model into
    ``<cache>/et-scratch-<mol>`` (pipeline test only)."""
    import torch

    from forcefield_et.calculators.ase import ETCalculator

    from .finetune_study import STUDY_DIR, run_one

    if quick:
        run_dir = cache / f"et-scratch-{molecule}"
        if fresh and run_dir.exists():
            shutil.rmtree(run_dir)
        wall, metrics = _train_tiny_scratch(molecule, run_dir, steps, threads, seed)
        best, description = run_dir / "best.pt", "tiny (--quick)"
    else:
        run_dir = STUDY_DIR / "runs" / f"{molecule}-1000-scratch"
        if fresh and run_dir.exists():
            shutil.rmtree(run_dir)
        log(f"et-scratch/{molecule}: the fine-tuning study's 1000-frame scratch run, {steps} steps -> {run_dir}")
        torch.set_num_threads(threads)
        metrics = run_one(molecule, 1000, "scratch", steps, STUDY_DIR, DATA_ROOT, None, seed=seed, threads=threads,
                          need_weights=True)
        wall, best, description = metrics["wall_time_s"], run_dir / "best.pt", "python -m benchmarks.finetune_study"
    check = check_calculator(ETCalculator(str(best), device="cpu", dtype="float32"), molecule)
    entry = {
        "model": "et-scratch", "molecule": molecule, "quick": quick, "path": str(best), "recipe": description,
        "steps": steps, "batch_size": 8, "wall_time_s": wall, "threads": threads, "final_validation": metrics,
        "train_frames": f"rmd17_{molecule}_train_01.npz[{TRAIN_FRAMES[0]}:{TRAIN_FRAMES[1]}]",
        "valid_frames": f"rmd17_{molecule}_train_01.npz[{VALID_FRAMES[0]}:{VALID_FRAMES[1]}]", "check": check,
    }
    log(f"et-scratch/{molecule}: done in {wall:.0f} s; valid force MAE {check['valid_force_mae_meV_A']:.1f} meV/Å; "
        f"20 MD steps finite: {check['md_finite']}")
    return entry


def _train_tiny_scratch(molecule: str, run_dir: Path, steps: int, threads: int, seed: int):
    """A tiny ET on the same frames (the --quick pipeline test); returns (wall time, validation)."""
    import torch

    from forcefield_et.training import config_from_dict, train

    train_file = str(rmd17_train_path(molecule))
    values = {
        "run_dir": str(run_dir),
        "seed": seed,
        "dtype": "float32",
        "model": TINY_ARCHITECTURE,
        "sources": [{
            "name": molecule, "format": "rmd17", "path": train_file, "objective": "energy_forces",
            "frames": f"{TRAIN_FRAMES[0]}:{TRAIN_FRAMES[1]}", "valid_path": train_file,
            "valid_frames": f"{VALID_FRAMES[0]}:{VALID_FRAMES[1]}",
        }],
        "objectives": {"energy_weight": 1.0, "force_weight": 10.0},
        "optim": {"batch_size": 8, "max_steps": steps, "warmup_steps": 1, "valid_every": steps,
                  "checkpoint_every": steps, "log_every": steps, "ema_decay": 0.99, "threads": threads},
    }
    torch.set_num_threads(threads)
    start = time.perf_counter()
    _, metrics = train(config_from_dict(values), progress=False)
    return time.perf_counter() - start, metrics


# ------------------------------------------------------------------------------------ NequIP
def write_extxyz(molecule: str, frames: tuple, path: Path, keys: tuple[str, str] | None = None) -> int:
    """rMD17 train-split frames [start, stop) as extxyz with energy (eV) and forces (eV/Å): as the
    calculator results (``energy``/``forces``, what nequip reads) or, with ``keys`` =
    (energy key, forces key), as ``atoms.info`` / ``atoms.arrays`` entries of those names (what
    MACE reads, e.g. ``("REF_energy", "REF_forces")``)."""
    from ase.io import write

    from forcefield_et.data import read_rmd17

    data = read_rmd17(rmd17_train_path(molecule))
    subset = data.subset(np.arange(*frames))
    structures = [subset.to_ase(i) for i in range(len(subset))]
    for atoms in structures:  # keep only what the trainer needs
        for key in list(atoms.info):
            del atoms.info[key]
        if keys is not None:
            energy, forces = atoms.get_potential_energy(), atoms.get_forces()
            atoms.calc = None
            atoms.info[keys[0]] = float(energy)
            atoms.arrays[keys[1]] = np.array(forces)
    path.parent.mkdir(parents=True, exist_ok=True)
    write(str(path), structures, format="extxyz")
    return len(structures)


def nequip_config(type_names: List[str], train_xyz: Path, valid_xyz: Path, settings: Dict[str, Any],
                  max_epochs: int, max_time: str, seed: int = 123, quick: bool = False,
                  device: str = "cpu") -> Dict[str, Any]:
    """A nequip 0.19 (Hydra) training config; ``device`` 'cpu' or 'cuda' (Lightning's 'gpu' accelerator)."""
    if device not in NEQUIP_DEVICES:
        raise ValueError(f"device must be one of {NEQUIP_DEVICES}, got {device!r}")
    monitored = "val0_epoch/weighted_sum"
    trainer: Dict[str, Any] = {
        "_target_": "lightning.Trainer",
        "accelerator": "gpu" if device == "cuda" else "cpu",
        "devices": 1,
        "max_epochs": max_epochs,
        "max_time": max_time,
        "check_val_every_n_epoch": 1,
        "log_every_n_steps": 10,
        "enable_progress_bar": False,
        "logger": {"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": "${hydra:runtime.output_dir}",
                   "name": "csv"},
        "callbacks": [
            {"_target_": "lightning.pytorch.callbacks.EarlyStopping", "monitor": monitored, "min_delta": 0.0,
             "patience": settings["early_stopping_patience"]},
            {"_target_": "lightning.pytorch.callbacks.ModelCheckpoint", "monitor": monitored,
             "dirpath": "${hydra:runtime.output_dir}", "filename": "best", "save_last": True},
            {"_target_": "lightning.pytorch.callbacks.LearningRateMonitor", "logging_interval": "epoch"},
        ],
    }
    if quick:
        trainer["limit_train_batches"] = 4
        trainer["limit_val_batches"] = 2
    metrics = {"_target_": "nequip.train.EnergyForceMetrics",
               "coeffs": {"per_atom_energy_mae": 1.0, "forces_mae": 1.0, "total_energy_mae": None,
                          "forces_rmse": None, "total_energy_rmse": None}}
    return {
        "run": ["train"],
        "cutoff_radius": settings["r_max"],
        "model_type_names": type_names,
        "data": {
            "_target_": "nequip.data.datamodule.ASEDataModule",
            "seed": seed,
            "train_file_path": str(train_xyz),
            "val_file_path": str(valid_xyz),
            "ase_args": {"format": "extxyz"},
            "transforms": [
                {"_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper",
                 "model_type_names": "${model_type_names}",
                 "chemical_species_to_atom_type_map": {t: t for t in type_names}},
                {"_target_": "nequip.data.transforms.NeighborListTransform", "r_max": "${cutoff_radius}"},
            ],
            "train_dataloader": {"_target_": "torch.utils.data.DataLoader", "batch_size": settings["batch_size"],
                                 "shuffle": True},
            "val_dataloader": {"_target_": "torch.utils.data.DataLoader", "batch_size": 10},
            "stats_manager": {"_target_": "nequip.data.CommonDataStatisticsManager",
                              "type_names": "${model_type_names}", "dataloader_kwargs": {"batch_size": 10}},
        },
        "trainer": trainer,
        "training_module": {
            "_target_": "nequip.train.EMALightningModule",
            "ema_decay": settings["ema_decay"],
            "loss": {"_target_": "nequip.train.EnergyForceLoss", "per_atom_energy": True,
                     "coeffs": {"total_energy": settings["energy_coeff"], "forces": settings["forces_coeff"]}},
            "val_metrics": metrics,
            "train_metrics": json.loads(json.dumps(metrics)),  # a copy: no YAML anchors in config.yaml
            "optimizer": {"_target_": "torch.optim.Adam", "lr": settings["lr"], "amsgrad": False},
            "lr_scheduler": {
                "scheduler": {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau",
                              "factor": settings["plateau_factor"], "patience": settings["plateau_patience"],
                              "min_lr": 1e-6},
                "monitor": monitored, "interval": "epoch", "frequency": 1,
            },
            "model": {
                "_target_": "nequip.model.NequIPGNNModel",
                "seed": seed,
                "model_dtype": "float32",
                "type_names": "${model_type_names}",
                "r_max": "${cutoff_radius}",
                "num_bessels": settings["num_bessels"],
                "bessel_trainable": settings["bessel_trainable"],
                "polynomial_cutoff_p": settings["polynomial_cutoff_p"],
                "num_layers": settings["num_layers"],
                "l_max": settings["l_max"],
                "parity": settings["parity"],
                "num_features": settings["num_features"],
                "radial_mlp_depth": settings["radial_mlp_depth"],
                "radial_mlp_width": settings["radial_mlp_width"],
                "avg_num_neighbors": "${training_data_stats:num_neighbors_mean}",
                "per_type_energy_scales": "${training_data_stats:forces_rms}",
                "per_type_energy_shifts": "${training_data_stats:per_atom_energy_mean}",
                "per_type_energy_scales_trainable": False,
                "per_type_energy_shifts_trainable": False,
            },
        },
        "global_options": {"allow_tf32": False},
    }


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


def _run(command: List[str], log_path: Path, threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with open(log_path, "a") as handle:
        handle.write(f"\n$ {' '.join(command)}\n")
        handle.flush()
        proc = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
    if proc.returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"{command[0]} failed (exit {proc.returncode}); see {log_path}:\n{tail}")


def prepare_nequip(molecule: str, cache: Path, max_epochs: int, max_time: str, threads: int, quick: bool,
                   fresh: bool = False, device: str = "cpu") -> Dict:
    """Train NequIP with nequip-train on ``device`` and compile it for ASE on the CPU
    (``model.nequip.pth``) and, when trained on CUDA, also for CUDA (``model.cuda.nequip.pth``)."""
    import yaml
    from ase.data import chemical_symbols

    from forcefield_et.data import read_rmd17

    settings = dict(NEQUIP_TINY if quick else NEQUIP_MDSIM)
    root = (cache / f"nequip-{molecule}").resolve()
    train_dir = root / "train"
    data_dir = root / "data"
    if fresh and root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    train_xyz, valid_xyz = data_dir / "train.xyz", data_dir / "val.xyz"
    n_train = write_extxyz(molecule, TRAIN_FRAMES, train_xyz)
    n_valid = write_extxyz(molecule, VALID_FRAMES, valid_xyz)
    z = sorted({int(v) for v in read_rmd17(rmd17_train_path(molecule), max_frames=1).z})
    type_names = [chemical_symbols[v] for v in z]
    config = nequip_config(type_names, train_xyz, valid_xyz, settings, max_epochs, max_time, quick=quick,
                           device=device)
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    log_path = root / "nequip.log"
    command = [_bin("nequip-train"), "-cp", str(root), "-cn", "config.yaml", f"hydra.run.dir={train_dir}"]
    last = train_dir / "last.ckpt"
    if last.is_file():
        command.append(f"++ckpt_path={last}")
        log(f"nequip/{molecule}: resuming from {last}")
    log(f"nequip/{molecule}: nequip-train ({settings['num_layers']} layers, l_max {settings['l_max']}, "
        f"{settings['num_features']} features, r_max {settings['r_max']} A; max {max_epochs} epochs / {max_time}; "
        f"{n_train} train + {n_valid} valid frames; {device}) -> {train_dir} (log {log_path})")
    start = time.perf_counter()
    _run(command, log_path, threads)
    train_wall = time.perf_counter() - start
    best = train_dir / "best.ckpt"
    if not best.is_file():
        raise RuntimeError(f"nequip-train finished without {best}; see {log_path}")
    compiled = root / "model.nequip.pth"
    targets = {"cpu": compiled, **({"cuda": root / "model.cuda.nequip.pth"} if device == "cuda" else {})}
    compile_commands = []
    start = time.perf_counter()
    for target_device, target in targets.items():
        arguments = [str(best), str(target), "--mode", "torchscript", "--device", target_device]
        _run([_bin("nequip-compile"), *arguments], log_path, threads)
        compile_commands.append(" ".join(["nequip-compile", *arguments]))
    compile_wall = time.perf_counter() - start
    epochs = _nequip_epochs(train_dir)

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from nequip.integrations.ase import NequIPCalculator

        calc = NequIPCalculator.from_compiled_model(str(compiled), device="cpu", chemical_species_to_atom_type_map=True)
    check = check_calculator(calc, molecule)
    description = (f"NequIP (nequip {_nequip_version()}, {settings['num_layers']} layers, l_max {settings['l_max']}, "
                   f"parity {settings['parity']}, {settings['num_features']} features, r_max {settings['r_max']} A, "
                   f"float32, TorchScript); {epochs} epochs on 950 rMD17 frames")
    (root / "model_info.json").write_text(json.dumps({"description": description, "settings": settings}, indent=2))
    entry = {
        "model": "nequip", "molecule": molecule, "quick": quick, "path": str(compiled), "description": description,
        "settings": settings, "max_epochs": max_epochs, "max_time": max_time, "epochs_completed": epochs,
        "train_frames": f"rmd17_{molecule}_train_01.npz[{TRAIN_FRAMES[0]}:{TRAIN_FRAMES[1]}] -> {train_xyz}",
        "valid_frames": f"rmd17_{molecule}_train_01.npz[{VALID_FRAMES[0]}:{VALID_FRAMES[1]}] -> {valid_xyz}",
        "wall_time_s": train_wall, "compile_wall_time_s": compile_wall, "threads": threads, "device": device,
        "config": str(root / "config.yaml"), "log": str(log_path), "check": check,
        "commands": [" ".join(command), *compile_commands],
    }
    log(f"nequip/{molecule}: trained {epochs} epochs in {train_wall:.0f} s, compiled in {compile_wall:.0f} s; "
        f"valid force MAE {check['valid_force_mae_meV_A']:.1f} meV/Å; {check['eval_ms_per_frame']:.1f} ms/frame; "
        f"20 MD steps finite: {check['md_finite']}")
    return entry


def _nequip_epochs(train_dir: Path) -> int | None:
    """Number of completed epochs from the CSV logger's metrics (None if unavailable)."""
    import csv

    files = sorted(train_dir.glob("csv/version_*/metrics.csv"))
    epochs = set()
    for path in files:
        with open(path) as handle:
            for row in csv.DictReader(handle):
                if row.get("epoch") not in (None, ""):
                    epochs.add(int(float(row["epoch"])))
    return max(epochs) + 1 if epochs else None


def _nequip_version() -> str:
    try:
        from importlib.metadata import version

        return version("nequip")
    except Exception:  # pragma: no cover
        return "?"


# ------------------------------------------------------------------------------------ driver
def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--molecules", nargs="+", choices=MOLECULES)
    parser.add_argument("--models", nargs="+", default=["et-scratch", "nequip"], choices=["et-scratch", "nequip"])
    parser.add_argument("--quick", action="store_true",
                        help="tiny models, a few steps, into <cache>/quick (pipeline test; aspirin + ethanol)")
    parser.add_argument("--cache", help="cache folder (default benchmarks/cache, --quick: benchmarks/cache/quick)")
    parser.add_argument("--et-steps", type=int, default=2000,
                        help="ET optimiser steps (batch 8; default: the fine-tuning study's 2000; --quick: 20)")
    parser.add_argument("--nequip-max-epochs", type=int, default=NEQUIP_MDSIM["max_epochs"],
                        help="NequIP epoch budget (190 steps of batch 5 each; --quick: 1)")
    parser.add_argument("--nequip-max-time", default="00:12:00:00",
                        help="NequIP wall-time budget per molecule, DD:HH:MM:SS (default 12 h)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training (default 1)")
    parser.add_argument("--device", choices=NEQUIP_DEVICES, default="cpu",
                        help="where nequip-train runs (cuda: Lightning's GPU accelerator; the model is compiled "
                             "for the CPU and for CUDA)")
    parser.add_argument("--fresh", action="store_true",
                        help="delete earlier runs of the selected models first (default: resume them)")
    args = parser.parse_args(argv)
    fresh = args.fresh or args.quick  # the quick pipeline test always starts from nothing
    molecules = list(args.molecules or (["aspirin", "ethanol"] if args.quick else MOLECULES))
    cache = Path(args.cache or (CACHE_DIR / "quick" if args.quick else CACHE_DIR))
    cache.mkdir(parents=True, exist_ok=True)
    et_steps = 20 if args.quick else args.et_steps
    max_epochs = 1 if args.quick else args.nequip_max_epochs
    failures = 0
    started = time.perf_counter()
    for molecule in molecules:
        for model in args.models:
            key = f"{model}-{molecule}"
            try:
                if model == "et-scratch":
                    entry = prepare_et_scratch(molecule, cache, et_steps, args.threads, args.quick, fresh)
                else:
                    entry = prepare_nequip(molecule, cache, max_epochs, args.nequip_max_time, args.threads, args.quick,
                                           fresh, device=args.device)
            except Exception as error:
                failures += 1
                entry = {"model": model, "molecule": molecule, "error": f"{type(error).__name__}: {error}"}
                log(f"{key}: FAILED: {error}")
            entry["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
            update_prepare_log(cache, key, entry)
    log(f"prepare finished in {time.perf_counter() - started:.0f} s; log: {cache / 'prepare_log.json'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

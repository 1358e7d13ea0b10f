"""Command-line interface: ``forcefield-et pretrain|finetune|evaluate|md|export|info``.

Run ``forcefield-et COMMAND --help`` for each command's options and examples.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import List, Union

import torch

from . import __version__
from .cli_validators import (
    batch_size_arg,
    bond_change_arg,
    charge_arg,
    check_paths,
    committee_size_arg,
    device_arg,
    existing_file,
    existing_path,
    force_threshold_arg,
    fraction,
    friction_arg,
    hidden_channels_arg,
    label_method_arg,
    learning_rate_arg,
    loss_weight_arg,
    model_reference,
    multiplicity_arg,
    nonnegative_float,
    nonnegative_int,
    num_layers_arg,
    open_fraction_arg,
    output_directory,
    output_file,
    positive_float,
    positive_int,
    pressure_arg,
    seed,
    temperature_arg,
    threads_arg,
    timestep_arg,
    workers_arg,
    zbl_scale_arg,
)
from .runtime import COMPILE_MIN_STEPS
from .training.config import (
    DEFAULT_COMMITTEE_SIZE,
    FINETUNE_OPTIM,
    FINETUNE_SCRATCH_LAYERS,
    UNLIMITED_STEPS,
    OptimConfig,
    SourceConfig,
    TrainConfig,
    field_default,
)
from .training.objectives import ObjectiveConfig
from .training.xtb_stage import XtbStage

EPILOG = """examples:
  forcefield-et pretrain --config configs/pretrain_cpu_small.yaml
  forcefield-et finetune --model pretrained --train train.xyz --n-train 500 --out my_model
  forcefield-et evaluate --model my_model/best.pt --data test.xyz --out eval
  forcefield-et md structure.xyz --model pretrained --temperature 300 --steps 2000 --out md
  forcefield-et export --model pretrained --out model.torchscript.pt
  forcefield-et export --model runs/pretrain_cpu_small/best.pt --format checkpoint \\
      --card configs/pretrained_card.yaml --out forcefield_et/checkpoints/pretrained.pt
  forcefield-et info pretrained
"""

DEFAULT_FINETUNE_STEPS = FINETUNE_OPTIM.max_steps
BROKEN_BOND_EXIT_STATUS = 3  # forcefield-et md --max-bond-change: a bond broke, the run stopped early
UNCERTAIN_EXIT_STATUS = 4  # forcefield-et md --max-force-std: the committee disagreed, the run stopped early


def _launch_workers(args: argparse.Namespace) -> int | None:
    """``--workers N`` (N > 1) outside ``torchrun``: run this same command as N data-parallel
    worker processes on this machine (``torchrun --standalone``, gloo on CPU, NCCL on GPUs) and
    return their exit status; None when this process should train itself."""
    import os
    import subprocess

    if args.workers <= 1 or "WORLD_SIZE" in os.environ:
        return None
    argv = [str(item) for item in args.argv]
    for index, item in enumerate(argv):
        if item == "--workers":
            del argv[index : index + 2]
            break
        if item.startswith("--workers="):
            del argv[index]
            break
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["OMP_NUM_THREADS"] = str(max(1, getattr(args, "threads", 0) or 1))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.workers}",
               "-m", "forcefield_et.cli", *argv]
    print(f"training on {args.workers} data-parallel workers: {' '.join(command[1:])}", file=sys.stderr)
    return subprocess.call(command, env=env)


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from .training import load_config, train

    launched = _launch_workers(args)
    if launched is not None:
        return launched

    config = load_config(args.config)
    if args.max_steps is not None:
        config.optim.max_steps = args.max_steps
    if args.run_dir is not None:
        config.run_dir = args.run_dir
    if args.compile is not None:
        config.optim.compile = args.compile
    if args.device is not None:
        config.optim.device = args.device
    if args.threads is not None:
        config.optim.threads = args.threads
    existing = "overwrite" if args.overwrite else "resume"
    trainer, metrics = train(config, progress=not args.no_progress, existing=existing)
    if trainer.rank == 0:
        print(json.dumps(metrics, indent=2))
    return 0


def finetune_config(args: argparse.Namespace) -> TrainConfig:
    """The training configuration of ``forcefield-et finetune`` with the parsed ``args``."""
    from .training import config_from_dict

    open_ended = args.steps is None and bool(args.time_budget or args.early_stop_patience)
    if args.steps is None:
        args.steps = UNLIMITED_STEPS if open_ended else DEFAULT_FINETUNE_STEPS
    if args.schedule is None:
        # a run that the time budget or early stopping ends has no step count for a cosine to decay over
        args.schedule = "plateau" if open_ended else FINETUNE_OPTIM.schedule
    elif args.schedule == "cosine" and open_ended and not args.time_budget:
        raise ValueError(
            "--schedule cosine decays the learning rate over --steps or over --time-budget, and this run has "
            "neither: give one, or leave --schedule out (a run that --early-stop-patience ends halves the "
            "learning rate on plateaus of the validation loss)"
        )

    source = {
        "name": args.name,
        "path": args.train,
        "format": args.format,
        "objective": "energy_forces" if args.energy_weight > 0 else "forces",
        "valid_fraction": args.valid_fraction,
        "valid_max_frames": args.valid_max_frames,
    }
    if args.drop_invalid_frames:
        source["drop_invalid_frames"] = True
    if args.drop_outliers is not None:
        source["drop_outliers"] = args.drop_outliers
    if args.n_train is not None:
        source["frames"] = f"0:{args.n_train}"
        if not args.valid:
            # Validation: the frames right after the first n_train of the same file(s).
            source["valid_path"] = args.train
            source["valid_frames"] = f"{args.n_train}:{args.n_train + args.n_valid_from_train}"
    if args.valid:
        source["valid_path"] = args.valid
    if args.test:
        source["test_path"] = args.test
    keys = {k: v for k, v in (("energy_key", args.energy_key), ("forces_key", args.forces_key)) if v}
    if keys:
        if args.format not in ("auto", "ase"):
            raise ValueError(
                f"--energy-key and --forces-key apply to ASE-readable files (--format ase), not {args.format}"
            )
        source["format"] = "ase"
        source["options"] = keys
    sources = [source]
    if args.replay:
        from .training import with_replay

        sources = with_replay(sources, args.replay, args.replay_ratio, args.replay_weight, args.replay_format)
    values = {
        "run_dir": args.out,
        "init_from": None if args.model == "scratch" else args.model,
        "seed": args.seed,
        "dtype": args.dtype,
        "sources": sources,
        "objectives": {"energy_weight": args.energy_weight, "force_weight": args.force_weight,
                       "stress_weight": args.stress_weight},
        "optim": {
            "batch_size": args.batch_size,
            "max_steps": args.steps,
            "lr": args.lr,
            "min_lr": args.min_lr,
            "encoder_lr_scale": args.encoder_lr_scale,
            "warmup_steps": min(args.warmup_steps, max(1, args.steps // 10)),
            "valid_every": args.valid_every,
            "checkpoint_every": args.checkpoint_every,
            "schedule": args.schedule,
            "plateau_factor": args.plateau_factor,
            "plateau_patience": args.plateau_patience,
            "early_stop_patience": args.early_stop_patience,
            "time_budget_s": args.time_budget,
            "ema_decay": args.ema_decay,
            "threads": args.threads,
            "device": args.device,
            "compile": args.compile,
        },
    }
    if args.model == "scratch" and args.hidden_channels:
        values["model"] = {"hidden_channels": args.hidden_channels, "num_layers": args.num_layers}
    if args.zbl is not None:
        values.setdefault("model", {})["zbl"] = True if args.zbl == 1.0 else args.zbl
    return config_from_dict(values)


def _cmd_finetune(args: argparse.Namespace) -> int:
    from .training import train

    if args.xtb_stage is not None:
        if args.workers > 1 or args.committee is not None:
            raise ValueError("--xtb-stage trains one model in one process: leave out --workers and --committee")
        args.model = _xtb_stage(args)
    launched = _launch_workers(args)
    if launched is not None:
        return launched
    config = finetune_config(args)
    existing = "require" if args.resume else "overwrite" if args.overwrite else "refuse"
    if args.xtb_stage is not None and args.resume:
        existing = "resume"  # the stage may have stopped before the final fine-tuning began
    if args.committee is not None:
        return _finetune_committee(args, config)
    trainer, metrics = train(config, progress=not args.no_progress, existing=existing)
    if trainer.rank != 0:
        return 0
    print(json.dumps(metrics, indent=2))
    print(_best_summary(Path(args.out) / "best.pt", args.name), file=sys.stderr)
    if args.test:
        _test_best(config, args.test, Path(args.out))
    return 0


def _best_summary(best: Path, source: str) -> str:
    """One line on a run's best.pt: its step and validation errors on ``source``'s frames."""
    from .checkpoint import read_checkpoint

    metadata = read_checkpoint(best)["metadata"]
    validation = metadata.get("validation") or {}
    errors = [f"{label} {validation[f'{source}/{key}']:.2f} {unit}" for key, label, unit in (
        ("force_mae_meV_A", "force MAE", "meV/Å"), ("energy_mae_meV", "energy MAE", "meV"),
        ("stress_mae_meV_A3", "stress MAE", "meV/Å³")) if f"{source}/{key}" in validation]
    step = (metadata.get("training") or {}).get("step")
    return f"{best}: the weights of step {step}" + (f", validation {', '.join(errors)}" if errors else "")


def _xtb_stage(args: argparse.Namespace) -> str:
    """``finetune --xtb-stage SMILES``: make the molecule's GFN2-xTB corpus and fine-tune ``--model`` on it
    (``--out/xtb_stage/``, :mod:`forcefield_et.training.xtb_stage`), resuming either where a run
    stopped; returns the stage's best.pt, the start of the fine-tuning on ``--train``."""
    from .data.corpus import require_dependencies
    from .training import train
    from .training.xtb_stage import (
        XtbStage,
        check_stage_record,
        make_stage_corpus,
        remove_stage,
        stage_paths,
        stage_shards,
    )

    require_dependencies()
    stage = XtbStage(args.xtb_stage, trajectories=args.xtb_stage_trajectories, md_frames=args.xtb_stage_frames,
                     time_budget_s=args.xtb_stage_budget, seed=args.seed)
    out = Path(args.out)
    paths = stage_paths(out)
    holds_run = paths["root"].exists() or (out / "last.pt").exists() or (out / "best.pt").exists()
    if args.overwrite:
        remove_stage(out)
    elif args.resume and not paths["record"].is_file():
        raise ValueError(f"nothing to resume: {out} holds no GFN2-xTB stage ({paths['record']})")
    elif not args.resume and holds_run:
        raise ValueError(f"{out} already holds a run; pass --resume to continue it or --overwrite to replace it")
    check_stage_record(out, stage)

    print(f"GFN2-xTB stage: {stage.trajectories} trajectories of each of {', '.join(stage.smiles)} -> "
          f"{paths['corpus']}", file=sys.stderr)
    corpus = make_stage_corpus(stage, paths["corpus"], progress=not args.no_progress)
    stage_args = argparse.Namespace(**vars(args))
    recipe = {  # the stage's own recipe; only the start, the architecture and the runtime follow the command
        "train": stage_shards(paths["corpus"]), "format": "xtb_corpus", "name": "xtb_stage", "out": str(paths["run"]),
        "energy_key": None, "forces_key": None, "n_train": None, "valid": None, "test": None, "replay": None,
        "valid_fraction": stage.valid_fraction, "valid_max_frames": field_default(SourceConfig, "valid_max_frames"),
        "drop_invalid_frames": False, "drop_outliers": None,
        "steps": None, "schedule": None, "time_budget": stage.time_budget_s,
        "early_stop_patience": stage.early_stop_patience, "plateau_patience": stage.plateau_patience,
        "valid_every": stage.valid_every, "batch_size": FINETUNE_OPTIM.batch_size, "lr": FINETUNE_OPTIM.lr,
        "min_lr": FINETUNE_OPTIM.min_lr, "encoder_lr_scale": FINETUNE_OPTIM.encoder_lr_scale,
        "warmup_steps": FINETUNE_OPTIM.warmup_steps, "ema_decay": FINETUNE_OPTIM.ema_decay,
        "plateau_factor": FINETUNE_OPTIM.plateau_factor,
        "energy_weight": field_default(ObjectiveConfig, "energy_weight"),
        "force_weight": field_default(ObjectiveConfig, "force_weight"),
        "stress_weight": field_default(ObjectiveConfig, "stress_weight"),
    }
    vars(stage_args).update(recipe)
    trainer, _ = train(finetune_config(stage_args), progress=not args.no_progress, existing="resume")
    best = paths["run"] / "best.pt"
    print(f"GFN2-xTB stage: {corpus['frames_relaxed'] + corpus['frames_md']} frames, {trainer.step} steps, "
          f"{trainer.cpu_seconds / 3600:.2f} CPU-h ({trainer.stop_reason or 'max steps'}); "
          f"{_best_summary(best, 'xtb_stage')}; fine-tuning on {' '.join(map(str, args.train))} from it",
          file=sys.stderr)
    return str(best)


def _finetune_committee(args: argparse.Namespace, config) -> int:
    """``finetune --committee K``: K members into ``--out/member_<k>/`` and ``--out/committee.json``
    (rerunning resumes unfinished members and skips finished ones)."""
    from .registry import COMMITTEE_FILE
    from .training.committee import train_committee, train_head_committee

    out = Path(args.out)
    if args.committee_kind == "heads":  # one run of K heads on a shared representation in --out
        existing = "require" if args.resume else "overwrite" if args.overwrite else "resume"
        if existing != "overwrite" and any(out.glob("member_*/last.pt")):
            raise ValueError(f"{out} holds a committee of checkpoints; choose another --out for a heads committee")
        result = train_head_committee(config, args.committee, progress=not args.no_progress, existing=existing)
        print(json.dumps(result, indent=2))
        if args.test:
            _test_best(config, args.test, out)
        return 0
    if (out / "last.pt").exists() or (out / "best.pt").exists():
        raise ValueError(f"{out} holds a single training run, not a committee; choose another --out")
    if args.resume and not any(out.glob("member_*/last.pt")):
        raise ValueError(f"nothing to resume: {out} holds no committee member")
    existing = "overwrite" if args.overwrite else "resume"
    if existing == "overwrite":
        (out / COMMITTEE_FILE).unlink(missing_ok=True)
    result = train_committee(config, args.committee, progress=not args.no_progress, existing=existing)
    print(json.dumps(result, indent=2))
    if args.test:
        for index in range(args.committee):
            member_out = out / f"member_{index}"
            _test_best(dataclasses.replace(config, run_dir=str(member_out)), args.test, member_out)
    return 0


def _test_best(config, test_path: str, out: Path) -> None:
    """Evaluate the run's best.pt on every frame of the test file; writes test_metrics.json."""
    from .data.sources import read_source
    from .evaluation import evaluate_model
    from .files import write_text_atomic

    test = read_source(config.sources[0], config.data_root, path=test_path, validation="test")
    result = evaluate_model(str(out / "best.pt"), test, device=config.optim.device, threads=config.optim.threads)
    result["data"] = str(test_path)
    write_text_atomic(out / "test_metrics.json", json.dumps(result, indent=2))
    errors = ", ".join(f"{k} {result[k]:.2f}" for k in ("force_mae_meV_A", "energy_mae_meV", "stress_mae_meV_A3")
                       if k in result)
    print(f"best.pt on {test_path} ({result['frames']} frames): {errors} -> {out / 'test_metrics.json'}")


def parse_duration(text: str) -> float:
    """'2h', '90m', '45s', '1h30m' or a bare number of hours -> seconds."""
    import re

    value = str(text).strip().lower()
    try:
        seconds = float(value) * 3600
    except ValueError:
        parts = re.fullmatch(r"(?:(\d+(?:\.\d*)?)h)?(?:(\d+(?:\.\d*)?)m)?(?:(\d+(?:\.\d*)?)s)?", value)
        if not value or parts is None:
            raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 2h, 90m, 1h30m or 3600s") from None
        hours, minutes, secs = (float(g) if g else 0.0 for g in parts.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: the duration must be positive and finite")
    return seconds


def _cmd_corpus(args: argparse.Namespace) -> int:
    from .data.corpus import CorpusSettings, make_corpus, read_smiles, require_dependencies

    require_dependencies()
    smiles = read_smiles(args.smiles)
    if args.max_molecules is not None:
        smiles = smiles[: args.max_molecules]
    settings = CorpusSettings(
        method=args.method, seed=args.seed, md_frames=args.md_frames, displacements=args.displacements,
        molecules_per_shard=args.molecules_per_shard,
    )
    summary = make_corpus(smiles, args.out, settings, progress=not args.no_progress)
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_model

    result = evaluate_model(
        args.model,
        args.data,
        out_dir=args.out,
        data_format=args.format,
        max_frames=args.max_frames,
        dtype=args.dtype,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        predictions=args.write_predictions,
        device=args.device,
        threads=args.threads,
    )
    print(json.dumps(result, indent=2))
    if not result["labels"]:
        print(f"forcefield-et evaluate: {args.data} has no energy or force labels: wrote the predictions to "
              f"{Path(args.out) / 'predictions.extxyz'}, no errors", file=sys.stderr)
    return 0


def _cmd_md(args: argparse.Namespace) -> int:
    from ase.io import read

    from .calculators.ase import ETCalculator
    from .md import run_md
    from .structures import structure_path

    path = Path(args.structure)
    if not path.is_file():
        if path.suffix or len(path.parts) > 1:  # a file name or path, not a bundled name
            if path.is_dir():
                raise FileNotFoundError(f"{path} is a directory, not a structure file")
            raise FileNotFoundError(f"structure file not found: {path}")
        path = structure_path(args.structure)
    try:
        atoms = read(str(path))
    except Exception as error:  # ase raises many types for unreadable files
        raise ValueError(f"{path}: cannot read as a structure file ({type(error).__name__}: {error})") from None
    model = _model_or_committee(args.model)
    from .runtime import compile_pays_off

    # automatic: compile where the run repays it and the model supports it (a heads committee does not)
    compile_energy = args.compile if args.compile is not None else ("auto" if compile_pays_off(args.steps) else False)
    atoms.calc = ETCalculator(model, device=args.device, dtype=args.dtype, compile=compile_energy, threads=args.threads)
    watcher = None
    if args.watcher is not None:  # a committee evaluated at the saved frames only
        watcher = ETCalculator(_model_or_committee(args.watcher), device=args.device, dtype=args.dtype,
                               threads=args.threads)
        if not watcher.is_committee:
            raise ValueError(f"--watcher {args.watcher!r} is a single model; a watcher must be a committee (a "
                             "committee directory or committee.json from finetune --committee, or checkpoints "
                             "separated by commas)")
    threads = _threads_for(len(atoms), args.threads) if atoms.calc.device.type == "cpu" else 0
    relax_fmax = None if args.no_relax else args.relax_fmax
    if args.thermostat is None:
        args.thermostat = "nose-hoover" if args.pressure is not None else "langevin"
    if args.pressure is not None and args.thermostat != "nose-hoover":
        raise ValueError(f"--pressure runs with --thermostat nose-hoover (ASE's isotropic MTK barostat with a "
                         f"Nosé–Hoover chain), not {args.thermostat}")
    print(
        f"MD of {path.name} ({len(atoms)} atoms) with model {args.model!r}: {args.steps} steps of "
        f"{args.timestep} fs, {args.thermostat} at {args.temperature} K, "
        + (f"{args.pressure:g} bar (MTK barostat, {args.barostat_time:g} fs), " if args.pressure is not None else "")
        + (f"{threads} torch thread(s)" if threads else f"on {atoms.calc.device}")
        + (", compiled" if compile_energy else "")
        + (f", watched by {args.watcher!r}" if watcher is not None else "")
        + (f", after relaxing to fmax {relax_fmax} eV/Å" if relax_fmax is not None else "")
        + f" -> {args.out}/"
    )
    summary = run_md(
        atoms,
        args.out,
        steps=args.steps,
        timestep_fs=args.timestep,
        temperature_K=args.temperature,
        thermostat=args.thermostat,
        friction_per_fs=args.friction,
        interval=args.interval,
        seed=args.seed,
        progress=not args.no_progress,
        relax_fmax=relax_fmax,
        max_bond_change=args.max_bond_change,
        max_force_std=args.max_force_std,
        existing="overwrite" if args.overwrite else "resume",
        # compiling changes results only by float32 rounding, like the thread count: not a setting of the run
        settings={"model": _model_fingerprint(args.model), "dtype": args.dtype,
                  **({"watcher_model": _model_fingerprint(args.watcher)} if watcher is not None else {})},
        watcher=watcher,
        pressure_bar=args.pressure,
        barostat_time_fs=args.barostat_time,
    )
    print(json.dumps(summary, indent=2))
    if "stopped" in summary:
        stopped = summary["stopped"]
        print(f"forcefield-et md: stopped at {stopped['time_fs'] / 1000:g} ps (step {stopped['step']}): "
              f"{stopped['reason']}", file=sys.stderr)
        return UNCERTAIN_EXIT_STATUS if stopped.get("criterion") == "max_force_std" else BROKEN_BOND_EXIT_STATUS
    return 0


def _model_or_committee(reference: str) -> Union[str, List[str]]:
    """A --model value as ETCalculator takes it: checkpoints separated by commas form a committee."""
    return reference.split(",") if "," in reference else reference


def _model_fingerprint(reference: str) -> List[str]:
    """The model of an MD run, as ``md`` compares it on resuming: each name, and each file's SHA-256."""
    import hashlib

    entries = []
    for item in reference.split(","):
        path = Path(item)
        if path.is_dir():
            files = sorted(path.glob("*.json")) + sorted(path.glob("member_*/best.pt"))
        else:
            files = [path] if path.is_file() else []
        digests = [hashlib.sha256(f.read_bytes()).hexdigest()[:16] for f in files]
        entries.append(item + "".join(f" sha256:{d}" for d in digests))
    return entries


def _cmd_select(args: argparse.Namespace) -> int:
    """``select``: the frames of a file that a committee is most unsure of, kept diverse."""
    import numpy as np
    from ase.io import read, write

    from .calculators.ase import ETCalculator
    from .selection import select_frames

    data = Path(args.data)
    if not data.is_file():
        raise FileNotFoundError(f"data file not found: {data}")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ValueError(f"{out} exists; choose another --out or pass --overwrite")
    model = _model_or_committee(args.model)
    calc = ETCalculator(model, device=args.device, dtype=args.dtype)
    if not calc.is_committee:
        raise ValueError("select needs a committee --model (its directory, committee.json, or comma-separated "
                         "checkpoints); a single model has no force std")
    frames = read(str(data), index=":", **({"format": args.format} if args.format != "auto" else {}))
    if not frames:
        raise ValueError(f"{data} holds no frames")
    results = calc.batch_evaluate(frames, batch_size=args.batch_size)
    picked = select_frames(frames, [r["forces_std"] for r in results], args.n, args.min_distance,
                           args.min_force_std)
    chosen = []
    for entry in picked:
        atoms = frames[entry["index"]].copy()  # positions, numbers, cell: no labels to be mistaken for DFT
        atoms.info = {"source_file": str(data), "source_index": entry["index"],
                      "max_force_std_eV_A": entry["max_force_std_eV_A"]}
        chosen.append(atoms)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if chosen:
        write(str(tmp), chosen, format="extxyz")
    else:
        tmp.write_text("")
    tmp.replace(out)
    scores = [float(np.max(r["forces_std"])) for r in results]
    print(json.dumps({"frames": len(frames), "selected": picked, "out": str(out),
                      "max_force_std_eV_A": {"min": min(scores), "median": float(np.median(scores)),
                                             "max": max(scores)}}, indent=2))
    return 0


def _cmd_label(args: argparse.Namespace) -> int:
    """``label``: energy and forces of unlabelled frames from GFN2-xTB (tblite), as extxyz."""
    from ase.io import read

    from .data.labelling import file_sha256, label_frames

    data = Path(args.data)
    frames = read(str(data), index=":", **({"format": args.format} if args.format != "auto" else {}))
    if not frames:
        raise ValueError(f"{data} holds no frames")
    summary = label_frames(frames, args.out, file_sha256(data), method=args.method, charge=args.charge,
                           multiplicity=args.multiplicity, overwrite=args.overwrite, progress=not args.no_progress)
    print(json.dumps(summary, indent=2))
    if summary["failed"]:
        print(f"forcefield-et label: warning: {len(summary['failed'])} frame(s) failed to converge and were left "
              f"out: {summary['failed']}", file=sys.stderr)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import torch

    from .registry import load_model

    if args.format == "checkpoint":
        from .registry import export_checkpoint, resolve_model_path

        card = _read_card(args.card) if args.card else {}
        if args.name:
            card["name"] = args.name
        path = export_checkpoint(resolve_model_path(args.model), args.out, card)
        print(f"wrote inference checkpoint {path} ({path.stat().st_size / 1e6:.1f} MB)")
        return 0
    model = load_model(args.model, dtype=args.dtype)
    scripted = torch.jit.script(model)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    scripted.save(args.out)
    print(
        f"wrote TorchScript model {args.out}: forward(z [N] long, pos [N,3] Å, batch, cell) -> "
        f"{{energy eV, forces eV/Å, stress eV/Å³}}, {args.dtype}"
    )
    return 0


def _read_card(path: str) -> dict:
    """The model-card entries of a YAML file (a mapping); ValueError naming the file otherwise."""
    import yaml

    try:
        card = yaml.safe_load(Path(path).read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        one_line = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        raise ValueError(f"--card {path}: not a YAML file ({one_line})") from None
    if not isinstance(card, dict):
        raise ValueError(f"--card {path}: expected a YAML mapping of model-card entries, got {type(card).__name__}")
    return card


def _cmd_info(args: argparse.Namespace) -> int:
    import textwrap

    from .checkpoint import read_checkpoint
    from .elements import symbol
    from .registry import bundled_models, resolve_model_path

    if args.model is None:
        print("bundled models (forcefield-et info NAME for a model's card):")
        for name, path in bundled_models().items():
            meta = read_checkpoint(path)["metadata"]
            errors = (meta.get("test_errors") or {})
            detail = f", test force MAE {errors['force_mae_meV_A']:.1f} meV/Å" if "force_mae_meV_A" in errors else ""
            elements = " ".join(symbol(z) for z in meta.get("hyperparameters", {}).get("elements", []))
            compositions = (meta.get("training_domain") or {}).get("compositions")
            trained_on = f", trained on {', '.join(compositions)}" if compositions else ""
            print(f"  {name:22s} {elements}{trained_on}{detail}")
            if meta.get("description"):
                print(f"  {'':22s} {textwrap.shorten(str(meta['description']), width=100, placeholder=' ...')}")
        return 0
    path = resolve_model_path(args.model)
    meta = read_checkpoint(path)["metadata"]
    hyper = meta.get("hyperparameters", {})
    print(f"model:      {args.model}  ({path}, {path.stat().st_size / 1e6:.1f} MB)")
    print(f"elements:   {' '.join(symbol(z) for z in hyper.get('elements', []))}")
    print(f"cutoff:     {hyper.get('cutoff')} Å")
    print(
        f"size:       {hyper.get('hidden_channels')} hidden, {hyper.get('num_layers')} layers, "
        f"{hyper.get('num_heads')} heads, {hyper.get('num_rbf')} RBF"
    )
    print(f"units:      {meta.get('units')}")
    domain = meta.get("training_domain") or {}
    if domain:
        compositions = domain.get("compositions")
        print(
            f"domain:     trained on {' '.join(symbol(z) for z in domain.get('elements', []))}"
            + (f"; compositions {', '.join(compositions)}" if compositions else "; many compositions")
            + " (other structures get a DomainWarning)"
        )
    training = meta.get("training") or {}
    for source in training.get("sources", []):
        print(f"data:       {source['name']}: {source['frames']} frames, objective {source['objective']}")
    if training.get("step") is not None:
        print(f"trained:    {training['step']} steps")
    start = (training.get("config") or {}).get("init_from")
    if start:
        parent = meta.get("parent_training") or {}
        seen = ", ".join(f"{source['name']} ({source['frames']} frames)" for source in parent.get("sources", []))
        print(textwrap.fill(f"started:    from {start}" + (f", itself trained on {seen}" if seen else ""),
                            width=110, subsequent_indent=" " * 12, break_long_words=False, break_on_hyphens=False))
    for key, value in sorted((meta.get("validation") or {}).items()):
        # test-split errors logged beside the validation (learning curves) never select the weights
        label = "monitored:" if "/test_" in key else "valid:    "
        print(f"{label} {key} = {value:.4g}")
    test = meta.get("test_errors") or {}
    if "force_mae_meV_A" in test:
        energy = f", energy MAE {test['energy_mae_meV']:.2f} meV" if "energy_mae_meV" in test else ""
        print(f"test:       {test.get('split', 'test')} ({test.get('frames', '?')} frames): force MAE "
              f"{test['force_mae_meV_A']:.2f} meV/Å{energy}")
    cost = meta.get("training_cost") or {}
    if "cpu_hours" in cost:
        print(f"cost:       {cost['cpu_hours']:.2f} CPU-hours of training")
    if hyper.get("zbl"):
        scale = 1.0 if hyper["zbl"] is True else float(hyper["zbl"])
        print(f"prior:      ZBL repulsion, zero beyond {scale:g} x the covalent-radii sum")
    for key in ("description", "level_of_theory", "limits"):
        if meta.get(key):
            print(f"{key}: {meta[key]}")
    print(f"version:    forcefield_et {meta.get('package_version')} (git {meta.get('git_commit')})")
    return 0


def _threads_for(n_atoms: int, requested: int | None) -> int:
    """The torch thread count a command uses for ``n_atoms`` atoms (set process-wide)."""
    from .runtime import apply_threads

    return apply_threads(n_atoms, requested=requested or None)


THREADS_HELP = (
    "torch CPU threads; 0: automatic (1 for molecules up to about 100 atoms, more for larger systems, at most "
    "the cores available and never more than OMP_NUM_THREADS; FORCEFIELD_ET_THREADS overrides it)"
)
DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda or cuda:N"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default where it says something (not for flags, unset options, or help
    that already names its default) and keeps the examples' line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forcefield-et",
        description="Force-centric pre-trained Equivariant Transformer potentials (units: Å, eV).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__} (torch {torch.__version__})")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "pretrain",
        help="force-centric pretraining from a YAML config",
        epilog="example: forcefield-et pretrain --config configs/pretrain_cpu_small.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, type=existing_file, help="YAML training configuration (see configs/)")
    p.add_argument(
        "--max-steps", type=nonnegative_int,
        help=f"override optim.max_steps (the config's, else {field_default(OptimConfig, 'max_steps')})",
    )
    p.add_argument("--run-dir", type=output_directory, help="override run_dir")
    p.add_argument(
        "--overwrite", action="store_true", help="delete the run in run_dir and start afresh (by default a run "
        "with the same configuration is resumed, and one with another configuration is refused)"
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="override optim.compile (compile the training step: faster on CPU after a first step of about a minute; "
        f"the config's, else {field_default(OptimConfig, 'compile')})",
    )
    p.add_argument(
        "--workers", type=workers_arg, default=1, metavar="N",
        help="data-parallel worker processes on this machine (torchrun --standalone; one core each, the batch "
        "split between them; the time budget counts the CPU time of all)",
    )
    p.add_argument(
        "--device", type=device_arg,
        help=f"override optim.device (the config's, else {field_default(OptimConfig, 'device')}): {DEVICE_HELP}",
    )
    p.add_argument(
        "--threads", type=threads_arg,
        help=f"override optim.threads (the config's, else {field_default(OptimConfig, 'threads')}): {THREADS_HELP}",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser(
        "finetune",
        help="fine-tune a model (or train from scratch) on energies and forces",
        epilog="examples:\n  forcefield-et finetune --model pretrained --train rmd17_aspirin_train_01.npz "
        "--n-train 950 --out runs/aspirin\n"
        "  forcefield-et finetune --train data.xyz --time-budget 2h --early-stop-patience 20 --test test.xyz --out run",
        formatter_class=_HelpFormatter,
    )
    p.add_argument(
        "--model", default="pretrained", type=model_reference, help="starting model: name, path, or 'scratch'"
    )
    p.add_argument(
        "--train", required=True, nargs="+", type=existing_path, help="training data file(s) (extxyz, ASE db, npz, ...)"
    )
    p.add_argument(
        "--format", default=field_default(SourceConfig, "format"), help="reader (auto, rmd17, ase, ase_db, deepmd, ...)"
    )
    p.add_argument(
        "--energy-key", help="extxyz/ASE files: the info key holding the energy (default: the calculator's energy)"
    )
    p.add_argument(
        "--forces-key", help="extxyz/ASE files: the arrays key holding the forces (default: the calculator's forces)"
    )
    p.add_argument("--n-train", type=positive_int, help="use the first N frames for training")
    p.add_argument(
        "--n-valid-from-train",
        type=positive_int,
        default=50,
        help="with --n-train and no --valid: validation frames taken after the first N (default 50)",
    )
    p.add_argument("--valid", type=existing_path, help="validation data file")
    p.add_argument(
        "--valid-fraction", type=fraction, default=field_default(SourceConfig, "valid_fraction"),
        help="validation split when no --valid",
    )
    p.add_argument(
        "--valid-max-frames", type=positive_int, default=field_default(SourceConfig, "valid_max_frames"),
        help="at most this many validation frames",
    )
    p.add_argument(
        "--out", required=True, type=output_directory, help="run directory (best.pt, last.pt, metrics.csv)"
    )
    existing = p.add_mutually_exclusive_group()
    existing.add_argument(
        "--resume", action="store_true", help="continue the run in --out (same data and settings; a longer "
        "--steps or --time-budget may extend it)"
    )
    existing.add_argument("--overwrite", action="store_true", help="delete the run in --out and start afresh")
    p.add_argument("--name", default="finetune", help="source name in logs")
    p.add_argument(
        "--steps", type=positive_int,
        help=f"optimiser steps (default: {DEFAULT_FINETUNE_STEPS}; no limit with --time-budget or "
        "--early-stop-patience, which then decide when to stop)"
    )
    optim = FINETUNE_OPTIM
    p.add_argument("--batch-size", type=batch_size_arg, default=optim.batch_size, help="structures per optimiser step")
    p.add_argument("--lr", type=learning_rate_arg, default=optim.lr, help="AdamW learning rate after the warm-up")
    p.add_argument(
        "--encoder-lr-scale", type=positive_float, default=optim.encoder_lr_scale, metavar="S",
        help="learning rate of the pretrained representation (embedding and interaction layers) as a multiple of "
        "--lr; the output head keeps --lr (e.g. 0.1: the encoder moves less than the head)",
    )
    p.add_argument(
        "--warmup-steps", type=nonnegative_int, default=optim.warmup_steps,
        help="linear warm-up steps (at most a tenth of --steps)",
    )
    p.add_argument(
        "--energy-weight", type=loss_weight_arg, default=field_default(ObjectiveConfig, "energy_weight"),
        help="per-atom energy MSE weight (0: forces only)",
    )
    p.add_argument(
        "--force-weight", type=loss_weight_arg, default=field_default(ObjectiveConfig, "force_weight"),
        help="force MSE weight",
    )
    p.add_argument(
        "--stress-weight", type=loss_weight_arg, default=field_default(ObjectiveConfig, "stress_weight"),
        help="MSE weight of the virial per atom (stress x volume / atoms, eV/atom) of periodic frames with a "
        "stress label (0: no stress term)",
    )
    p.add_argument(
        "--ema-decay", type=fraction, default=optim.ema_decay, help="decay of the weight average that best.pt holds"
    )
    p.add_argument("--min-lr", type=learning_rate_arg, default=optim.min_lr, help="floor of the learning rate")
    p.add_argument(
        "--schedule",
        choices=["cosine", "plateau"],
        help="cosine: decay to --min-lr over --steps (without --steps: over --time-budget, from the CPU time "
        "per step measured early in the run); plateau: halve the learning rate when the validation "
        "loss stops improving (default: plateau when --time-budget or --early-stop-patience ends the run and "
        "--steps is not given, cosine otherwise)",
    )
    p.add_argument(
        "--plateau-factor", type=open_fraction_arg, default=optim.plateau_factor,
        help="with --schedule plateau: lr multiplier",
    )
    p.add_argument(
        "--plateau-patience", type=nonnegative_int, default=optim.plateau_patience,
        help="with --schedule plateau: validations without improvement "
        "before the learning rate drops"
    )
    p.add_argument(
        "--early-stop-patience", type=nonnegative_int, default=optim.early_stop_patience,
        help="stop after this many validations without a new best "
        "(0: never)"
    )
    p.add_argument(
        "--time-budget",
        type=parse_duration,
        metavar="DURATION",
        help="stop after this much CPU time (2h, 90m, 1h30m; a resumed run counts the time already used)",
    )
    p.add_argument(
        "--test", type=existing_path,
        help="held-out test file: its errors are logged at every validation (learning_curve.csv/.png) "
        "and never used to select weights"
    )
    p.add_argument(
        "--drop-invalid-frames", action="store_true", help="drop training and validation frames whose energy or "
        "forces are missing or not finite (NaN/inf), and report how many per file; by default such a frame is an error"
    )
    p.add_argument(
        "--drop-outliers", type=positive_float, metavar="Z", help="drop frames whose energy per atom or largest force "
        "has a robust z-score (median/MAD) above Z; without it, outliers are only reported"
    )
    p.add_argument(
        "--replay", nargs="+", type=existing_path, metavar="FILE",
        help="force-labelled frames replayed in every batch while fine-tuning (for example the pretraining frames "
        "at the level of theory of --train), trained on forces only; validation and early stopping still follow "
        "--train's frames alone",
    )
    p.add_argument(
        "--replay-format", default=field_default(SourceConfig, "format"), help="reader of the --replay files"
    )
    p.add_argument(
        "--replay-ratio", type=open_fraction_arg, default=0.2, help="with --replay: share of every batch's frames"
    )
    p.add_argument(
        "--replay-weight", type=positive_float, default=1.0, help="with --replay: force-loss weight of the replayed "
        "frames (relative to --force-weight)"
    )
    p.add_argument("--valid-every", type=positive_int, default=optim.valid_every, help="steps between validations")
    p.add_argument(
        "--checkpoint-every", type=positive_int, default=optim.checkpoint_every,
        help="steps between resumable checkpoints (last.pt)",
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=optim.compile,
        help="compile the training step (the first step takes about a minute, later ones run faster on "
        "CPU); --no-compile trains in eager mode",
    )
    p.add_argument(
        "--zbl", nargs="?", type=zbl_scale_arg, const=1.0, metavar="SCALE",
        help="add the ZBL short-range repulsion prior (keeps atoms from fusing; no weights), switched off at "
        "SCALE (default 1) times the sum of the two atoms' covalent radii",
    )
    p.add_argument(
        "--xtb-stage", metavar="SMILES", nargs="+",
        help="first fine-tune --model on GFN2-xTB frames of these molecules (relaxations and Langevin MD made "
        "from the SMILES, in --out/xtb_stage/), then on --train from the stage's best weights; for few reference "
        "frames of known molecules; needs pip install 'forcefield-et[corpus]'",
    )
    p.add_argument(
        "--xtb-stage-trajectories", type=positive_int, default=field_default(XtbStage, "trajectories"), metavar="N",
        help="with --xtb-stage: relaxations and MD trajectories per molecule (each at its own random temperature, "
        "300-800 K)",
    )
    p.add_argument(
        "--xtb-stage-frames", type=positive_int, default=field_default(XtbStage, "md_frames"), metavar="N",
        help="with --xtb-stage: MD frames per trajectory (10 fs apart)",
    )
    p.add_argument(
        "--xtb-stage-budget", type=parse_duration, default=field_default(XtbStage, "time_budget_s"),
        metavar="DURATION", help="with --xtb-stage: CPU time of the stage's training (it also stops after "
        f"{field_default(XtbStage, 'early_stop_patience')} validations without a new best; default 30m)",
    )
    p.add_argument("--hidden-channels", type=hidden_channels_arg, help="with --model scratch")
    p.add_argument(
        "--num-layers", type=num_layers_arg, default=FINETUNE_SCRATCH_LAYERS,
        help="with --model scratch and --hidden-channels",
    )
    p.add_argument(
        "--dtype", default=field_default(TrainConfig, "dtype"), choices=["float32", "float64"],
        help="training precision",
    )
    p.add_argument(
        "--seed", type=seed, default=field_default(TrainConfig, "seed"),
        help="seed of the batches, noise and initial weights",
    )
    p.add_argument(
        "--committee", type=committee_size_arg, nargs="?", const=DEFAULT_COMMITTEE_SIZE, metavar="K",
        help=f"train a committee of K members (K omitted: {DEFAULT_COMMITTEE_SIZE}; see "
        "--committee-kind) and list it in --out/committee.json, which ETCalculator, md --model and select accept; "
        "rerunning resumes an unfinished committee; with --committee-kind checkpoints the members (seeds "
        "SEED..SEED+K-1, the same validation frames) train one after another into --out/member_<k>/ and finished "
        "ones are skipped"
    )
    p.add_argument(
        "--committee-kind", choices=["heads", "checkpoints"], default="heads",
        help="with --committee: 'heads' (the default) trains one model with K energy heads on a shared "
        "representation into --out (each head on its own bootstrap resample; about the training cost of one "
        "model, inference 1 forward + K backward passes); 'checkpoints' trains K separate models into "
        "--out/member_<k>/ (K times the cost of one, to train and to evaluate)",
    )
    p.add_argument("--threads", type=threads_arg, default=optim.threads, help=THREADS_HELP)
    p.add_argument("--device", type=device_arg, default=optim.device, help=DEVICE_HELP)
    p.add_argument(
        "--workers", type=workers_arg, default=1, metavar="N",
        help="data-parallel worker processes on this machine (torchrun --standalone; one core each, the batch "
        "split between them; the time budget counts the CPU time of all)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser(
        "corpus",
        help="training frames from SMILES: RDKit conformers labelled with GFN2-xTB (relaxed, MD, displaced)",
        epilog="example: forcefield-et corpus --smiles molecules.smi --method gfn2-xtb --out my_corpus\n"
        "the shards (my_corpus/xtb_shard*.npz) are a pretraining source with format xtb_corpus; "
        "needs pip install 'forcefield-et[corpus]'",
        formatter_class=_HelpFormatter,
    )
    p.add_argument(
        "--smiles", required=True, type=existing_file, help="text or .gz file, one SMILES per line (first column)"
    )
    p.add_argument(
        "--out", required=True, type=output_directory,
        help="output folder (resumed when it holds a run with the same settings)"
    )
    p.add_argument("--method", default="gfn2-xtb", choices=["gfn2-xtb", "gfn1-xtb"], help="tblite method")
    p.add_argument("--max-molecules", type=positive_int, help="use the first N SMILES")
    p.add_argument("--md-frames", type=nonnegative_int, default=6, help="MD frames per molecule (10 fs apart)")
    p.add_argument("--displacements", type=nonnegative_int, default=6, help="displaced frames per molecule")
    p.add_argument("--molecules-per-shard", type=positive_int, default=500, help="SMILES per output shard")
    p.add_argument("--seed", type=seed, default=0, help="seed of every random choice")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_corpus)

    p = sub.add_parser(
        "evaluate",
        help="energy/force errors on a dataset, JSON + parity plot",
        epilog="example: forcefield-et evaluate --model rmd17-aspirin --data "
        "rmd17_aspirin_test_01.npz --out eval_aspirin",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, type=model_reference)
    p.add_argument("--data", required=True, type=existing_path)
    p.add_argument("--format", default="auto")
    p.add_argument(
        "--out", default="evaluation", type=output_directory, help="output folder (metrics.json, parity.png)"
    )
    p.add_argument(
        "--write-predictions", action="store_true", help="also write predictions.extxyz: predicted energy and "
        "forces (and stress, for periodic frames with stress labels) per frame, with the reference values and "
        "per-atom force errors where the data has labels"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--max-frames", type=positive_int)
    p.add_argument("--batch-size", type=batch_size_arg, default=32)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--device", type=device_arg, default="auto", help=DEVICE_HELP)
    p.add_argument("--threads", type=threads_arg, default=0, help=THREADS_HELP)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "md",
        help="run MD with ASE from a structure file (or a bundled structure)",
        epilog="examples:\n  forcefield-et md                      # bundled aspirin, pretrained model\n"
        "  forcefield-et md my.xyz --model rmd17-aspirin --thermostat nose-hoover --temperature 500\n"
        "  forcefield-et md my.xyz --model my_committee --max-force-std 0.1   # stop where the committee disagrees\n"
        "  forcefield-et md my.xyz --model rmd17-aspirin --watcher my_committee --max-force-std 0.1",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "structure",
        nargs="?",
        default="aspirin",
        help="structure file readable by ASE, or a bundled name (default: aspirin)",
    )
    p.add_argument(
        "--model", default="pretrained", type=model_reference, help="bundled name or checkpoint path; or a "
        "committee: its directory or committee.json (finetune --committee), or checkpoints separated by commas"
    )
    p.add_argument("--steps", type=nonnegative_int, default=2000)
    p.add_argument("--timestep", type=timestep_arg, default=0.5, help="fs")
    p.add_argument("--temperature", type=temperature_arg, default=300.0, help="K")
    p.add_argument("--thermostat", choices=["langevin", "nose-hoover", "nve"],
                   help="default: langevin; nose-hoover with --pressure")
    p.add_argument("--friction", type=friction_arg, default=0.01, help="Langevin friction (1/fs)")
    p.add_argument(
        "--pressure", type=pressure_arg, metavar="BAR", help="constant pressure (bar), NPT: ASE's isotropic MTK "
        "barostat with the Nosé–Hoover thermostat, for structures periodic along a, b and c; the log adds volume, "
        "density, pressure and the conserved energy"
    )
    p.add_argument("--barostat-time", type=positive_float, default=500.0, metavar="FS",
                   help="with --pressure: the barostat's time constant (fs) (default: 500)")
    p.add_argument("--interval", type=positive_int, default=10, help="steps between saved frames")
    p.add_argument(
        "--out", default="md_run", type=output_directory, help="output folder (trajectory.traj, md_log.csv, md.png, "
        "md_state.npz); a run there with the same settings is resumed (a larger --steps extends it), one with other "
        "settings is refused"
    )
    p.add_argument("--overwrite", action="store_true", help="delete the MD run in --out and start afresh")
    p.add_argument("--device", type=device_arg, default="auto", help=DEVICE_HELP)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument(
        "--relax-fmax",
        type=force_threshold_arg,
        default=0.05,
        help="relax with FIRE to this largest force (eV/Å) before MD (default 0.05)",
    )
    p.add_argument("--no-relax", action="store_true", help="start MD from the input geometry as it is")
    p.add_argument(
        "--max-bond-change",
        type=bond_change_arg,
        metavar="ANGSTROM",
        help="stop when a covalent bond of the starting structure has changed length by more than this "
        f"(Å; MDsim's collapse criterion is 0.5) and exit with status {BROKEN_BOND_EXIT_STATUS}; without it "
        "the largest change is only reported (md_log.csv, summary)",
    )
    p.add_argument(
        "--max-force-std",
        type=force_threshold_arg,
        metavar="EV_PER_A",
        help="with a committee --model (a committee directory or committee.json from finetune --committee, or "
        "several checkpoints separated by commas) or a --watcher: stop when an atom's force std across the members "
        f"exceeds this (eV/Å) and exit with status {UNCERTAIN_EXIT_STATUS}; a committee's largest per-atom force std "
        "is logged per saved frame (md_log.csv) either way",
    )
    p.add_argument(
        "--watcher",
        type=model_reference,
        metavar="COMMITTEE",
        help="a committee that does not drive the MD, evaluated at every saved frame: its force std is logged and "
        "checked by --max-force-std instead of the driver's (an independent committee warns of a collapse earlier "
        "than one that drives the run; docs/uncertainty.md)",
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compile energy and forces into one graph: the first step compiles (about half a minute), later "
        f"steps are faster (docs/benchmarks.md); default: on for runs of at least {COMPILE_MIN_STEPS} steps",
    )
    p.add_argument("--threads", type=threads_arg, default=0, help=THREADS_HELP + " (docs/performance.md)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_md)

    p = sub.add_parser(
        "select",
        help="frames to label next: those a committee is most unsure of, kept diverse",
        epilog="example: forcefield-et select --model runs/committee --data md_run/trajectory.traj --n 20 "
        "--min-distance 0.05 --out to_label.extxyz",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--model", required=True, type=model_reference, help="a committee: its directory, "
                   "committee.json, or comma-separated checkpoints")
    p.add_argument("--data", "--pool", dest="data", required=True, type=existing_file,
                   help="the pool of candidate frames, readable by ASE (e.g. an md trajectory.traj, extxyz)")
    p.add_argument("--format", default="auto", help="ASE format of --data (auto: from the file name)")
    p.add_argument("--n", type=positive_int, default=10, help="at most this many frames")
    p.add_argument(
        "--min-distance", type=nonnegative_float, default=0.0, metavar="ANGSTROM",
        help="skip a frame whose interatomic distances differ by less than this (RMS, Å) from a frame already selected"
    )
    p.add_argument("--min-force-std", type=nonnegative_float, default=0.0, metavar="EV_PER_A",
                   help="skip frames whose largest per-atom force std is below this (eV/Å)")
    p.add_argument("--out", required=True, type=output_file,
                   help="extxyz file of the selected frames (positions only, no labels)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--batch-size", type=batch_size_arg, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.set_defaults(func=_cmd_select)

    p = sub.add_parser(
        "label",
        help="energy and forces of unlabelled frames (e.g. from select) from GFN2-xTB or DFT, as extxyz for finetune",
        epilog="example: forcefield-et label to_label.extxyz --method gfn2-xtb --out labelled.extxyz\n"
        "then: forcefield-et finetune --model pretrained --train labelled.extxyz ...; a stopped run resumes "
        "(rerun the same command); needs pip install 'forcefield-et[corpus]' (xTB) or 'forcefield-et[dft]' (DFT)",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("data", type=existing_file, help="frames readable by ASE (e.g. the extxyz written by select)")
    p.add_argument("--format", default="auto", help="ASE format of DATA (auto: from the file name)")
    p.add_argument("--method", default="gfn2-xtb", type=label_method_arg,
                   help="gfn2-xtb or gfn1-xtb (tblite), or dft:<functional>/<basis> (PySCF, molecules only; "
                   "dft:pbe/def2-svp is rMD17's level of theory)")
    p.add_argument("--charge", type=charge_arg, default=0, help="total charge of every frame (e)")
    p.add_argument("--multiplicity", type=multiplicity_arg, default=None,
                   help="spin multiplicity 2S+1 of every frame (default: the lowest for the electron count "
                   "with xTB, a singlet with DFT)")
    p.add_argument("--out", required=True, type=output_file,
                   help="extxyz file of the labelled frames (energy in eV, forces in eV/Å); resumed when it holds "
                   "an earlier run of the same command")
    p.add_argument("--overwrite", action="store_true", help="start again, replacing an existing --out")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_label)

    p = sub.add_parser(
        "export",
        help="export a model to TorchScript, or a training checkpoint to an inference checkpoint with its card",
        epilog="examples:\n  forcefield-et export --model pretrained --out pretrained.torchscript.pt\n"
        "  forcefield-et export --model runs/aspirin/best.pt --format checkpoint --card card.yaml --out aspirin.pt",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--model", default="pretrained", type=model_reference,
                   help="bundled model name or checkpoint path (a training run's best.pt)")
    p.add_argument("--out", required=True, type=output_file, help="file to write (replaced if it exists)")
    p.add_argument(
        "--format",
        default="torchscript",
        choices=["torchscript", "checkpoint"],
        help="torchscript: a scripted model; checkpoint: a safe inference checkpoint (weights + card)",
    )
    p.add_argument(
        "--card", type=existing_file, help="with --format checkpoint: YAML file of model-card entries to store"
    )
    p.add_argument("--name", help="with --format checkpoint: model name stored in the card")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="precision of the export")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "info", help="print a model's card (no argument: list the bundled models)",
        epilog="examples:\n  forcefield-et info\n  forcefield-et info pretrained",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model", nargs="?", type=model_reference,
        help="bundled name or checkpoint path (omit to list the bundled models)",
    )
    p.set_defaults(func=_cmd_info)
    return parser


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices[command]


def _show_domain_warnings_on_one_line(command: str) -> None:
    """DomainWarnings and DroppedFramesWarnings print as ``forcefield-et COMMAND: warning: ...``
    (other warnings unchanged)."""
    import warnings

    from .data.errors import DroppedFramesWarning
    from .domain import DomainWarning

    default = getattr(warnings.formatwarning, "wrapped", warnings.formatwarning)  # wrap once per process

    def format_warning(message, category, filename, lineno, line=None):  # noqa: ANN001, ANN202
        if issubclass(category, (DomainWarning, DroppedFramesWarning)):
            return f"forcefield-et {command}: warning: {message}\n"
        return default(message, category, filename, lineno, line)

    format_warning.wrapped = default  # type: ignore[attr-defined]
    warnings.formatwarning = format_warning


# commands that evaluate or train a model, and so opt in to runtime.keep_freed_memory
ALLOCATOR_COMMANDS = ("pretrain", "finetune", "evaluate", "md", "select")


def main(argv: List[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    problem = check_paths(_subparser(parser, args.command), args)
    if problem:
        print(f"forcefield-et {args.command}: error: {problem}", file=sys.stderr)
        return 2
    _show_domain_warnings_on_one_line(args.command)
    if args.command in ALLOCATOR_COMMANDS:
        from .runtime import keep_freed_memory

        keep_freed_memory()  # the application opts in: large systems reuse freed memory (runtime.py)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; training runs resume from their last checkpoint", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError, ImportError, MemoryError, FloatingPointError) as error:
        print(f"forcefield-et {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["build_parser", "main"]

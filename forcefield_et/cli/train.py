"""``forcefield-et pretrain`` and ``forcefield-et finetune``: training runs, data-parallel workers,
the GFN2-xTB stage and committees."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from ..training.config import (
    DEFAULT_COMMITTEE_SIZE,
    FINETUNE_OPTIM,
    FINETUNE_SCRATCH_LAYERS,
    UNLIMITED_STEPS,
    OptimConfig,
    SourceConfig,
    TrainConfig,
    field_default,
)
from ..training.objectives import ObjectiveConfig
from ..training.xtb_stage import XtbStage
from .common import (
    DEVICE_HELP,
    THREADS_HELP,
    HelpFormatter,
    parse_duration,
)
from .validators import (
    batch_size_arg,
    committee_size_arg,
    device_arg,
    existing_file,
    existing_path,
    fraction,
    hidden_channels_arg,
    learning_rate_arg,
    loss_weight_arg,
    model_reference,
    nonnegative_int,
    num_layers_arg,
    open_fraction_arg,
    output_directory,
    positive_float,
    positive_int,
    seed,
    threads_arg,
    workers_arg,
    zbl_scale_arg,
)

DEFAULT_FINETUNE_STEPS = FINETUNE_OPTIM.max_steps
# finetune --select-by: the validation metric (optim.select_by) of each choice
SELECT_BY = {"loss": "valid_loss", "force-mae": "valid_force_mae_meV_A"}


def launch_workers(args: argparse.Namespace) -> int | None:
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


def pretrain_command(args: argparse.Namespace) -> int:
    """``pretrain``: force-centric pretraining from a YAML configuration (resumed by default)."""
    from ..training import load_config, train

    launched = launch_workers(args)
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
    from ..training import config_from_dict

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
        from ..training import with_replay

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
            "select_by": SELECT_BY[args.select_by],
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


def finetune_command(args: argparse.Namespace) -> int:
    """``finetune``: fine-tune a model, or train one from scratch, on energies and forces."""
    from ..training import train

    if args.xtb_stage is not None:
        if args.workers > 1 or args.committee is not None:
            raise ValueError("--xtb-stage trains one model in one process: leave out --workers and --committee")
        args.model = _xtb_stage(args)
    launched = launch_workers(args)
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
    from ..checkpoint import read_checkpoint

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
    from ..data.corpus import require_dependencies
    from ..training import train
    from ..training.xtb_stage import (
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
        "select_by": "loss",
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
    from ..registry import COMMITTEE_FILE
    from ..training.committee import train_committee, train_head_committee

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
    from ..data.sources import read_source
    from ..evaluation import evaluate_model
    from ..files import write_text_atomic

    test = read_source(config.sources[0], config.data_root, path=test_path, validation="test")
    result = evaluate_model(str(out / "best.pt"), test, device=config.optim.device, threads=config.optim.threads)
    result["data"] = str(test_path)
    write_text_atomic(out / "test_metrics.json", json.dumps(result, indent=2))
    errors = ", ".join(f"{k} {result[k]:.2f}" for k in ("force_mae_meV_A", "energy_mae_meV", "stress_mae_meV_A3")
                       if k in result)
    print(f"best.pt on {test_path} ({result['frames']} frames): {errors} -> {out / 'test_metrics.json'}")


def add_pretrain_parser(sub: argparse._SubParsersAction) -> None:
    """Adds the ``pretrain`` subcommand to ``sub``."""
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
    p.set_defaults(func=pretrain_command)


def add_finetune_parser(sub: argparse._SubParsersAction) -> None:
    """Adds the ``finetune`` subcommand to ``sub``."""
    p = sub.add_parser(
        "finetune",
        help="fine-tune a model (or train from scratch) on energies and forces",
        epilog="examples:\n  forcefield-et finetune --model pretrained --train rmd17_aspirin_train_01.npz "
        "--n-train 950 --out runs/aspirin\n"
        "  forcefield-et finetune --train data.xyz --time-budget 2h --early-stop-patience 20 --test test.xyz --out run",
        formatter_class=HelpFormatter,
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
        "--select-by", choices=sorted(SELECT_BY), default="loss",
        help="validation metric that selects best.pt and that --schedule plateau and --early-stop-patience "
        "follow: loss (the energy and force objective) or force-mae (the force MAE of the validation frames, "
        "steadier than the squared errors of the loss when there are few of them)",
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
    p.set_defaults(func=finetune_command)

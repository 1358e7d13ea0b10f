"""``forcefield-et evaluate``, ``export`` and ``info``: a model's errors on labelled frames, its
TorchScript or inference-checkpoint export, and its card."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import (
    DEVICE_HELP,
    THREADS_HELP,
    HelpFormatter,
)
from .validators import (
    batch_size_arg,
    device_arg,
    existing_file,
    existing_path,
    model_reference,
    output_directory,
    output_file,
    positive_int,
    threads_arg,
)


def evaluate_command(args: argparse.Namespace) -> int:
    """``evaluate``: a model's errors on labelled frames (JSON and a parity plot), or its predictions."""
    from ..evaluation import evaluate_model

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


def export_command(args: argparse.Namespace) -> int:
    """``export``: a TorchScript model, or an inference checkpoint with a model card."""
    import torch

    from ..registry import load_model

    if args.format == "checkpoint":
        from ..registry import export_checkpoint, resolve_model_path

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


def info_command(args: argparse.Namespace) -> int:
    """``info``: a model's card, or the bundled models when no model is named."""
    import textwrap

    from ..checkpoint import read_checkpoint
    from ..elements import symbol
    from ..registry import bundled_models, resolve_model_path

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
        origin = training.get("parent") or start  # the start's model name where it has one
        print(textwrap.fill(f"started:    from {origin}" + (f", itself trained on {seen}" if seen else ""),
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
    repair = meta.get("repair") or {}
    if repair:
        before = (repair.get("repaired_test_errors") or {}).get("force_mae_meV_A")
        print(textwrap.fill(
            f"repair:     {repair.get('dft_frames')} frames of {repair.get('frames_from')}, labelled "
            f"{repair.get('level_of_theory')}" + (f"; test force MAE before it {before:.2f} meV/Å" if before else ""),
            width=110, subsequent_indent=" " * 12, break_long_words=False, break_on_hyphens=False))
    for key in ("description", "level_of_theory", "limits"):
        if meta.get(key):
            print(f"{key}: {meta[key]}")
    print(f"version:    forcefield_et {meta.get('package_version')} (git {meta.get('git_commit')})")
    return 0


def add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    """Adds the ``evaluate`` subcommand to ``sub``."""
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
    p.set_defaults(func=evaluate_command)


def add_export_parser(sub: argparse._SubParsersAction) -> None:
    """Adds the ``export`` subcommand to ``sub``."""
    p = sub.add_parser(
        "export",
        help="export a model to TorchScript, or a training checkpoint to an inference checkpoint with its card",
        epilog="examples:\n  forcefield-et export --model pretrained --out pretrained.torchscript.pt\n"
        "  forcefield-et export --model runs/aspirin/best.pt --format checkpoint --card card.yaml --out aspirin.pt",
        formatter_class=HelpFormatter,
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
    p.set_defaults(func=export_command)


def add_info_parser(sub: argparse._SubParsersAction) -> None:
    """Adds the ``info`` subcommand to ``sub``."""
    p = sub.add_parser(
        "info", help="print a model's card (no argument: list the bundled models)",
        epilog="examples:\n  forcefield-et info\n  forcefield-et info pretrained",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model", nargs="?", type=model_reference,
        help="bundled name or checkpoint path (omit to list the bundled models)",
    )
    p.set_defaults(func=info_command)

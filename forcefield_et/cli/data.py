"""``forcefield-et corpus``, ``select`` and ``label``: frames to train on, made from SMILES, picked by a
committee, or labelled with GFN2-xTB or DFT."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import (
    HelpFormatter,
    model_or_committee,
)
from .validators import (
    batch_size_arg,
    charge_arg,
    existing_file,
    label_method_arg,
    model_reference,
    multiplicity_arg,
    nonnegative_float,
    nonnegative_int,
    output_directory,
    output_file,
    positive_int,
    seed,
)


def corpus_command(args: argparse.Namespace) -> int:
    """``corpus``: GFN2-xTB frames (relaxed, MD, displaced) of the molecules of a SMILES file, as shards."""
    from ..data.corpus import CorpusSettings, make_corpus, read_smiles, require_dependencies

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


def select_command(args: argparse.Namespace) -> int:
    """``select``: the frames of a file that a committee is most unsure of, kept diverse."""
    import numpy as np
    from ase.io import read, write

    from ..calculators.ase import ETCalculator
    from ..selection import select_frames

    data = Path(args.data)
    if not data.is_file():
        raise FileNotFoundError(f"data file not found: {data}")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ValueError(f"{out} exists; choose another --out or pass --overwrite")
    model = model_or_committee(args.model)
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


def label_command(args: argparse.Namespace) -> int:
    """``label``: energy and forces of unlabelled frames from GFN2-xTB (tblite), as extxyz."""
    from ase.io import read

    from ..data.labelling import file_sha256, label_frames

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


def add_corpus_parser(sub: argparse._SubParsersAction) -> None:
    """Adds the ``corpus`` subcommand to ``sub``."""
    p = sub.add_parser(
        "corpus",
        help="training frames from SMILES: RDKit conformers labelled with GFN2-xTB (relaxed, MD, displaced)",
        epilog="example: forcefield-et corpus --smiles molecules.smi --method gfn2-xtb --out my_corpus\n"
        "the shards (my_corpus/xtb_shard*.npz) are a pretraining source with format xtb_corpus; "
        "needs pip install 'forcefield-et[corpus]'",
        formatter_class=HelpFormatter,
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
    p.set_defaults(func=corpus_command)


def add_select_parser(sub: argparse._SubParsersAction) -> None:
    """Adds the ``select`` subcommand to ``sub``."""
    p = sub.add_parser(
        "select",
        help="frames to label next: those a committee is most unsure of, kept diverse",
        epilog="example: forcefield-et select --model runs/committee --data md_run/trajectory.traj --n 20 "
        "--min-distance 0.05 --out to_label.extxyz",
        formatter_class=HelpFormatter,
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
    p.set_defaults(func=select_command)


def add_label_parser(sub: argparse._SubParsersAction) -> None:
    """Adds the ``label`` subcommand to ``sub``."""
    p = sub.add_parser(
        "label",
        help="energy and forces of unlabelled frames (e.g. from select) from GFN2-xTB or DFT, as extxyz for finetune",
        epilog="example: forcefield-et label to_label.extxyz --method gfn2-xtb --out labelled.extxyz\n"
        "then: forcefield-et finetune --model pretrained --train labelled.extxyz ...; a stopped run resumes "
        "(rerun the same command); needs pip install 'forcefield-et[corpus]' (xTB) or 'forcefield-et[dft]' (DFT)",
        formatter_class=HelpFormatter,
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
    p.set_defaults(func=label_command)

"""``forcefield-et md``: ASE molecular dynamics with a model or a committee, resumable, with bond and
uncertainty checks."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..runtime import COMPILE_MIN_STEPS
from .common import (
    DEVICE_HELP,
    THREADS_HELP,
    model_fingerprint,
    model_or_committee,
    threads_for,
)
from .validators import (
    bond_change_arg,
    device_arg,
    force_threshold_arg,
    friction_arg,
    model_reference,
    nonnegative_int,
    output_directory,
    positive_float,
    positive_int,
    pressure_arg,
    seed,
    temperature_arg,
    threads_arg,
    timestep_arg,
)

BROKEN_BOND_EXIT_STATUS = 3  # forcefield-et md --max-bond-change: a bond broke, the run stopped early
UNCERTAIN_EXIT_STATUS = 4  # forcefield-et md --max-force-std: the committee disagreed, the run stopped early


def md_command(args: argparse.Namespace) -> int:
    """``md``: relax, then run resumable MD of a structure file or bundled structure."""
    from ase.io import read

    from ..calculators.ase import ETCalculator
    from ..md import run_md
    from ..structures import structure_path

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
    model = model_or_committee(args.model)
    from ..runtime import compile_pays_off

    # automatic: compile where the run repays it and the model supports it (a heads committee does not)
    compile_energy = args.compile if args.compile is not None else ("auto" if compile_pays_off(args.steps) else False)
    atoms.calc = ETCalculator(model, device=args.device, dtype=args.dtype, compile=compile_energy, threads=args.threads)
    watcher = None
    if args.watcher is not None:  # a committee evaluated at the saved frames only
        watcher = ETCalculator(model_or_committee(args.watcher), device=args.device, dtype=args.dtype,
                               threads=args.threads)
        if not watcher.is_committee:
            raise ValueError(f"--watcher {args.watcher!r} is a single model; a watcher must be a committee (a "
                             "committee directory or committee.json from finetune --committee, or checkpoints "
                             "separated by commas)")
    threads = threads_for(len(atoms), args.threads) if atoms.calc.device.type == "cpu" else 0
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
        settings={"model": model_fingerprint(args.model), "dtype": args.dtype,
                  **({"watcher_model": model_fingerprint(args.watcher)} if watcher is not None else {})},
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


def add_md_parser(sub: argparse._SubParsersAction) -> None:
    """Adds the ``md`` subcommand to ``sub``."""
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
    p.set_defaults(func=md_command)

"""Langevin MD of aspirin with the bundled pretrained model (ASE).

Writes an ASE trajectory, a CSV log and a plot of energy and temperature against time:

    python examples/ase_md_aspirin.py                 # 2000 steps (1 ps) at 300 K
    python examples/ase_md_aspirin.py --steps 200 --model rmd17-aspirin --out my_run
"""

from __future__ import annotations

import argparse
import json

from ase.io import read

from forcefield_et import ETCalculator
from forcefield_et.md import run_md
from forcefield_et.structures import structure_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pretrained", help="bundled name or checkpoint path")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--temperature", type=float, default=300.0, help="K")
    parser.add_argument("--timestep", type=float, default=0.5, help="fs")
    parser.add_argument("--out", default="aspirin_md", help="output folder")
    args = parser.parse_args()

    atoms = read(structure_path("aspirin"))  # rMD17 aspirin geometry shipped with the package
    atoms.calc = ETCalculator(args.model, dtype="float32")
    summary = run_md(
        atoms,
        args.out,
        steps=args.steps,
        timestep_fs=args.timestep,
        temperature_K=args.temperature,
        thermostat="langevin",
        friction_per_fs=0.01,
    )
    print(json.dumps(summary, indent=2))
    print(f"trajectory: {args.out}/trajectory.traj   plot: {args.out}/md.png   log: {args.out}/md_log.csv")


if __name__ == "__main__":
    main()

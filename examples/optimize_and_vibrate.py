"""Geometry optimisation and vibrational frequencies of aspirin with the bundled model (ASE).

    python examples/optimize_and_vibrate.py                  # BFGS to fmax 0.01 eV/Å, then normal modes
    python examples/optimize_and_vibrate.py --model rmd17-aspirin --fmax 0.005

Prints the lowest and highest vibrational wavenumbers (cm⁻¹) and writes the relaxed structure
and a frequency list into --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from ase.io import read, write
from ase.optimize import BFGS
from ase.vibrations import Vibrations

from forcefield_et import ETCalculator
from forcefield_et.structures import structure_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pretrained")
    parser.add_argument("--fmax", type=float, default=0.01, help="eV/Å")
    parser.add_argument("--steps", type=int, default=500, help="maximum optimiser steps")
    parser.add_argument("--out", default="aspirin_vib")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    atoms = read(structure_path("aspirin"))
    # float64: finite-difference Hessians need precise forces.
    atoms.calc = ETCalculator(args.model, dtype="float64")
    BFGS(atoms, logfile=str(out / "bfgs.log")).run(fmax=args.fmax, steps=args.steps)
    print(f"relaxed: E = {atoms.get_potential_energy():.4f} eV, max |F| = {np.abs(atoms.get_forces()).max():.4f} eV/Å")
    write(out / "aspirin_relaxed.xyz", atoms)

    vib = Vibrations(atoms, name=str(out / "vib"), delta=0.01)
    vib.run()
    wavenumbers = vib.get_frequencies()  # cm⁻¹; imaginary modes are complex
    real = np.real(wavenumbers[6:])  # skip translations and rotations
    np.savetxt(out / "frequencies_cm-1.txt", np.abs(wavenumbers), fmt="%.2f")
    print(f"{len(real)} vibrational modes: lowest {real.min():.1f} cm⁻¹, highest {real.max():.1f} cm⁻¹")
    vib.clean()


if __name__ == "__main__":
    main()

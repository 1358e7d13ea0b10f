"""ETCalculator speed on rMD17 aspirin: MD steps/s, per-call overhead, batch throughput.

    python -m benchmarks.ase_calculator [--model pretrained] [--quick]

In one interleaved run, on CPU in float32:
- ms per energy+forces call of the bare model (``Potential.forward`` through ``Evaluator.run``) and of the calculator
  (``atoms.get_forces()`` after moving an atom, so nothing is cached); the overhead is their ratio;
- steps/s of velocity-Verlet MD through ASE with 1 and 2 torch threads;
- conformations/s of ``batch_evaluate`` (batches of 64) against one call per conformation.
Writes ase_calculator.json in --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.io import read
from ase.md.verlet import VelocityVerlet

from forcefield_et import ETCalculator
from forcefield_et.structures import structure_path

from .machine import machine_info, median_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pretrained")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    repeats, md_steps, n_batch = (10, 20, 64) if args.quick else (60, 200, 512)

    atoms = read(structure_path("aspirin"))
    calc = ETCalculator(args.model, device="cpu", dtype="float32")
    engine = calc.engine  # the inference engine under the calculator
    z = torch.as_tensor(atoms.numbers)
    rng = np.random.default_rng(0)
    results = {"model": args.model, "molecule": "aspirin (21 atoms)", "dtype": "float32", "rounds": []}

    for threads in (1, 2):
        torch.set_num_threads(threads)
        atoms.calc = calc
        for _ in range(5):  # warm-up
            atoms.positions[0, 0] += 1e-4
            atoms.get_forces()

        def bare() -> None:
            pos = torch.as_tensor(atoms.positions + rng.normal(0, 1e-4, atoms.positions.shape), dtype=torch.float32)
            engine.run(z, pos, None, None, len(z))

        def through_calculator() -> None:
            atoms.positions[0, 0] += rng.normal(0, 1e-4)
            atoms.get_forces()

        # Interleave the two measurements in rounds so load changes hit both alike.
        bare_ms, calc_ms = [], []
        for _ in range(3):
            bare_ms.append(median_ms(bare, repeats))
            calc_ms.append(median_ms(through_calculator, repeats))
        dynamics = VelocityVerlet(atoms, 0.5 * units.fs)
        start = time.perf_counter()
        dynamics.run(md_steps)
        md_steps_per_s = md_steps / (time.perf_counter() - start)
        results["rounds"].append({
            "threads": threads,
            "bare_model_ms": statistics.median(bare_ms),
            "calculator_ms": statistics.median(calc_ms),
            "calculator_overhead_percent": 100 * (statistics.median(calc_ms) / statistics.median(bare_ms) - 1),
            "md_steps_per_s": md_steps_per_s,
            "md_ns_per_day": md_steps_per_s * 0.5e-6 * 86400,
        })

    torch.set_num_threads(1)
    conformations = []
    for _ in range(n_batch):
        candidate = atoms.copy()
        candidate.positions += rng.normal(0, 0.05, candidate.positions.shape)
        conformations.append(candidate)
    calc.batch_evaluate(conformations[:64])  # warm-up
    start = time.perf_counter()
    calc.batch_evaluate(conformations, batch_size=64)
    batched = n_batch / (time.perf_counter() - start)
    start = time.perf_counter()
    for candidate in conformations[:64]:
        calc.get_forces(candidate)
    single = 64 / (time.perf_counter() - start)
    results["batch_evaluate"] = {"threads": 1, "batch_size": 64, "conformations_per_s": batched,
                                 "one_by_one_conformations_per_s": single, "speedup": batched / single}
    results["machine"] = machine_info()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ase_calculator.json").write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()

"""NVE energy drift of the ETCalculator on rMD17 aspirin, float32 vs float64.

    python -m benchmarks.nve_drift                 # 20,000 steps (10 ps) per precision
    python -m benchmarks.nve_drift --quick         # 1,000 steps, for CI

Velocity Verlet, 0.5 fs, from the model's minimum (BFGS to 0.01 eV/Å in float64) with initial
velocities from Maxwell-Boltzmann at 300 K. The drift is the
slope of a linear fit of the total energy against time (from the second record on: the first
step adds velocity Verlet's constant O(dt²) offset), in eV/atom/ns; the fluctuation is the
standard deviation of the total energy around that fit. Writes nve_drift.json and nve_drift.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms, units
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

from forcefield_et import ETCalculator
from forcefield_et.md import initial_velocities
from forcefield_et.structures import structure_path

from .io import write_json_atomic
from .machine import machine_info


def run(model: str, dtype: str, steps: int, timestep_fs: float, interval: int, seed: int = 0) -> dict:
    from ase.io import read

    atoms: Atoms = read(structure_path("aspirin"))
    atoms.calc = ETCalculator(model, device="cpu", dtype=dtype)
    # Start from the model's own minimum (relaxed in float64) so that the run measures integration
    # error, not the release of strain energy from a geometry the model does not consider relaxed.
    relax = atoms.copy()
    relax.calc = ETCalculator(model, device="cpu", dtype="float64")
    BFGS(relax, logfile=None).run(fmax=0.01, steps=1000)
    atoms.positions = relax.positions
    initial_velocities(atoms, 300.0, seed)
    dynamics = VelocityVerlet(atoms, timestep_fs * units.fs)
    times, totals, temperatures = [], [], []

    def record() -> None:
        times.append(dynamics.nsteps * timestep_fs / 1000.0)  # ps
        totals.append(atoms.get_total_energy())
        temperatures.append(atoms.get_temperature())

    dynamics.attach(record, interval=interval)
    start = time.perf_counter()
    dynamics.run(steps)
    elapsed = time.perf_counter() - start
    t, e = np.array(times), np.array(totals)
    # The first step shifts the total energy by the integrator's constant offset (the shadow
    # Hamiltonian of velocity Verlet differs from H by O(dt^2)); fit the drift from the 2nd record on.
    slope, intercept = np.polyfit(t[1:], e[1:], 1)  # eV/ps
    return {
        "dtype": dtype,
        "steps": steps,
        "timestep_fs": timestep_fs,
        "n_atoms": len(atoms),
        "drift_eV_per_atom_per_ns": float(slope * 1000.0 / len(atoms)),
        "fluctuation_eV": float(np.std(e[1:] - (slope * t[1:] + intercept))),
        "max_deviation_eV": float(np.abs(e - e[0]).max()),
        "mean_temperature_K": float(np.mean(temperatures)),
        "steps_per_s": steps / elapsed,
        "time_ps": t.tolist(),
        "total_energy_eV": (e - e[0]).tolist(),
    }


def checkpoint_identity(model: str) -> dict:
    """Which weights ran: the checkpoint's training step and the SHA-256 of its file (a bundled
    name such as ``pretrained`` names different weights after a re-export)."""
    import hashlib

    from forcefield_et.checkpoint import read_checkpoint
    from forcefield_et.registry import resolve_model_path

    path = resolve_model_path(model)
    training = read_checkpoint(path)["metadata"].get("training", {})
    return {"step": training.get("step"), "max_steps": training.get("config", {}).get("optim", {}).get("max_steps"),
            "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pretrained")
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--timestep", type=float, default=0.5, help="fs")
    parser.add_argument("--quick", action="store_true", help="1000 steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = 1000 if args.quick else args.steps
    interval = max(1, steps // 500)
    results = [run(args.model, dtype, steps, args.timestep, interval) for dtype in ("float32", "float64")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "nve_drift",
        "model": args.model,
        "model_checkpoint": checkpoint_identity(args.model),
        "molecule": "aspirin (rMD17 geometry)",
        "machine": machine_info(),
        "runs": results,
    }
    write_json_atomic(out / "nve_drift.json", payload)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        ax.plot(
            r["time_ps"],
            r["total_energy_eV"],
            label=f"{r['dtype']}: drift {r['drift_eV_per_atom_per_ns']:.2e} eV/atom/ns",
        )
    ax.set_xlabel("time (ps)")
    ax.set_ylabel("E_total − E_total(0) (eV)")
    ax.set_title(f"NVE, aspirin, {args.timestep} fs, model {args.model}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "nve_drift.png", dpi=110)
    for r in results:
        print(
            f"{r['dtype']}: drift {r['drift_eV_per_atom_per_ns']:.3e} eV/atom/ns, fluctuation "
            f"{r['fluctuation_eV']:.2e} eV, {r['steps_per_s']:.1f} steps/s"
        )


if __name__ == "__main__":
    main()

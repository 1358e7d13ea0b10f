"""Molecular dynamics of aspirin in OpenMM with a forcefield_et potential (through openmm-ml).

    python examples/openmm_simulation.py                       # bundled "pretrained" model, 10,000 steps
    python examples/openmm_simulation.py --model my_model.pt --steps 20 --out run1

Steps: read the bundled aspirin PDB, build the System with
``MLPotential('forcefield-et', model=...)``, minimise the energy, then run Langevin dynamics
(LangevinMiddleIntegrator) while ``StateDataReporter`` writes energies/temperature/speed to
``<out>/state.csv`` and ``DCDReporter`` the trajectory to ``<out>/trajectory.dcd``. The minimised
structure is saved as ``<out>/minimized.pdb`` (use it as the DCD topology in a viewer).

Requires: pip install "forcefield-et[openmm]" (openmm >= 8.5, openmm-ml, and openmm-torch for the
default TorchForce path; ``--implementation pythonforce`` needs no openmm-torch).
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib import resources
from pathlib import Path

import torch


def bundled_structure(name: str = "aspirin.pdb") -> Path:
    """Path of a structure shipped in forcefield_et/structures/."""
    return Path(str(resources.files("forcefield_et") / "structures" / name))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Langevin MD of aspirin with a forcefield_et potential")
    parser.add_argument("--model", default="pretrained", help="bundled model name or checkpoint path")
    parser.add_argument("--pdb", type=Path, default=None, help="input PDB (default: the bundled aspirin.pdb)")
    parser.add_argument("--steps", type=int, default=10_000, help="MD steps (default 10000)")
    parser.add_argument("--timestep-fs", type=float, default=0.5, help="time step in fs (default 0.5)")
    parser.add_argument("--temperature", type=float, default=300.0, help="temperature in K (default 300)")
    parser.add_argument("--friction", type=float, default=1.0, help="Langevin friction in 1/ps (default 1)")
    parser.add_argument("--report-interval", type=int, default=100, help="steps between reports")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="model precision")
    parser.add_argument(
        "--implementation",
        choices=["torchforce", "pythonforce"],
        default=None,
        help="OpenMM force type (default: torchforce if openmm-torch imports, else pythonforce)",
    )
    parser.add_argument("--platform", default="CPU", help="OpenMM platform: CPU, Reference, CUDA, ...")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--seed", type=int, default=1, help="random seed for velocities and the thermostat")
    parser.add_argument("--out", type=Path, default=Path("openmm_output"), help="output folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)

    import openmm
    from openmm import app, unit
    from openmmml import MLPotential

    args.out.mkdir(parents=True, exist_ok=True)
    pdb = app.PDBFile(str(args.pdb or bundled_structure()))

    potential = MLPotential("forcefield-et", model=args.model, dtype=args.dtype, implementation=args.implementation)
    system = potential.createSystem(pdb.topology)

    integrator = openmm.LangevinMiddleIntegrator(
        args.temperature * unit.kelvin, args.friction / unit.picosecond, args.timestep_fs * unit.femtosecond
    )
    integrator.setRandomNumberSeed(args.seed)
    platform = openmm.Platform.getPlatformByName(args.platform)
    simulation = app.Simulation(pdb.topology, system, integrator, platform)
    simulation.context.setPositions(pdb.positions)

    energy = simulation.context.getState(getEnergy=True).getPotentialEnergy()
    print(f"initial potential energy: {energy.value_in_unit(unit.kilojoule_per_mole):.3f} kJ/mol")
    simulation.minimizeEnergy(maxIterations=500)
    state = simulation.context.getState(getEnergy=True, getPositions=True)
    energy = state.getPotentialEnergy()
    print(f"minimised potential energy: {energy.value_in_unit(unit.kilojoule_per_mole):.3f} kJ/mol")
    with open(args.out / "minimized.pdb", "w") as handle:
        app.PDBFile.writeFile(pdb.topology, state.getPositions(), handle)

    simulation.context.setVelocitiesToTemperature(args.temperature * unit.kelvin, args.seed)
    interval = max(1, min(args.report_interval, args.steps))
    simulation.reporters.append(app.DCDReporter(str(args.out / "trajectory.dcd"), interval))
    simulation.reporters.append(
        app.StateDataReporter(
            str(args.out / "state.csv"),
            interval,
            step=True,
            time=True,
            potentialEnergy=True,
            kineticEnergy=True,
            totalEnergy=True,
            temperature=True,
            speed=True,
        )
    )
    screen_interval = max(interval, args.steps // 10)
    simulation.reporters.append(
        app.StateDataReporter(sys.stdout, screen_interval, step=True, temperature=True, speed=True)
    )

    start = time.perf_counter()
    simulation.step(args.steps)
    elapsed = time.perf_counter() - start
    simulated_ns = args.steps * args.timestep_fs * 1e-6
    print(f"{args.steps} steps in {elapsed:.1f} s ({simulated_ns / elapsed * 86400:.3f} ns/day)")
    print(f"wrote {args.out / 'state.csv'}, {args.out / 'trajectory.dcd'}, {args.out / 'minimized.pdb'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

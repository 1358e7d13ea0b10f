"""OpenMM speed for aspirin: TorchForce against PythonForce, in ns/day.

    python -m benchmarks.openmm_speed [--steps 300] [--models pretrained default small]

CPU platform with one thread, LangevinMiddleIntegrator at 0.5 fs and 300 K, float32 models,
30 warm-up steps, then ``--steps`` timed steps; TorchForce and PythonForce alternate for each
model in one run. ``default`` is ``build_model()`` (128 channels, 6 layers, random weights: the
speed does not depend on the weights), ``small`` is 32 channels and 2 layers, any other name is
a bundled model or checkpoint path. Writes openmm_speed.json in --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from forcefield_et import build_model, load_model
from forcefield_et.structures import structure_path

from .machine import machine_info


def make_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "default":
        return build_model().eval()
    if name == "small":
        return build_model(hidden_channels=32, num_layers=2, num_heads=4, num_rbf=16).eval()
    return load_model(name)


def time_force(model, kind: str, steps: int) -> float:
    import openmm
    from openmm import app, unit

    from forcefield_et.openmm import python_force, torch_force

    pdb = app.PDBFile(str(structure_path("aspirin.pdb")))
    numbers = [atom.element.atomic_number for atom in pdb.topology.atoms()]
    system = openmm.System()
    for atom in pdb.topology.atoms():
        system.addParticle(atom.element.mass)
    system.addForce((torch_force if kind == "TorchForce" else python_force)(model, numbers, dtype="float32"))
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.5 * unit.femtosecond)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
    context.setPositions(pdb.positions)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    integrator.step(30)
    start = time.perf_counter()
    integrator.step(steps)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--models", nargs="+", default=["pretrained", "default", "small"])
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.models:
        model = make_model(name)
        for kind in ("TorchForce", "PythonForce"):
            seconds = time_force(model, kind, args.steps)
            rows.append({"model": name, "force": kind, "ms_per_step": 1000 * seconds,
                         "ns_per_day": 0.5e-6 / seconds * 86400})
            print(f"{name:12s} {kind:12s} {1000 * seconds:8.2f} ms/step {rows[-1]['ns_per_day']:8.3f} ns/day")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": "openmm_speed", "molecule": "aspirin (21 atoms)", "platform": "CPU, 1 thread",
               "timestep_fs": 0.5, "steps": args.steps, "machine": machine_info(), "results": rows}
    (out / "openmm_speed.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()

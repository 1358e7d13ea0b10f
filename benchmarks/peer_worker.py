"""One model's evaluation process for ``python -m benchmarks.peers``.

    PYTHONPATH=<repo> <model's python> -m benchmarks.peer_worker

Each model is evaluated in the Python of its own virtual environment (the ET in the project's,
NequIP and MACE in theirs), with this repository on ``PYTHONPATH`` so that the same code
(``forcefield_et.data``, ``forcefield_et.md``, ``benchmarks.speed``, ``benchmarks.md_stability``)
measures every model. The driver sends one JSON command per line on stdin; the worker answers each
with one line ``@@peer@@ <json>`` on stdout (everything else it prints goes to stderr):

- ``{"cmd": "load", "name", "kind": "et"|"nequip"|"mace", "path", "threads"}``: build the model's
  ASE calculator;
- ``{"cmd": "test", "molecule", "frames"}``: energy and force errors on the first ``frames``
  frames of the rMD17 ``test_01`` split, one ASE call per frame;
- ``{"cmd": "speed", "n_calls", "warmup", "min_calls", "call_budget_s", "md_steps", "md_budget_s"}``:
  one interleaving round of :func:`benchmarks.speed.time_calls` (ms per energy+forces call on
  aspirin, positions perturbed before every call) and a segment of one continuing velocity-Verlet
  trajectory (:func:`benchmarks.speed._md_segment`);
- ``{"cmd": "md", "molecule", "run_dir", "time_ps", "cpu_budget_s", ...}``: one MD-stability run
  (:func:`benchmarks.md_stability.run_one`, MDsim protocol), resumable;
- ``{"cmd": "quit"}``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

MARKER = "@@peer@@ "


def make_calculator(kind: str, path: str, device: str = "cpu", compile: bool = False):
    """An ASE calculator for a trained model file, through md_stability's loader (``compile``: the ET's
    compiled energy and forces, as its long MD runs use them; other kinds ignore it)."""
    import torch

    from .md_stability import ModelSpec, Protocol
    from .md_stability import make_calculator as _make

    default_dtype = torch.get_default_dtype()
    calc = _make(ModelSpec(Path(path).stem, kind, Path(path), ""), Protocol(device=device, compile=compile))
    torch.set_default_dtype(default_dtype)  # nequip sets float64 globally when it loads a model
    return calc


def test_errors(calc, molecule: str, frames: int) -> Dict[str, Any]:
    """Energy (meV) and force (meV/Å) errors of ``calc`` on rMD17 ``test_01`` frames [0, frames)."""
    import numpy as np
    from ase import Atoms

    from forcefield_et.data import read_rmd17

    from .paths import rmd17_file

    data = read_rmd17(rmd17_file(molecule, "test"))
    n = int(data.n_atoms[0])
    count = min(frames, len(data))
    pos = data.pos.reshape(len(data), n, 3)[:count]
    forces = data.forces.reshape(len(data), n, 3)[:count]
    energy = np.asarray(data.energy)[:count]
    atoms = Atoms(numbers=data.z[:n], positions=pos[0])
    atoms.calc = calc
    force_errors, energy_errors = [], []
    start = time.perf_counter()
    for k in range(count):
        atoms.set_positions(pos[k])
        force_errors.append(atoms.get_forces() - forces[k])
        energy_errors.append(atoms.get_potential_energy() - energy[k])
    f, e = np.asarray(force_errors), np.asarray(energy_errors)
    return {
        "frames": count, "split": f"rmd17_{molecule}_test_01.npz[0:{count}]",
        "force_mae_meV_A": 1000 * float(np.abs(f).mean()), "force_rmse_meV_A": 1000 * float(np.sqrt((f ** 2).mean())),
        "energy_mae_meV": 1000 * float(np.abs(e).mean()), "energy_rmse_meV": 1000 * float(np.sqrt((e ** 2).mean())),
        "seconds": time.perf_counter() - start,
    }


class Worker:
    def __init__(self) -> None:
        self.calc = None
        self.name = ""
        self.speed_state: Dict[str, Any] | None = None

    def load(self, name: str, kind: str, path: str, threads: int = 1, device: str = "cpu",
             compile: bool = False) -> Dict[str, Any]:
        import torch

        torch.set_num_threads(threads)
        start = time.perf_counter()
        self.calc, self.name, self.kind, self.path = make_calculator(kind, path, device, compile), name, kind, path
        versions = {"torch": torch.__version__}
        for package in ("nequip", "mace-torch", "ase", "e3nn"):
            try:
                from importlib.metadata import version

                versions[package] = version(package)
            except Exception:
                pass
        return {"load_s": time.perf_counter() - start, "versions": versions, "python": sys.executable}

    def test(self, molecule: str, frames: int = 1000) -> Dict[str, Any]:
        return test_errors(self.calc, molecule, frames)

    def speed(self, n_calls: int, warmup: int, min_calls: int, call_budget_s: float, md_steps: int,
              md_budget_s: float) -> Dict[str, Any]:
        import numpy as np
        from ase import units
        from ase.io import read
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
        from ase.md.verlet import VelocityVerlet

        from forcefield_et.structures import structure_path

        from .speed import Model, _md_segment, _MDState, time_calls

        if self.speed_state is None:
            molecule = read(structure_path("aspirin"))
            model = Model(self.name, self.calc, {})
            atoms = molecule.copy()
            atoms.calc = self.calc
            md_atoms = molecule.copy()
            md_atoms.calc = self.calc
            MaxwellBoltzmannDistribution(md_atoms, temperature_K=300.0, rng=np.random.default_rng(0))
            self.speed_state = {
                "model": model, "atoms": atoms, "reference": molecule.get_positions(), "rng": np.random.default_rng(0),
                "md": _MDState(md_atoms, VelocityVerlet(md_atoms, timestep=0.5 * units.fs)),
            }
        s = self.speed_state
        times = time_calls(s["model"], s["atoms"], s["reference"], n_calls, warmup, s["rng"], budget_s=call_budget_s,
                           min_calls=min_calls)
        _md_segment(s["md"], md_steps, md_budget_s)
        return {"ms": times, "md_steps": s["md"].steps[-1], "md_seconds": s["md"].seconds[-1]}

    def md(self, molecule: str, run_dir: str, time_ps: float, cpu_budget_s: float | None = None,
           threads: int = 1, device: str = "cpu", quiet: bool = False, **protocol: Any) -> Dict[str, Any]:
        from forcefield_et.runtime import compile_pays_off

        from .md_stability import ModelSpec, Protocol, load_reference, run_one

        settings = Protocol(time_ps=time_ps, threads=threads, device=device, **protocol)
        settings.compile = compile_pays_off(settings.n_steps)  # the long MD runs compile the ET
        reference = load_reference(molecule, settings)
        spec = ModelSpec(self.name, self.kind, Path(self.path), f"{self.kind} model {self.path}")
        return run_one(spec, reference, settings, Path(run_dir), checkpoint_every=10, quiet=quiet,
                       cpu_budget_s=cpu_budget_s, lock=False)  # benchmarks.peers holds the run folder's lock


def main() -> int:
    reply = sys.stdout
    sys.stdout = sys.stderr  # library output must not mix with the replies
    worker = Worker()
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        name = command.pop("cmd")
        if name == "quit":
            break
        try:
            answer = {"ok": True, "result": getattr(worker, name)(**command)}
        except Exception as error:  # reported to the driver, which decides
            answer = {"ok": False, "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
        reply.write(MARKER + json.dumps(answer, default=float) + "\n")
        reply.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Bare-model speed on CPU: eager vs TorchScript inference, and training throughput.

    python -m benchmarks.model_speed [--quick] [--threads 1] [--out benchmarks/results]

1. Inference, rMD17 aspirin (21 atoms, float32): ms per energy+forces call
   (``Potential.forward``, which runs the autograd backward for the forces) of the eager module and
   of ``torch.jit.script(model)``, interleaved in rounds so that load changes hit both alike; the
   largest |difference| of their energies and forces is recorded. Models: ``default``
   (``build_model()``: 128 hidden, 6 layers, 8 heads, 32 RBF, 5 Å, random weights, which do not
   change the speed) and the bundled ``pretrained`` checkpoint.
2. Training throughput of the default model: conformations/s of full optimiser steps (forward,
   force backward, parameter backward, clipping, AdamW, EMA) through ``forcefield_et.training.Trainer``
   on batches of 32 frames of the GFN2-xTB corpus (off-equilibrium MD frames, force loss; the
   corpus's molecules have 3-29 atoms). Needs ../shared/data; skipped with a message without it.

Writes model_speed.json to --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict

import numpy as np
import torch
from ase.io import read

from forcefield_et import build_model, load_model
from forcefield_et.inference import Evaluator
from forcefield_et.structures import structure_path

from .machine import machine_info, median_ms
from .paths import DATA_ROOT


def inference(model: torch.nn.Module, repeats: int, rounds: int) -> Dict[str, float]:
    """Eager vs scripted ms per energy+forces call on aspirin, and their largest difference."""
    atoms = read(structure_path("aspirin"))
    z = torch.as_tensor(atoms.numbers, dtype=torch.long)
    base = torch.as_tensor(atoms.positions, dtype=torch.float32)
    model = model.float().eval()
    scripted = torch.jit.script(model)
    rng = np.random.default_rng(0)

    eager = Evaluator.wrap(model).run  # Potential.forward, through the inference engine

    def scripted_call(z: torch.Tensor, pos: torch.Tensor, batch: Any, cell: Any, n_atoms: int) -> Any:
        return scripted(z, pos, batch, cell)

    def call(evaluate: Callable[..., Any]) -> Callable[[], Any]:
        def run() -> Any:
            pos = base + torch.as_tensor(rng.normal(0, 1e-3, base.shape), dtype=torch.float32)
            return evaluate(z, pos, None, None, len(z))

        return run

    for _ in range(5):  # warm-up (TorchScript profiles and optimises during its first calls)
        call(eager)()
        call(scripted_call)()
    eager_ms, scripted_ms = [], []
    for _ in range(rounds):
        eager_ms.append(median_ms(call(eager), repeats))
        scripted_ms.append(median_ms(call(scripted_call), repeats))
    eager_out, scripted_out = eager(z, base, None, None, len(z)), scripted_call(z, base, None, None, len(z))
    eager_out = {k: v.detach() for k, v in eager_out.items()}
    scripted_out = {k: v.detach() for k, v in scripted_out.items()}
    return {
        "eager_ms": statistics.median(eager_ms),
        "scripted_ms": statistics.median(scripted_ms),
        "scripted_over_eager": statistics.median(scripted_ms) / statistics.median(eager_ms),
        "max_abs_energy_difference_eV": float((eager_out["energy"] - scripted_out["energy"]).abs().max()),
        "max_abs_force_difference_eV_A": float((eager_out["forces"] - scripted_out["forces"]).abs().max()),
    }


def training_throughput(steps: int, threads: int, data_root: Path) -> Dict[str, Any]:
    """Conformations/s of Trainer.train_step for the default model on GFN2-xTB MD frames."""
    from forcefield_et.training import Trainer, config_from_dict

    corpus = data_root / "xtb" / "xtb_shard0.npz"
    if not corpus.is_file():
        return {"skipped": f"{corpus} not found (../shared/data is needed for the training benchmark)"}
    with tempfile.TemporaryDirectory() as run_dir:
        config = config_from_dict(
            {
                "run_dir": run_dir,
                "model": {},  # build_model() defaults
                "sources": [
                    {"name": "xtb_md", "format": "xtb_corpus", "path": str(corpus), "options": {"kinds": [1]},
                     "objective": "forces", "max_frames": 5000}
                ],
                "optim": {"batch_size": 32, "max_steps": steps + 5, "warmup_steps": 1, "threads": threads},
            }
        )
        trainer = Trainer(config, progress=False)
        for _ in range(3):  # warm-up
            trainer.train_step()
        mean_atoms = float(np.mean(trainer.sources[0].data.n_atoms))
        frames = 0
        start = time.perf_counter()
        for _ in range(steps):
            frames += int(trainer.train_step()["frames"])
        elapsed = time.perf_counter() - start
    return {
        "model": "build_model() defaults (128 hidden, 6 layers, 8 heads, 32 RBF, 5 A)",
        "data": "GFN2-xTB corpus kind 1 (MD frames), force loss",
        "batch_size": 32,
        "steps": steps,
        "mean_atoms_per_conformation": mean_atoms,
        "conformations_per_s": frames / elapsed,
        "ms_per_step": 1000 * elapsed / steps,
    }


def main(argv: list | None = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few repeats and steps (for tests)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-root", default=str(DATA_ROOT))
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats, rounds, steps = (5, 1, 3) if args.quick else (40, 3, 30)

    results: Dict[str, Any] = {"benchmark": "model_speed", "threads": args.threads, "inference": {}}
    results["inference"]["default"] = inference(build_model(), repeats, rounds)
    results["inference"]["pretrained"] = inference(load_model("pretrained"), repeats, rounds)
    results["training"] = training_throughput(steps, args.threads, Path(args.data_root))
    results["machine"] = machine_info()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model_speed.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(path)
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=2))
    return results


if __name__ == "__main__":
    main()

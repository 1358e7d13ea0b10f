"""Inference speed of forcefield_et's Equivariant Transformer against TorchMD-Net's ET and NequIP.

    python -m benchmarks.speed [--quick] [--threads 1 2] [--models et nequip] [--out benchmarks/results]

All models run on CPU in float32 through an ASE calculator (``atoms.get_forces()``: energy and
forces in one call) unless CUDA is available, in which case a CUDA section is added.

1. Aspirin (21 atoms), in ONE interleaved run: rounds over thread counts x models, repeated
   (3 rounds, 2 with --quick) so that load changes hit every model alike; per round and model the
   median ms of >= 30 energy+forces calls (positions perturbed before every call so nothing is
   cached) after a warm-up, and velocity-Verlet MD steps/s over >= 100 steps. Reported: the median
   over rounds, and ratios to ``et`` (model_ms / et_ms; model_steps_per_s / et_steps_per_s).
   Models:
   - ``et``: ``forcefield_et.model.build_model()`` defaults (128 hidden, 6 layers, 8 heads, 32 RBF,
     5 A), RANDOM weights, through ``ETCalculator``; the bare ``Potential.forward`` is timed too;
   - ``et-compiled``: ``et`` with ``ETCalculator(compile=True)`` (torch.compile of the energy part,
     dynamic shapes; the compile time is recorded as ``compile_s``, not in the timings);
   - ``et-bundled``: the bundled ``pretrained`` checkpoint (4 layers) through ``ETCalculator``;
   - ``torchmd-net-et``: TorchMD-Net's ``equivariant-transformer`` at the same hyperparameters
     (128 / 6 layers / 8 heads / 32 expnorm RBF / 5 A / neighbour embedding / SiLU), RANDOM weights,
     written as a checkpoint and loaded by TorchMD-Net's own ASE calculator ``TMDNETCalculator``;
   - ``torchmd-net-et-ftz``: the same TorchMD-Net network with ``torch.set_flush_denormal(True)``
     around each of its calls (and only those). Its expnorm radial basis holds subnormal float32
     values, which some CPUs multiply far more slowly than normal ones; forcefield_et's basis sets
     them to zero (``forcefield_et.model.radial``). This row shows how much of the gap to
     ``torchmd-net-et`` is that penalty and how much the network itself;
   - ``nequip``: NequIP at MDsim's MD17 size (benchmarks/prepare.py ``NEQUIP_MDSIM``: r_max 4 A,
     5 layers, l_max 3, 32 features, float32), UNTRAINED: ``nequip-train`` runs a single optimiser
     step on 5 rMD17 aspirin frames only to produce a checkpoint, ``nequip-compile --mode
     torchscript`` compiles it, ``NequIPCalculator.from_compiled_model`` loads it (cached in
     benchmarks/cache/speed/).
   Speed does not depend on the weights, so random / untrained weights are fine here.
2. Size scaling, 1 thread: the 64-water periodic box of ../shared/data/water/data_0 (192 atoms)
   tiled with ``atoms.repeat`` up to 12,288 atoms; ``et`` (ETCalculator, which uses matscipy's
   neighbour list at >= 100 atoms), ``et-torch-nl`` (``neighbor_list="torch"``, at two sizes) and
   ``nequip``; ms per call and us per atom. A size is skipped (and recorded as such) when its
   predicted time or memory exceeds the caps.
3. A torch.profiler summary of ``et`` on aspirin at 1 thread (top ops by self CPU time).

Writes speed.json, speed_aspirin.png and speed_scaling.png to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

# libgomp reads OMP_WAIT_POLICY once, when torch loads it. With the default (spinning) policy and
# another busy process on the machine, 2 torch threads are 40-150x SLOWER than 1 on a 2-core box
# (every parallel region waits for a descheduled spinning partner); PASSIVE makes waiting threads
# sleep. The value in effect is recorded in speed.json (``omp_wait_policy``).
OMP_WAIT_POLICY_SET_BEFORE_TORCH = "torch" not in sys.modules
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase import Atoms, units  # noqa: E402
from ase.io import read  # noqa: E402
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution  # noqa: E402
from ase.md.verlet import VelocityVerlet  # noqa: E402

from .io import write_json_atomic  # noqa: E402
from .machine import machine_info  # noqa: E402
from .paths import water_dir  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = Path(__file__).resolve().parent / "cache" / "speed"
WATER_DIR = water_dir()
ALL_MODELS = ("et", "et-compiled", "et-bundled", "torchmd-net-et", "torchmd-net-et-ftz", "nequip")
WEIGHTS_NOTE = (
    "et and torchmd-net-et have random weights and nequip is untrained (one optimiser step); only "
    "et-bundled is a trained model. Speed does not depend on the weight values."
)
# Water supercells (repeats of the 192-atom box) for the scaling study.
FULL_REPEATS = [(1, 1, 1), (2, 1, 1), (2, 2, 1), (2, 2, 2), (2, 2, 4), (3, 3, 3), (6, 3, 3)]  # 192 ... 10,368 atoms
QUICK_REPEATS = [(1, 1, 1), (2, 1, 1)]
TORCH_NL_ATOMS = (192, 1536)  # sizes at which et is also run with neighbor_list="torch"
TORCHMD_NET_ATOMS = (192, 768)  # sizes at which TorchMD-Net's ET is run (a check of the ET architecture's cost)
PERTURB_A = 0.01  # Gaussian noise (A) added to the reference positions before each timed call


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def load_average() -> List[float]:
    return [round(v, 2) for v in os.getloadavg()]


# ------------------------------------------------------------------------------------ models
@dataclass
class Model:
    name: str
    calc: Any  # an ASE calculator
    info: Dict[str, Any]
    bare: Optional[Callable[[Atoms], None]] = None  # the bare model call, where meaningful
    atoms_info: Dict[str, Any] = field(default_factory=dict)  # extra atoms.info the calculator needs


def _n_parameters(module: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def _bare_et(engine: Any, device: str) -> Callable[[Atoms], None]:
    """The bare model call (``Potential.forward`` through ``Evaluator.run``: no neighbour-list or
    memory policy, no conversion of the results)."""
    def call(atoms: Atoms) -> None:
        z = torch.as_tensor(atoms.numbers, dtype=torch.long, device=device)
        pos = torch.as_tensor(atoms.positions, dtype=torch.float32, device=device)
        engine.run(z, pos, None, None, len(atoms))["forces"].cpu()

    return call


def build_et(device: str = "cpu", neighbor_list: str = "auto") -> Model:
    from forcefield_et import ETCalculator
    from forcefield_et.model import build_model

    torch.manual_seed(0)
    potential = build_model()
    calc = ETCalculator(potential, device=device, dtype="float32", neighbor_list=neighbor_list)
    info = {
        "description": "forcefield_et build_model() defaults, random weights (torch seed 0)",
        "weights": "random",
        "interface": f"forcefield_et.ETCalculator(Potential, dtype='float32', neighbor_list={neighbor_list!r})",
        "hyperparameters": dict(potential.hyperparameters),
        "parameters": _n_parameters(potential),
    }
    return Model("et", calc, info, bare=_bare_et(calc.engine, device))


def build_et_compiled(device: str = "cpu") -> Model:
    """``et`` (same weights) with ``ETCalculator(compile=True)``: the energy part through
    torch.compile (inductor, dynamic shapes); compiled here by one aspirin call, timed as compile_s."""
    from forcefield_et import ETCalculator
    from forcefield_et.model import build_model

    torch.manual_seed(0)
    potential = build_model()
    from forcefield_et.structures import structure_path

    calc = ETCalculator(potential, device=device, dtype="float32", compile=True)
    atoms = read(structure_path("aspirin"))
    atoms.calc = calc
    start = time.perf_counter()
    atoms.get_forces()
    info = {
        "description": "forcefield_et build_model() defaults, random weights (torch seed 0), torch.compile'd energy",
        "weights": "random",
        "interface": "forcefield_et.ETCalculator(Potential, dtype='float32', compile=True)",
        "hyperparameters": dict(potential.hyperparameters),
        "parameters": _n_parameters(potential),
        "compile_s": round(time.perf_counter() - start, 1),
        "torch_version": torch.__version__,
    }
    return Model("et-compiled", calc, info)


def build_et_bundled(device: str = "cpu") -> Model:
    from forcefield_et import ETCalculator

    calc = ETCalculator("pretrained", device=device, dtype="float32")
    info = {
        "description": "bundled forcefield_et 'pretrained' checkpoint (trained)",
        "weights": "trained",
        "interface": "forcefield_et.ETCalculator('pretrained', dtype='float32')",
        "hyperparameters": dict(calc.model.hyperparameters),
        "parameters": _n_parameters(calc.model),
    }
    return Model("et-bundled", calc, info, bare=_bare_et(calc.engine, device))


def torchmd_net_args(hyperparameters: Dict[str, Any]) -> Dict[str, Any]:
    """TorchMD-Net 3.x training arguments (its own argparse defaults) for an ET with our
    hyperparameters: expnorm RBF, neighbour embedding, SiLU, distance influence on keys and values."""
    from torchmdnet.scripts.train import get_argparse

    args = vars(get_argparse().parse_args([]))
    args.update(
        model="equivariant-transformer",
        embedding_dimension=hyperparameters["hidden_channels"],
        num_layers=hyperparameters["num_layers"],
        num_heads=hyperparameters["num_heads"],
        num_rbf=hyperparameters["num_rbf"],
        cutoff_lower=0.0,
        cutoff_upper=hyperparameters["cutoff"],
        rbf_type="expnorm",
        trainable_rbf=False,
        neighbor_embedding=True,
        activation="silu",
        attn_activation="silu",
        distance_influence="both",
        output_model="Scalar",
        prior_model=None,
        derivative=True,
        precision=32,
        max_z=100,
    )
    return args


def build_torchmd_net_et(device: str = "cpu", max_num_neighbors: int = 64) -> Model:
    from forcefield_et.model import DEFAULT_HYPERPARAMETERS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchmdnet import __version__ as tmd_version
        from torchmdnet.calculators import TMDNETCalculator
        from torchmdnet.models.model import create_model

    args = torchmd_net_args(DEFAULT_HYPERPARAMETERS)
    torch.manual_seed(0)
    network = create_model(dict(args))
    with tempfile.TemporaryDirectory() as tmp:
        # A Lightning-style checkpoint: what TorchMD-Net's load_model() (used by the calculator) reads.
        path = Path(tmp) / "torchmd_net_et_random.ckpt"
        state = {f"model.{k}": v for k, v in network.state_dict().items()}
        torch.save({"hyper_parameters": args, "state_dict": state}, path)
        calc = TMDNETCalculator(str(path), device=device, max_num_neighbors=max_num_neighbors)
    keys = ("embedding_dimension", "num_layers", "num_heads", "num_rbf", "rbf_type", "cutoff_upper",
            "neighbor_embedding", "activation", "attn_activation", "distance_influence", "max_z", "output_model")
    info = {
        "description": f"TorchMD-Net {tmd_version} equivariant-transformer, random weights (torch seed 0)",
        "weights": "random",
        "interface": ("torchmdnet.models.model.create_model(args) -> checkpoint {hyper_parameters, state_dict} "
                      "-> torchmdnet.calculators.TMDNETCalculator(checkpoint, device) (TorchMD-Net's own ASE "
                      "calculator: derivative=False model, forces by energy.backward(), "
                      f"max_num_neighbors={max_num_neighbors})"),
        "hyperparameters": {k: args[k] for k in keys},
        "parameters": _n_parameters(calc.model),
        "torchmdnet_version": tmd_version,
    }
    return Model("torchmd-net-et", calc, info, atoms_info={"charge": 0})


def flush_denormals_during_calls(calc: Any) -> Any:
    """Make an ASE calculator's ``calculate`` run with ``torch.set_flush_denormal(True)`` and switch
    it off again afterwards (also on error), so that no other model in the process is affected (torch
    offers no getter: the process is assumed to run with the flag off, its default)."""
    calculate = calc.calculate

    def calculate_flushing_denormals(*args: Any, **kwargs: Any) -> Any:
        torch.set_flush_denormal(True)
        try:
            return calculate(*args, **kwargs)
        finally:
            torch.set_flush_denormal(False)

    calc.calculate = calculate_flushing_denormals
    return calc


def build_torchmd_net_et_ftz(device: str = "cpu") -> Model:
    """``torchmd-net-et`` with subnormal floats flushed to zero during its calls only (the flag is
    process-wide, so it is switched on before and restored after each call of this model)."""
    model = build_torchmd_net_et(device)
    flush_denormals_during_calls(model.calc)
    model.info["description"] += ", subnormal floats flushed to zero during its calls"
    model.info["flush_denormal"] = True
    return Model("torchmd-net-et-ftz", model.calc, model.info, atoms_info=model.atoms_info)


def nequip_model_path(cache: Path = CACHE_DIR, threads: int = 1) -> Path:
    """Build (or reuse) an untrained MDsim-size NequIP model compiled to TorchScript, with
    benchmarks/prepare.py's config generator and nequip's own nequip-train / nequip-compile."""
    import yaml

    from .prepare import NEQUIP_MDSIM, _bin, _run, nequip_config, write_extxyz

    root = (cache / "nequip-mdsim-untrained").resolve()
    compiled = root / "model.nequip.pth"
    settings_file = root / "settings.json"
    if compiled.is_file() and settings_file.is_file() and json.loads(settings_file.read_text()) == NEQUIP_MDSIM:
        return compiled
    root.mkdir(parents=True, exist_ok=True)
    train_xyz, valid_xyz = root / "data" / "train.xyz", root / "data" / "val.xyz"
    write_extxyz("aspirin", (0, 5), train_xyz)
    write_extxyz("aspirin", (5, 10), valid_xyz)
    config = nequip_config(["H", "C", "O"], train_xyz, valid_xyz, NEQUIP_MDSIM, max_epochs=1,
                           max_time="00:00:20:00", quick=True)
    config["trainer"]["limit_train_batches"] = 1  # one optimiser step: a checkpoint, not a trained model
    config["trainer"]["limit_val_batches"] = 1
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    train_dir = root / "train"
    log_path = root / "nequip.log"
    log(f"nequip: building the MDsim-size model (nequip-train, 1 step; nequip-compile) in {root}")
    _run([_bin("nequip-train"), "-cp", str(root), "-cn", "config.yaml", f"hydra.run.dir={train_dir}"],
         log_path, threads)
    best = train_dir / "best.ckpt"
    if not best.is_file():
        best = train_dir / "last.ckpt"
    _run([_bin("nequip-compile"), str(best), str(compiled), "--mode", "torchscript", "--device", "cpu"],
         log_path, threads)
    settings_file.write_text(json.dumps(NEQUIP_MDSIM))
    return compiled


def build_nequip(device: str = "cpu") -> Model:
    from .prepare import NEQUIP_MDSIM, _nequip_version

    if device != "cpu":
        raise RuntimeError("the NequIP model is compiled for CPU only in this benchmark")
    path = nequip_model_path(threads=max(1, torch.get_num_threads()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from nequip.integrations.ase import NequIPCalculator

        calc = NequIPCalculator.from_compiled_model(str(path), device=device, chemical_species_to_atom_type_map=True)
    keys = ("r_max", "num_layers", "l_max", "parity", "num_features", "num_bessels", "radial_mlp_depth",
            "radial_mlp_width")
    info = {
        "description": (f"NequIP {_nequip_version()} at MDsim's MD17 size, float32, TorchScript; untrained "
                        "(random init + 1 optimiser step on 5 rMD17 aspirin frames)"),
        "weights": "untrained",
        "interface": ("benchmarks.prepare.nequip_config(NEQUIP_MDSIM) -> nequip-train (1 step) -> nequip-compile "
                      "--mode torchscript -> NequIPCalculator.from_compiled_model(path, device='cpu', "
                      "chemical_species_to_atom_type_map=True)"),
        "hyperparameters": {k: NEQUIP_MDSIM[k] for k in keys},
        "path": str(path),
    }
    return Model("nequip", calc, info)


BUILDERS: Dict[str, Callable[..., Model]] = {
    "et": build_et, "et-compiled": build_et_compiled, "et-bundled": build_et_bundled,
    "torchmd-net-et": build_torchmd_net_et, "torchmd-net-et-ftz": build_torchmd_net_et_ftz,
    "nequip": build_nequip,
}


def build_models(names: List[str], device: str) -> tuple[Dict[str, Model], Dict[str, Dict[str, Any]]]:
    models: Dict[str, Model] = {}
    infos: Dict[str, Dict[str, Any]] = {}
    for name in names:
        start = time.perf_counter()
        default_dtype = torch.get_default_dtype()
        try:
            models[name] = BUILDERS[name](device)
            infos[name] = {**models[name].info, "build_s": round(time.perf_counter() - start, 2)}
            log(f"{name}: ready ({infos[name]['description']})")
        except Exception as error:  # a peer that cannot be built is skipped, with the reason
            infos[name] = {"skipped": f"{type(error).__name__}: {error}"}
            log(f"{name}: SKIPPED: {error}")
        if torch.get_default_dtype() != default_dtype:
            # nequip's global state sets torch's default dtype to float64 when it loads a model;
            # put it back so every model runs in an ordinary float32 process (nequip's speed is the
            # same either way: its compiled model casts its inputs).
            infos[name]["note"] = (f"loading it set torch's default dtype to {torch.get_default_dtype()}; "
                                   f"restored to {default_dtype}")
            torch.set_default_dtype(default_dtype)
    return models, infos


# ------------------------------------------------------------------------------------ timing
def _attach(model: Model, atoms: Atoms) -> Atoms:
    atoms = atoms.copy()
    atoms.info.update(model.atoms_info)
    atoms.calc = model.calc
    return atoms


def time_calls(model: Model, atoms: Atoms, reference: np.ndarray, n_calls: int, n_warmup: int,
               rng: np.random.Generator, bare: bool = False, budget_s: float = float("inf"),
               min_calls: int = 2) -> List[float]:
    """ms of each energy+forces call (positions = reference + noise before every call, so
    nothing is cached): ``n_calls`` calls, or fewer (at least ``min_calls``) once ``budget_s``
    seconds have been spent."""

    def one() -> float:
        atoms.positions = reference + rng.normal(0.0, PERTURB_A, reference.shape)
        start = time.perf_counter()
        if bare:
            assert model.bare is not None
            model.bare(atoms)
        else:
            atoms.get_forces()
        return 1000 * (time.perf_counter() - start)

    for _ in range(n_warmup):
        one()
    times: List[float] = []
    started = time.perf_counter()
    while len(times) < n_calls:
        times.append(one())
        if len(times) >= min_calls and time.perf_counter() - started > budget_s:
            break
    return times


def _median(values: List[float]) -> Optional[float]:
    return float(statistics.median(values)) if values else None


@dataclass
class _MDState:
    atoms: Atoms
    dynamics: VelocityVerlet
    steps: List[int] = field(default_factory=list)
    seconds: List[float] = field(default_factory=list)


def _md_segment(state: _MDState, steps: int, budget_s: float = float("inf"), chunk: int = 5) -> None:
    """``steps`` more velocity-Verlet steps (fewer if they take longer than ``budget_s``)."""
    state.atoms.get_forces()  # forces of the current state, outside the timer (the calculator is shared)
    done = 0
    start = time.perf_counter()
    while done < steps:
        state.dynamics.run(min(chunk, steps - done))
        done += min(chunk, steps - done)
        if time.perf_counter() - start > budget_s:
            break
    state.seconds.append(time.perf_counter() - start)
    state.steps.append(done)


def aspirin_benchmark(models: Dict[str, Model], threads: List[int], rounds: int, n_calls: int, min_calls: int,
                      call_budget_s: float, n_warmup: int, md_steps_per_round: int,
                      md_budget_s: float = float("inf")) -> Dict[str, Any]:
    """Rounds x threads x models, interleaved. Per round and model: energy+forces calls (and the
    bare model for et), then a segment of one continuing velocity-Verlet trajectory."""
    from forcefield_et.structures import structure_path

    molecule = read(structure_path("aspirin"))
    reference = molecule.get_positions()
    rng = np.random.default_rng(0)
    call_ms: Dict[tuple, List[List[float]]] = {}
    bare_ms: Dict[tuple, List[List[float]]] = {}
    md: Dict[tuple, _MDState] = {}
    for n_threads in threads:
        for name, model in models.items():
            md_atoms = _attach(model, molecule)
            MaxwellBoltzmannDistribution(md_atoms, temperature_K=300.0, rng=np.random.default_rng(0))
            md[(n_threads, name)] = _MDState(md_atoms, VelocityVerlet(md_atoms, timestep=0.5 * units.fs))
    attached = {name: _attach(model, molecule) for name, model in models.items()}
    for round_index in range(rounds):
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            for name, model in models.items():
                key = (n_threads, name)
                warmup = n_warmup if round_index == 0 else 2
                times = time_calls(model, attached[name], reference, n_calls, warmup, rng, budget_s=call_budget_s,
                                   min_calls=min_calls)
                call_ms.setdefault(key, []).append(times)
                if model.bare is not None:
                    times = time_calls(model, attached[name], reference, n_calls, 2, rng, bare=True,
                                       budget_s=call_budget_s, min_calls=min_calls)
                    bare_ms.setdefault(key, []).append(times)
                _md_segment(md[key], md_steps_per_round, md_budget_s)
                log(f"aspirin round {round_index + 1}/{rounds}, {n_threads} thread(s), {name}: "
                    f"{_median(call_ms[key][-1]):.2f} ms/call, "
                    f"{md[key].steps[-1] / md[key].seconds[-1]:.1f} MD steps/s")
    torch.set_num_threads(1)

    table: Dict[str, Any] = {}
    for n_threads in threads:
        rows: Dict[str, Any] = {}
        for name in models:
            key = (n_threads, name)
            round_medians = [_median(times) for times in call_ms[key]]
            state = md[key]
            rates = [n / s for n, s in zip(state.steps, state.seconds)]
            displacement = np.linalg.norm(state.atoms.positions - reference, axis=1).max()
            rows[name] = {
                "ms_per_call": _median(round_medians),
                "ms_per_call_rounds": round_medians,
                "ms_per_call_all_calls_median": _median([t for times in call_ms[key] for t in times]),
                "calls": sum(len(times) for times in call_ms[key]),
                "md_steps_per_s": _median(rates),
                "md_steps_per_s_rounds": rates,
                "md_steps": sum(state.steps),
                "md_steps_per_s_overall": sum(state.steps) / sum(state.seconds),
                "md_final_max_displacement_A": float(displacement),
            }
            if key in bare_ms:
                bare = _median([_median(times) for times in bare_ms[key]])
                rows[name]["bare_forward_ms"] = bare
                rows[name]["calculator_overhead_ms"] = rows[name]["ms_per_call"] - bare
        et = rows.get("et")
        for row in rows.values():
            row["ms_ratio_to_et"] = row["ms_per_call"] / et["ms_per_call"] if et else None
            row["md_speed_ratio_to_et"] = row["md_steps_per_s"] / et["md_steps_per_s"] if et else None
        table[str(n_threads)] = rows
    return {
        "molecule": "aspirin (21 atoms, forcefield_et.structures)",
        "dtype": "float32",
        "rounds": rounds,
        "calls_per_round": f"{n_calls} (at least {min_calls} when they take more than {call_budget_s} s)",
        "warmup_calls": n_warmup,
        "position_noise_A": PERTURB_A,
        "md": (f"ASE VelocityVerlet, 0.5 fs, 300 K Maxwell-Boltzmann start; one trajectory per model and thread "
               f"count, run in {rounds} interleaved segments of {md_steps_per_round} steps (a segment stops early "
               f"after {md_budget_s} s; md_steps says how many were run)"),
        "headline_values": "median over rounds of the per-round median (ms/call) or rate (MD steps/s)",
        "threads": table,
        "ratio_definitions": {"ms_ratio_to_et": "model ms/call / et ms/call (> 1: slower than et)",
                              "md_speed_ratio_to_et": "model MD steps/s / et MD steps/s (< 1: slower than et)"},
    }


def profile_et(model: Model, n_calls: int = 20, top: int = 15) -> Dict[str, Any]:
    """torch.profiler: top ops by self CPU time of ETCalculator calls on aspirin, 1 thread."""
    from torch.profiler import ProfilerActivity, profile

    from forcefield_et.structures import structure_path

    torch.set_num_threads(1)
    molecule = read(structure_path("aspirin"))
    reference = molecule.get_positions()
    atoms = _attach(model, molecule)
    rng = np.random.default_rng(1)
    plain = _median(time_calls(model, atoms, reference, n_calls, 5, rng))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        time_calls(model, atoms, reference, n_calls, 0, rng)
        wall_ms = 1000 * (time.perf_counter() - start) / n_calls
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total_self = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    rows = [{
        "op": e.key,
        "calls_per_energy_force_call": e.count / n_calls,
        "self_ms_per_call": e.self_cpu_time_total / 1000 / n_calls,
        "self_percent": 100 * e.self_cpu_time_total / total_self,
    } for e in events[:top]]
    return {
        "model": "et", "threads": 1, "calls": n_calls, "structure": "aspirin (21 atoms)",
        "ms_per_call_without_profiler": plain,
        "wall_ms_per_call_under_profiler": wall_ms,
        "torch_ops_self_ms_per_call": total_self / 1000 / n_calls,
        "n_distinct_ops": len(events),
        "n_op_invocations_per_call": sum(e.count for e in events) / n_calls,
        "top_ops": rows,
    }


# ------------------------------------------------------------------------------------ scaling
def water_box() -> Atoms:
    from forcefield_et.data import read_deepmd

    atoms = read_deepmd(str(WATER_DIR)).to_ase(0)
    atoms.calc = None
    atoms.info.clear()
    return atoms


def _reset_peak_rss() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _rss_mb(field_name: str) -> Optional[float]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _available_mb() -> Optional[float]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def scaling_benchmark(models: Dict[str, Model], repeats: List[tuple], deadline: float, n_calls: int,
                      call_budget_s: float, max_call_s: float, device: str = "cpu",
                      subsets: Optional[Dict[str, tuple]] = None) -> Dict[str, Any]:
    """ms/call against atom count on tiled water boxes, 1 thread; sizes interleaved over models.

    Before each size, the time per call and the peak memory are predicted linearly in the atom
    count (water: edges are proportional to atoms) from the model's previous size; the size is
    skipped when the call would exceed ``max_call_s``, when the size would not fit in what is left
    of the time budget, or when the memory would exceed 60% of MemAvailable."""
    subsets = subsets or {}
    torch.set_num_threads(1)
    base = water_box()
    rng = np.random.default_rng(2)
    results: Dict[str, List[Dict[str, Any]]] = {name: [] for name in models}
    last: Dict[str, Dict[str, Any]] = {}
    for repeat in repeats:
        atoms0 = base.repeat(repeat)
        n = len(atoms0)
        reference = atoms0.get_positions()
        for name, model in models.items():
            if name in subsets and n not in subsets[name]:
                continue
            row: Dict[str, Any] = {"atoms": n, "repeat": list(repeat)}
            previous = last.get(name)
            scale = n / previous["atoms"] if previous else None
            predicted_s = previous["ms_per_call"] / 1000 * scale * 1.2 if previous else None
            predicted_mb = previous["peak_rss_increase_mb"] * scale * 1.2 if previous and scale else None
            available = _available_mb()
            remaining = deadline - time.perf_counter()
            reason = None
            if results[name] and "skipped" in results[name][-1]:
                reason = "a smaller size was skipped"
            elif predicted_s is not None and predicted_s > max_call_s:
                reason = f"time: predicted {predicted_s:.0f} s per call > cap {max_call_s:.0f} s"
            elif predicted_s is not None and 3 * predicted_s > remaining:
                reason = f"time budget: predicted {3 * predicted_s:.0f} s for this size, {max(remaining, 0):.0f} s left"
            elif predicted_mb is not None and available is not None and predicted_mb > 0.6 * available:
                reason = (f"memory: predicted peak {predicted_mb / 1024:.1f} GB > 60% of "
                          f"{available / 1024:.1f} GB available")
            if reason:
                row.update(skipped=reason, predicted_s_per_call=predicted_s, predicted_peak_mb=predicted_mb)
                results[name].append(row)
                log(f"water {n} atoms, {name}: skipped ({reason})")
                continue
            atoms = _attach(model, atoms0)
            before = _rss_mb("VmRSS")
            _reset_peak_rss()
            try:
                n_warmup = 2 if predicted_s is not None and predicted_s < 2 else 1
                times = time_calls(model, atoms, reference, n_calls, n_warmup, rng, budget_s=call_budget_s)
            except Exception as error:  # e.g. out of memory: record it; larger sizes are skipped
                row["skipped"] = f"{type(error).__name__}: {error}"[:300]
                results[name].append(row)
                log(f"water {n} atoms, {name}: FAILED ({row['skipped']})")
                continue
            peak = _rss_mb("VmHWM")
            ms = _median(times)
            assert ms is not None
            row.update({
                "ms_per_call": ms, "us_per_atom": 1000 * ms / n, "calls": len(times), "ms_min": min(times),
                "peak_rss_mb": peak,
                "peak_rss_increase_mb": (peak - before) if peak is not None and before is not None else None,
            })
            results[name].append(row)
            last[name] = row
            log(f"water {n} atoms, {name}: {ms:.1f} ms/call, {row['us_per_atom']:.1f} us/atom ({len(times)} calls), "
                f"peak RSS +{row['peak_rss_increase_mb'] or 0:.0f} MB")
            del atoms
    return {
        "structure": "64-water periodic box (../shared/data/water/data_0 frame 0, 192 atoms) tiled with atoms.repeat",
        "device": device,
        "threads": 1,
        "dtype": "float32",
        "calls": (f"median of up to {n_calls} calls (at least 2, fewer than {n_calls} once they exceed "
                  f"{call_budget_s:.0f} s) after 1-2 warm-up calls"),
        "subsets": {name: list(sizes) for name, sizes in subsets.items() if name in models},
        "caps": {"max_predicted_s_per_call": max_call_s,
                 "memory": "predicted peak RSS increase (linear in atoms from the previous size, x1.2) "
                           "< 60% of MemAvailable",
                 "time": "3 predicted calls must fit in what is left of the benchmark's time budget"},
        "peak_rss_increase_mb": "VmHWM after the calls minus VmRSS before them (peak reset via /proc/self/clear_refs)",
        "results": results,
    }


# ------------------------------------------------------------------------------------ plots
def plot_aspirin(aspirin: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = aspirin["threads"]
    names = list(next(iter(tables.values())))
    labels = names + (["et (bare forward)"] if "et" in names else [])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(tables)
    for k, (n_threads, rows) in enumerate(tables.items()):
        values = [rows[name]["ms_per_call"] for name in names]
        if "et" in names:
            values.append(rows["et"]["bare_forward_ms"])
        x = np.arange(len(labels)) + (k - (len(tables) - 1) / 2) * width
        bars = ax.bar(x, values, width, label=f"{n_threads} thread{'s' if n_threads != '1' else ''}")
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(np.arange(len(labels)), labels)
    ax.set_ylabel("ms per energy+forces call")
    ax.set_title("Aspirin (21 atoms), CPU float32, ASE calculator")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_scaling(scaling: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, rows in scaling["results"].items():
        points = [(r["atoms"], r["ms_per_call"]) for r in rows if "ms_per_call" in r]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, "o-", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("atoms (water boxes)")
    ax.set_ylabel("ms per energy+forces call")
    ax.set_title(f"Size scaling, {scaling['device']}, {scaling['threads']} thread, float32")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------ driver
def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="aspirin + 2 small water sizes, fewer repeats (< 2 min)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts (aspirin)")
    parser.add_argument("--models", nargs="+", default=list(ALL_MODELS), choices=ALL_MODELS)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--no-profile", action="store_true", help="skip the torch.profiler summary of et")
    parser.add_argument("--skip-scaling", action="store_true", help="aspirin only: skip the water-box size scaling")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    torch.set_num_threads(1)
    if args.quick:
        rounds, n_calls, min_calls, call_budget_s, n_warmup, md_steps, md_budget_s = 2, 10, 5, 0.5, 3, 10, 3.0
        repeats, budget_s, scaling_calls, scaling_budget_s, max_call_s = QUICK_REPEATS, 110.0, 5, 3.0, 5.0
        subsets = {"et-torch-nl": (192,), "torchmd-net-et": (192,)}
    else:
        rounds, n_calls, min_calls, call_budget_s, n_warmup, md_steps, md_budget_s = 3, 30, 10, 1.5, 10, 34, 20.0
        repeats, budget_s, scaling_calls, scaling_budget_s, max_call_s = FULL_REPEATS, 840.0, 10, 20.0, 30.0
        subsets = {"et-torch-nl": TORCH_NL_ATOMS, "torchmd-net-et": TORCHMD_NET_ATOMS}
    deadline = started + budget_s
    report: Dict[str, Any] = {
        "benchmark": "speed",
        "quick": args.quick,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_average": {"start": load_average()},
        "weights_note": WEIGHTS_NOTE,
        "machine": machine_info(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "omp_wait_policy_set_before_torch_loaded": OMP_WAIT_POLICY_SET_BEFORE_TORCH,
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "trained_weights": {"et": False, "et-compiled": False, "et-bundled": True, "torchmd-net-et": False,
                            "torchmd-net-et-ftz": False, "nequip": False},
    }
    names = list(dict.fromkeys(args.models))
    models, infos = build_models(names, "cpu")
    report["models"] = infos
    report["load_average"]["aspirin_start"] = load_average()
    report["aspirin"] = aspirin_benchmark(models, args.threads, rounds, n_calls, min_calls, call_budget_s, n_warmup,
                                          md_steps, md_budget_s)
    report["load_average"]["aspirin_end"] = load_average()
    if "et" in models and not args.no_profile:
        report["profile_et_aspirin"] = profile_et(models["et"], n_calls=10 if args.quick else 20)

    scaling_models: Dict[str, Model] = {}
    if "et" in models:
        scaling_models["et"] = models["et"]
        torch_nl = build_et(neighbor_list="torch")
        scaling_models["et-torch-nl"] = Model("et-torch-nl", torch_nl.calc, torch_nl.info)
    if "torchmd-net-et" in models:
        # TMDNETCalculator's default max_num_neighbors=64 is too few for water at 5 A.
        scaling_models["torchmd-net-et"] = build_torchmd_net_et(max_num_neighbors=128)
    if "nequip" in models:
        scaling_models["nequip"] = models["nequip"]
    report["load_average"]["scaling_start"] = load_average()
    if args.skip_scaling:
        report["scaling"] = {"skipped": "--skip-scaling", "results": {}}
    else:
        report["scaling"] = scaling_benchmark(scaling_models, repeats, deadline, scaling_calls, scaling_budget_s,
                                              max_call_s, subsets=subsets)
    report["scaling"]["models"] = {
        "et": "ETCalculator, neighbor_list='auto' (matscipy at >= 100 atoms)",
        "et-torch-nl": "ETCalculator(neighbor_list='torch'), same weights as et",
        "torchmd-net-et": "TMDNETCalculator(max_num_neighbors=128), same network as in the aspirin table",
        "nequip": "NequIPCalculator (its own neighbour list), same model as in the aspirin table",
    }

    if torch.cuda.is_available():  # untested here: the development machine has no GPU
        cuda_models, cuda_infos = build_models([n for n in names if n != "nequip"], "cuda")
        report["cuda"] = {
            "device_name": torch.cuda.get_device_name(0),
            "models": cuda_infos,
            "nequip": "not run on CUDA (compiled for CPU in this benchmark)" if "nequip" in names else None,
            "aspirin": aspirin_benchmark(cuda_models, [1], rounds, n_calls, min_calls, call_budget_s, n_warmup,
                                         md_steps, md_budget_s),
        }
        if "et" in cuda_models:
            report["cuda"]["scaling"] = scaling_benchmark({"et": cuda_models["et"]}, repeats,
                                                          time.perf_counter() + 300, scaling_calls, scaling_budget_s,
                                                          max_call_s, device="cuda")

    report["load_average"]["end"] = load_average()
    report["wall_time_s"] = time.perf_counter() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "speed.json", report)
    plot_aspirin(report["aspirin"], out / "speed_aspirin.png")
    if not args.skip_scaling:
        plot_scaling(report["scaling"], out / "speed_scaling.png")
    print_tables(report)
    log(f"wrote {out / 'speed.json'}, speed_aspirin.png, speed_scaling.png in {report['wall_time_s']:.0f} s")
    return 0


def print_tables(report: Dict[str, Any]) -> None:
    print("\nAspirin (21 atoms), CPU float32; ratios relative to et")
    print(f"{'threads':>7} {'model':<16} {'ms/call':>8} {'MD steps/s':>10} {'ms ratio':>8} {'MD ratio':>8}")
    for n_threads, rows in report["aspirin"]["threads"].items():
        for name, row in rows.items():
            ms_ratio = f"{row['ms_ratio_to_et']:.2f}" if row["ms_ratio_to_et"] is not None else "-"
            md_ratio = f"{row['md_speed_ratio_to_et']:.2f}" if row["md_speed_ratio_to_et"] is not None else "-"
            print(f"{n_threads:>7} {name:<16} {row['ms_per_call']:8.2f} {row['md_steps_per_s']:10.1f} "
                  f"{ms_ratio:>8} {md_ratio:>8}")
            if "bare_forward_ms" in row:
                print(f"{n_threads:>7} {'  (bare forward)':<16} {row['bare_forward_ms']:8.2f}")
    print("\nWater boxes, CPU float32, 1 thread")
    print(f"{'model':<12} {'atoms':>6} {'ms/call':>9} {'us/atom':>8}")
    for name, rows in report["scaling"]["results"].items():
        for row in rows:
            if "ms_per_call" in row:
                print(f"{name:<12} {row['atoms']:6d} {row['ms_per_call']:9.1f} {row['us_per_atom']:8.1f}")
            else:
                print(f"{name:<12} {row['atoms']:6d} skipped: {row['skipped']}")
    if "profile_et_aspirin" in report:
        prof = report["profile_et_aspirin"]
        print(f"\net on aspirin, 1 thread, torch.profiler: {prof['n_op_invocations_per_call']:.0f} op calls per "
              f"energy+forces call; top ops by self CPU time:")
        for row in prof["top_ops"][:10]:
            print(f"  {row['op']:<40} {row['self_ms_per_call']:7.3f} ms {row['self_percent']:5.1f}%")


if __name__ == "__main__":
    raise SystemExit(main())

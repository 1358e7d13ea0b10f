"""MD stability and speed benchmark (MDsim protocol, Fu et al. 2022, "Forces are not enough").

    python -m benchmarks.md_stability --quick                     # aspirin + ethanol, 2 ps each (CI)
    python -m benchmarks.md_stability --full                      # 4 molecules x 3 models x 300 ps
    nohup python -m benchmarks.md_stability --full > runs/md_stability.log 2>&1 &   # resumable
    python -m benchmarks.md_stability --quick --model-path mine=runs/x/best.pt --models mine
    python -m benchmarks.md_stability --report                    # summary of the runs so far; runs nothing

Protocol (per molecule and model): start from an rMD17 *test*-split frame (``--start-frame``),
Maxwell-Boltzmann velocities at 500 K (seeded; centre-of-mass motion and rotation removed),
Nose-Hoover chain NVT (ASE ``NoseHooverChainNVT``, chain length 3, damping time 10 fs, which
gives the first thermostat the same mass as MDsim's ``ttime = 20`` time steps) at 500 K with a
0.5 fs time step for 300 ps (600,000 steps), positions saved every 100 steps (0.05 ps).

- Bonds: atom pairs of the start frame that ASE's ``NeighborList(natural_cutoffs(atoms),
  self_interaction=False)`` connects, i.e. d_ij < r_cov,i + r_cov,j + 0.6 Å (ASE adds its default
  0.3 Å skin to each radius). This is MDsim's definition and yields exactly the covalent bonds of
  the four molecules. Reference bond lengths: the mean over the rMD17 test-split frames (MDsim
  uses the mean over its reference data).
- Collapse: the first saved frame in which any bond deviates by more than 0.5 Å from its reference
  length, or in which positions/forces become non-finite. The simulation stops there. Stability
  (ps) is the time of that frame, or the simulated time if it never collapses (300 ps at most).
- h(r): histogram of all interatomic distances (each pair i<j once), 500 bins on (0, 10] Å, over
  the saved frames up to and including the collapse frame, normalised to unit sum (each bin is
  the fraction of pair distances in it). The reference h(r) uses all rMD17 test-split frames.
  ``hr_mae`` is the mean over the 500 bins of |h_model - h_ref|; ``hr_mae_mdsim`` = 500 x
  ``hr_mae`` equals MDsim's number (density-normalised histograms, MAE times the 10 Å range).
- Speed: MD steps per second of wall time (integrator + model, one process, ``--threads``
  intra-op threads, default 1) and ns/day.

Models: ``et-pretrained-finetuned`` (the bundled ``rmd17-<mol>`` checkpoint: the converged pretrained-start
1000-frame model of ``benchmarks.finetune_converged``; the fine-tuning study's 2,000-step run before it),
``et-scratch`` (the fine-tuning study's scratch run on the same frames with the 2,000-step recipe,
``benchmarks/results/finetune_study/runs/<mol>-1000-scratch/best.pt``) and ``nequip``
(``benchmarks/cache/nequip-<mol>/model.nequip.pth``), all made by ``python -m benchmarks.prepare``
or the fine-tuning pipeline. Missing models are skipped and the reason recorded.
``--model-path NAME=PATH`` adds any ETCalculator checkpoint (or a ``.nequip.pth`` file); ``{molecule}``
in PATH is replaced by the molecule name.

Each (molecule, model) run has a result folder ``<out>/runs/<molecule>__<model>/`` and a work folder
``<work>/<molecule>__<model>/``. The work folder (``--work``; default ``runs/<out below
benchmarks/results>``, e.g. ``runs/md_stability``, which git ignores, or ``<out>/work`` for an
``--out`` elsewhere) holds ``state.npz`` (saved frames, positions, momenta, Nose-Hoover chain state,
step count; rewritten atomically every ``--checkpoint-every`` saved frames, so a killed run resumes
exactly where it stopped) and ``trajectory.npz`` (saved positions, times, temperatures). The result
folder holds ``result.json`` (written when the run ends, with the h(r) histogram in ``hr``; while a
finished run is being extended it keeps the shorter result, and the summary marks how far the
extension has got). A run whose ``result.json`` matches the current protocol and model file is not
repeated; one that does not is replaced, its result appended to ``superseded.json`` in the result
folder (the summary lists it under the run's ``superseded``) and its state and trajectory moved to
``superseded/<fingerprint>/`` in the work folder. The simulated time is not part of that match, so
a finished shorter run (e.g. ``--time-ps 10``) extends exactly to a longer one (``--time-ps 300``)
from its saved state, and a collapsed run is final. The summary needs only the result folders. The summary
``md_stability.json`` and the plots ``stability.png``, ``hr_<molecule>.png`` and ``speed.png`` are
rebuilt at the end of every invocation from all completed runs in ``<out>/runs`` that share the
current protocol (so separate invocations per molecule, e.g. one per core, add up to one summary).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from forcefield_et.bonds import bond_changes, bond_changes_text, bond_lengths, find_bonds, max_bond_deviation
from forcefield_et.files import DirectoryBusyError, DirectoryLock, file_sha256
from forcefield_et.runtime import compile_pays_off

from .io import holds_same_content, savez_atomic, write_json_atomic, write_text_atomic
from .paths import DATA_ROOT, repo_relative, rmd17_file

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = Path(__file__).resolve().parent / "cache"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
WORK_ROOT = REPO_ROOT / "runs"  # ignored by git: resumable states and trajectories
# the fine-tuning study's run folders (benchmarks/finetune_study.py; not imported here: it loads torch)
STUDY_RUNS_DIR = Path(__file__).resolve().parent / "results" / "finetune_study" / "runs"
MOLECULES = ("aspirin", "ethanol", "naphthalene", "salicylic")
QUICK_MOLECULES = ("aspirin", "ethanol")
DEFAULT_MODELS = ("et-pretrained-finetuned", "et-scratch", "nequip")
NEQUIP_COMPILED_NAME = "model.nequip.pth"
NEQUIP_CUDA_COMPILED_NAME = "model.cuda.nequip.pth"  # benchmarks.prepare --device cuda
NH_CHAIN_LENGTH = 3  # ASE NoseHooverChainNVT default, used by forcefield_et.md.make_dynamics
MIN_TEMPERATURE_K, MAX_TEMPERATURE_K = 0.1, 1.0e5  # MDsim's sanity range for early stopping


# ---------------------------------------------------------------------------------------- protocol
@dataclass
class Protocol:
    """MD and analysis settings; every field goes into the JSON and into each run's fingerprint."""

    temperature_K: float = 500.0
    timestep_fs: float = 0.5
    time_ps: float = 300.0
    save_every: int = 100
    thermostat: str = "nose-hoover"
    tdamp_fs: float = 10.0
    nh_chain_length: int = NH_CHAIN_LENGTH
    start_split: str = "test"
    start_frame: int = 0
    seed: int = 0
    collapse_threshold_A: float = 0.5
    bond_definition: str = "ase NeighborList(natural_cutoffs, skin 0.3): d < r_i + r_j + 0.6 A on the start frame"
    reference_bond_lengths: str = "mean over the rMD17 test-split frames"
    hr_bins: int = 500
    hr_r_max_A: float = 10.0
    hr_normalisation: str = "unit sum over the 500 bins (fraction of pair distances per bin)"
    hr_reference: str = "all rMD17 test-split frames (split 01)"
    dtype: str = "float32"
    threads: int = 1
    device: str = "cpu"
    # ET models: energy and forces as one compiled graph (ETCalculator(compile=True)); main() and the
    # other MD drivers switch it on where the run is long enough to repay it (runtime.compile_pays_off)
    compile: bool = False

    @property
    def n_saves(self) -> int:
        return max(1, int(round(self.time_ps * 1000.0 / self.timestep_fs / self.save_every)))

    @property
    def n_steps(self) -> int:
        return self.n_saves * self.save_every

    @property
    def save_interval_ps(self) -> float:
        return self.save_every * self.timestep_fs / 1000.0

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        out.update(n_steps=self.n_steps, n_saved_frames=self.n_saves + 1, save_interval_ps=self.save_interval_ps)
        return out


# ---------------------------------------------------------------------------------------- analysis
def collapse_frame(
    trajectory: np.ndarray, bonds: np.ndarray, reference_lengths: np.ndarray, threshold: float = 0.5
) -> int | None:
    """Index of the first frame of ``trajectory`` [F, N, 3] in which any bond deviates by more
    than ``threshold`` Å from ``reference_lengths`` (or positions are non-finite); None if none."""
    deviation = max_bond_deviation(np.asarray(trajectory)[None] if np.ndim(trajectory) == 2 else trajectory,
                                   bonds, reference_lengths)
    bad = np.flatnonzero(deviation > threshold)
    return int(bad[0]) if len(bad) else None


def hr_edges(bins: int = 500, r_max: float = 10.0) -> np.ndarray:
    return np.linspace(0.0, r_max, bins + 1)


def distance_histogram(trajectory: np.ndarray, bins: int = 500, r_max: float = 10.0) -> np.ndarray:
    """h(r): histogram of all interatomic distances (each pair i<j once, all frames) in ``bins``
    equal bins on (0, r_max] Å, normalised to unit sum (fraction of the in-range distances per
    bin). Distances beyond r_max and non-finite frames are left out. Returns [bins] float64."""
    traj = np.asarray(trajectory, dtype=np.float64)
    if traj.ndim == 2:
        traj = traj[None]
    traj = traj[np.isfinite(traj).all(axis=(1, 2))]
    i, j = np.triu_indices(traj.shape[1], k=1)
    distances = np.linalg.norm(traj[:, i] - traj[:, j], axis=-1).ravel()
    distances = distances[(distances > 0.0) & (distances <= r_max)]
    counts = np.histogram(distances, bins=hr_edges(bins, r_max))[0].astype(np.float64)
    total = counts.sum()
    return counts / total if total > 0 else counts


def hr_mae(h_model: np.ndarray, h_reference: np.ndarray) -> float:
    """Mean absolute difference over bins of two unit-sum h(r) histograms."""
    return float(np.mean(np.abs(np.asarray(h_model) - np.asarray(h_reference))))


# ---------------------------------------------------------------------------------------- data
@dataclass
class Reference:
    """rMD17 reference for one molecule: atomic numbers, test-split frames, bonds and h(r)."""

    molecule: str
    numbers: np.ndarray
    frames: np.ndarray  # [F, N, 3] Å
    bonds: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    bond_reference: np.ndarray = field(default_factory=lambda: np.zeros(0))
    hr: np.ndarray = field(default_factory=lambda: np.zeros(0))
    source: str = ""


def load_reference(molecule: str, protocol: Protocol, data_root: Path = DATA_ROOT) -> Reference:
    """The start frames, bonds and reference h(r) of ``molecule`` from its rMD17 split under
    ``data_root`` (the shared data folder)."""
    from forcefield_et.data import read_rmd17

    path = rmd17_file(molecule, protocol.start_split, data_root)
    if not path.is_file():
        raise FileNotFoundError(f"rMD17 file {path} not found (the shared data folder is needed; see --data-root)")
    data = read_rmd17(path)
    n = int(data.n_atoms[0])
    frames = data.pos.reshape(len(data), n, 3)
    numbers = data.z[:n].copy()
    if not 0 <= protocol.start_frame < len(frames):
        raise ValueError(f"--start-frame {protocol.start_frame} outside the {len(frames)} frames of {path.name}")
    bonds = find_bonds(numbers, frames[protocol.start_frame])
    return Reference(
        molecule=molecule, numbers=numbers, frames=frames, bonds=bonds,
        bond_reference=bond_lengths(frames, bonds).mean(axis=0),
        hr=distance_histogram(frames, protocol.hr_bins, protocol.hr_r_max_A), source=path.name,
    )


# ---------------------------------------------------------------------------------------- models
@dataclass
class ModelSpec:
    name: str
    kind: str  # "et" | "nequip"
    path: Path | None
    description: str
    skip_reason: str | None = None


def describe_et(path: Path) -> str:
    from forcefield_et.checkpoint import read_checkpoint

    meta = read_checkpoint(path)["metadata"]
    h = meta.get("hyperparameters", {})
    parent = (meta.get("training") or {}).get("parent")
    step = (meta.get("training") or {}).get("step")
    return (f"ET {h.get('hidden_channels')} hidden, {h.get('num_layers')} layers, {h.get('num_heads')} heads, "
            f"{h.get('num_rbf')} RBF, cutoff {h.get('cutoff')} A; parent {parent or 'none (from scratch)'}; "
            f"{step if step is not None else '?'} training steps")


def resolve_model(name: str, molecule: str, extra: Dict[str, Path], cache_dir: Path = CACHE_DIR,
                  study_runs_dir: Path = STUDY_RUNS_DIR, device: str = "cpu") -> ModelSpec:
    """Where the model ``name`` for ``molecule`` lives, or why it is skipped. On a CUDA ``device``
    NequIP uses its CUDA-compiled model (``prepare --device cuda``) when there is one."""
    if name in extra:
        path = Path(str(extra[name]).replace("{molecule}", molecule))
        if not path.is_file():
            return ModelSpec(name, "et", path, "", f"--model-path file {path} does not exist")
        if path.name.endswith(".nequip.pth"):
            return ModelSpec(name, "nequip", path, f"NequIP TorchScript model {path.name}")
        return ModelSpec(name, "et", path, describe_et(path))
    if name == "et-pretrained-finetuned":
        from forcefield_et.registry import bundled_models

        bundled = bundled_models()
        key = f"rmd17-{molecule}"
        if key not in bundled:
            return ModelSpec(name, "et", None, "", (
                f"bundled checkpoint {key!r} is not in forcefield_et/checkpoints (have: "
                f"{', '.join(sorted(bundled)) or 'none'}); fine-tune the pretrained model on the 1000 rMD17 "
                f"train frames and export it as forcefield_et/checkpoints/{key}.pt"))
        return ModelSpec(name, "et", bundled[key], f"bundled {key}: " + describe_et(bundled[key]))
    if name == "et-scratch":
        path = study_runs_dir / f"{molecule}-1000-scratch" / "best.pt"
        if not path.is_file():
            return ModelSpec(name, "et", path, "", f"{path} not found; run: python -m benchmarks.prepare "
                             f"--molecules {molecule} --models et-scratch (the fine-tuning study's scratch run)")
        return ModelSpec(name, "et", path, describe_et(path))
    if name == "nequip":
        path = cache_dir / f"nequip-{molecule}" / NEQUIP_COMPILED_NAME
        cuda_path = cache_dir / f"nequip-{molecule}" / NEQUIP_CUDA_COMPILED_NAME
        if device.startswith("cuda") and cuda_path.is_file():
            path = cuda_path
        if not path.is_file():
            return ModelSpec(name, "nequip", path, "", f"{path} not found; run: python -m benchmarks.prepare "
                             f"--molecules {molecule} --models nequip")
        info = cache_dir / f"nequip-{molecule}" / "model_info.json"
        description = "NequIP (nequip-train, TorchScript via nequip-compile)"
        if info.is_file():
            description = json.loads(info.read_text()).get("description", description)
        return ModelSpec(name, "nequip", path, description)
    known = ", ".join(list(DEFAULT_MODELS) + sorted(extra))
    return ModelSpec(name, "et", None, "", f"unknown model name {name!r} (known: {known}; add --model-path NAME=PATH)")


def make_calculator(spec: ModelSpec, protocol: Protocol):
    """An ASE calculator for ``spec`` on ``protocol.device``."""
    if spec.kind == "mace":
        from mace.calculators import MACECalculator

        return MACECalculator(model_paths=str(spec.path), device=protocol.device, default_dtype=protocol.dtype)
    if spec.kind == "nequip":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            from nequip.integrations.ase import NequIPCalculator

            if str(spec.path).endswith(".ckpt"):  # a training checkpoint, run eagerly (nequip's own loader)
                return NequIPCalculator._from_saved_model(str(spec.path), device=protocol.device,
                                                          chemical_species_to_atom_type_map=True)
            return NequIPCalculator.from_compiled_model(str(spec.path), device=protocol.device,
                                                        chemical_species_to_atom_type_map=True)
    from forcefield_et.calculators.ase import ETCalculator

    return ETCalculator(str(spec.path), device=protocol.device, dtype=protocol.dtype,
                        compile="auto" if protocol.compile else False)  # a heads committee runs eagerly


def trajectory_settings(protocol: Protocol) -> Dict[str, Any]:
    """The protocol without the simulated time and the compile switch: runs that share these settings
    are the same trajectory, so a finished shorter run extends to a longer one, and runs of different
    lengths belong in one summary."""
    # Compiling changes forces only by float32 rounding, as another CPU would: a run may be extended
    # compiled or not. Each result records whether it ran compiled.
    left_out = ("time_ps", "n_steps", "n_saved_frames", "compile")
    return {k: v for k, v in protocol.to_dict().items() if k not in left_out}


def protocol_key(protocol: Protocol) -> str:
    return hashlib.sha256(json.dumps(trajectory_settings(protocol), sort_keys=True).encode()).hexdigest()[:16]


def default_work_dir(out: Path) -> Path:
    """The work folder (resumable states, trajectories) of the runs summarised in ``out``:
    ``runs/<out below benchmarks/results>`` (ignored by git) for an ``out`` in benchmarks/results,
    else ``<out>/work``."""
    out = Path(out).resolve()
    try:
        return WORK_ROOT / out.relative_to(RESULTS_DIR.resolve())
    except ValueError:
        return out / "work"


def _run_work_dir(run_dir: Path, work: Path | None) -> Path:
    """The work folder of the run with result folder ``run_dir`` (the result folder itself when
    ``work`` is None, as :func:`run_one` without ``work_dir``)."""
    return Path(work) / Path(run_dir).name if work is not None else Path(run_dir)


def collect_previous_runs(out: Path, protocol: Protocol, have: List[Dict[str, Any]],
                          work: Path | None = None) -> List[Dict[str, Any]]:
    """Completed runs in ``out/runs`` with the same protocol, whatever their simulated time, that
    this invocation did not touch (for example runs of other molecules made by a parallel or an
    earlier invocation), so the summary covers them all. ``work`` is the work folder root, where
    the saved states of running or stopped extensions are."""
    seen = {(r["molecule"], r["model"]) for r in have}
    found = []
    for path in sorted((out / "runs").glob("*/result.json")):
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if result.get("protocol_key") == protocol_key(protocol) and (result["molecule"], result["model"]) not in seen:
            reached = extension_reached_ps(_run_work_dir(path.parent, work), result, protocol.timestep_fs)
            found.append({**result, "extension_reached_ps": reached} if reached is not None else result)
    return found


def extension_reached_ps(work_dir: Path, result: Dict[str, Any], timestep_fs: float) -> float | None:
    """Simulated time (ps) of the saved state in ``work_dir`` when it is further than the finished
    ``result`` (the run is being extended, or an extension was stopped), else None."""
    state_path = work_dir / "state.npz"
    if result.get("collapsed") or not state_path.is_file():
        return None
    try:
        with np.load(state_path) as state:
            if str(state["fingerprint"]) != result.get("fingerprint"):
                return None
            steps = int(state["steps_done"])
    except (OSError, ValueError, KeyError):
        return None
    if steps <= int(result["steps"]):
        return None
    return steps * timestep_fs / 1000.0


def file_digest(path: Path | None) -> str | None:
    if path is None or not path.is_file():
        return None
    return file_sha256(path)


# ---------------------------------------------------------------------------------------- one run
def _longer_than_requested(path: Path, steps: int, protocol: Protocol) -> str:
    return (f"{path} holds {steps} steps, more than the {protocol.n_steps} requested ({protocol.time_ps:g} ps); "
            "ask for at least that long (--time-ps) or use another --out")


def _thermostat_state(dynamics) -> Dict[str, np.ndarray] | None:
    thermostat = getattr(dynamics, "_thermostat", None)
    if thermostat is None or not hasattr(thermostat, "_eta") or not hasattr(thermostat, "_p_eta"):
        return None
    return {"eta": np.array(thermostat._eta, dtype=np.float64), "p_eta": np.array(thermostat._p_eta, dtype=np.float64)}


def _restore_thermostat(dynamics, eta: np.ndarray, p_eta: np.ndarray) -> bool:
    thermostat = getattr(dynamics, "_thermostat", None)
    if thermostat is None or not hasattr(thermostat, "_eta") or np.shape(thermostat._eta) != np.shape(eta):
        return False
    thermostat._eta = np.array(eta, dtype=np.float64)
    thermostat._p_eta = np.array(p_eta, dtype=np.float64)
    return True


class RunLogger:
    def __init__(self, prefix: str, quiet: bool = False) -> None:
        self.prefix = prefix
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"[{time.strftime('%H:%M:%S')}] {self.prefix}: {message}", flush=True)


def run_one(
    spec: ModelSpec, reference: Reference, protocol: Protocol, run_dir: Path, checkpoint_every: int = 50,
    restart: bool = False, quiet: bool = False, work_dir: Path | None = None,
    cpu_budget_s: float | None = None, lock: bool = True,
) -> Dict[str, Any]:
    """Run (or resume, or reuse) one molecule/model simulation and return its result dict.
    ``result.json`` goes to ``run_dir``; ``state.npz`` and ``trajectory.npz`` to ``work_dir``
    (default ``run_dir``).

    ``cpu_budget_s``: stop once the run has used this much CPU time of its process (counted across
    resumes, in the saved state) even if it has not reached ``protocol.time_ps``; the result then
    says ``stopped_by: "cpu budget"`` and a later call with a larger budget extends it.

    The run holds the lock of ``work_dir`` (``lock=False``: its caller holds it for the run): a run
    that another process has under way raises DirectoryBusyError (a RuntimeError) and touches nothing."""
    work = Path(work_dir) if work_dir is not None else Path(run_dir)
    with DirectoryLock(work, "MD-stability run folder") if lock else contextlib.nullcontext():
        return _run_one(spec, reference, protocol, run_dir, checkpoint_every, restart, quiet, work_dir, cpu_budget_s)


def _run_one(
    spec: ModelSpec, reference: Reference, protocol: Protocol, run_dir: Path, checkpoint_every: int,
    restart: bool, quiet: bool, work_dir: Path | None, cpu_budget_s: float | None,
) -> Dict[str, Any]:
    """:func:`run_one` within the run's lock."""
    from ase import Atoms

    from forcefield_et.md import initial_velocities, make_dynamics

    log = RunLogger(f"{reference.molecule}/{spec.name}", quiet)
    run_dir = Path(run_dir)
    work_dir = Path(work_dir) if work_dir is not None else run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    result_path, state_path = run_dir / "result.json", work_dir / "state.npz"
    # The simulated time is not part of the fingerprint: a finished shorter run extends to a longer one.
    fingerprint = {"protocol": trajectory_settings(protocol), "model_file_sha256": file_digest(spec.path),
                   "model_kind": spec.kind, "molecule": reference.molecule}
    fingerprint_key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()
    if restart:
        for path in (result_path, state_path):
            path.unlink(missing_ok=True)
    if result_path.is_file():
        previous = json.loads(result_path.read_text())
        same_length = previous.get("steps") == protocol.n_steps or (
            previous.get("stopped_by") == "cpu budget" and cpu_budget_s is not None
            and previous.get("cpu_budget_s") is not None and cpu_budget_s <= previous["cpu_budget_s"])
        if previous.get("fingerprint") == fingerprint_key and (same_length or previous["collapsed"]):
            log(f"complete already ({previous['stability_ps']:.2f} ps); reusing {result_path}")
            return previous
        if previous.get("fingerprint") == fingerprint_key and previous["steps"] > protocol.n_steps:
            raise ValueError(_longer_than_requested(result_path, previous["steps"], protocol))
        if previous.get("fingerprint") == fingerprint_key:
            # result.json stays (the last finished length) until the extension's result replaces it
            log(f"result.json covers {previous['simulated_ps']:g} ps; extending the run to {protocol.time_ps:g} ps")
        else:
            _set_aside(work_dir, str(previous.get("fingerprint")), ("trajectory.npz",))
            superseded = read_superseded(run_dir) + [previous]
            write_json_atomic(run_dir / "superseded.json", superseded)
            result_path.unlink()
            log(f"result.json is from a different protocol or model file; running again (the old result is in "
                f"{run_dir / 'superseded.json'})")

    calculator = make_calculator(spec, protocol)
    atoms = Atoms(numbers=reference.numbers, positions=reference.frames[protocol.start_frame].copy())
    atoms.calc = calculator
    frames: List[np.ndarray] = [reference.frames[protocol.start_frame].astype(np.float32)]
    temperatures: List[float] = []
    steps_done, md_wall_s, md_cpu_s, resume_note, thermo = 0, 0.0, 0.0, "fresh start", None
    if state_path.is_file():
        state = np.load(state_path)
        if str(state["fingerprint"]) == fingerprint_key:
            if int(state["steps_done"]) > protocol.n_steps:
                raise ValueError(_longer_than_requested(state_path, int(state["steps_done"]), protocol))
            atoms.set_positions(state["positions"])
            atoms.set_momenta(state["momenta"])
            frames = list(state["frames"])
            temperatures = list(state["temperatures"])
            steps_done, md_wall_s = int(state["steps_done"]), float(state["md_wall_s"])
            md_cpu_s = float(state["md_cpu_s"]) if "md_cpu_s" in state.files else md_wall_s
            thermo = (state["eta"], state["p_eta"]) if "eta" in state.files else None
            resume_note = f"resumed at step {steps_done}"
        else:
            kept = _set_aside(work_dir, str(state["fingerprint"]), ("state.npz",))
            log(f"state.npz is from a different protocol or model file; starting over (the old state is in {kept})")
    if steps_done == 0:
        initial_velocities(atoms, protocol.temperature_K, protocol.seed, remove_rotation=True)
        temperatures = [float(atoms.get_temperature())]
    dynamics = make_dynamics(atoms, protocol.thermostat, protocol.timestep_fs, protocol.temperature_K,
                             friction_per_fs=0.01, seed=protocol.seed, tdamp_fs=protocol.tdamp_fs)
    if thermo is not None and not _restore_thermostat(dynamics, *thermo):
        log("cannot restore the thermostat state with this ASE version; restarting the run")
        return _run_one(spec, reference, protocol, run_dir, checkpoint_every, True, quiet, work_dir, cpu_budget_s)
    dynamics.nsteps = steps_done

    def save_state() -> None:
        extra = _thermostat_state(dynamics) or {}
        savez_atomic(state_path, fingerprint=np.array(fingerprint_key), positions=atoms.get_positions(),
                      momenta=atoms.get_momenta(), frames=np.asarray(frames, dtype=np.float32),
                      temperatures=np.asarray(temperatures), steps_done=np.array(steps_done),
                      md_wall_s=np.array(md_wall_s), md_cpu_s=np.array(md_cpu_s), **extra)

    collapsed_at: int | None = None
    reason = None
    deviation_history = list(max_bond_deviation(np.asarray(frames), reference.bonds, reference.bond_reference))
    if deviation_history and max(deviation_history) > protocol.collapse_threshold_A:  # resumed after collapse
        collapsed_at = int(np.flatnonzero(np.asarray(deviation_history) > protocol.collapse_threshold_A)[0])
        reason = f"bond deviation > {protocol.collapse_threshold_A} A"
    log(f"{resume_note}; {protocol.n_steps} steps ({protocol.time_ps:g} ps), {len(reference.numbers)} atoms, "
        f"{len(reference.bonds)} bonds, model: {spec.description}")
    last_report = time.perf_counter()
    stopped_by = None
    while collapsed_at is None and steps_done < protocol.n_steps:
        if cpu_budget_s is not None and md_cpu_s >= cpu_budget_s:
            stopped_by = "cpu budget"
            break
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            dynamics.run(protocol.save_every)
            failure = None
        except (FloatingPointError, ValueError, RuntimeError) as error:  # NonFiniteError is a FloatingPointError
            failure = f"{type(error).__name__}: {str(error)[:200]}"
        md_wall_s += time.perf_counter() - start
        md_cpu_s += time.process_time() - cpu_start
        if failure is not None:
            steps_done = int(dynamics.nsteps)
            positions = np.full_like(frames[0], np.nan)
        else:
            steps_done += protocol.save_every
            positions = atoms.get_positions()
        frames.append(np.asarray(positions, dtype=np.float32))
        temperature = float(atoms.get_temperature()) if failure is None else float("nan")
        temperatures.append(temperature)
        deviation = float(max_bond_deviation(positions, reference.bonds, reference.bond_reference))
        if failure is not None or not np.isfinite(positions).all():
            collapsed_at, reason = len(frames) - 1, failure or "non-finite positions"
        elif deviation > protocol.collapse_threshold_A:
            collapsed_at = len(frames) - 1
            reason = f"bond deviation {deviation:.2f} A > {protocol.collapse_threshold_A} A"
        elif not MIN_TEMPERATURE_K <= temperature <= MAX_TEMPERATURE_K:
            collapsed_at, reason = len(frames) - 1, f"temperature {temperature:.3g} K out of range"
        if (len(frames) - 1) % checkpoint_every == 0 or collapsed_at is not None:
            save_state()
        if time.perf_counter() - last_report > 60 or collapsed_at is not None:
            last_report = time.perf_counter()
            log(f"{steps_done * protocol.timestep_fs / 1000:.2f} ps, {steps_done / max(md_wall_s, 1e-9):.1f} steps/s, "
                f"T {temperature:.0f} K, max bond dev {deviation:.3f} A"
                + (f"; COLLAPSED: {reason}" if collapsed_at is not None else ""))
    save_state()

    frames_arr = np.asarray(frames, dtype=np.float32)
    analysed = frames_arr[: collapsed_at + 1] if collapsed_at is not None else frames_arr
    hr = distance_histogram(analysed, protocol.hr_bins, protocol.hr_r_max_A)
    if collapsed_at is not None:
        stability_ps = min(collapsed_at * protocol.save_interval_ps, steps_done * protocol.timestep_fs / 1000.0)
    else:
        stability_ps = steps_done * protocol.timestep_fs / 1000.0
    steps_per_s = steps_done / md_wall_s if md_wall_s > 0 else float("nan")
    savez_atomic(work_dir / "trajectory.npz", positions=frames_arr, numbers=reference.numbers,
                  time_ps=np.arange(len(frames_arr)) * protocol.save_interval_ps,
                  temperature_K=np.asarray(temperatures))
    finite_t = np.asarray([t for t in temperatures[1:] if np.isfinite(t)])
    finite_dev = [d for d in max_bond_deviation(analysed, reference.bonds, reference.bond_reference) if np.isfinite(d)]
    result = {
        "molecule": reference.molecule,
        "model": spec.name,
        "model_kind": spec.kind,
        "model_description": spec.description,
        "model_path": repo_relative(spec.path),
        "n_atoms": int(len(reference.numbers)),
        "n_bonds": int(len(reference.bonds)),
        "start_frame": f"{reference.source}[{protocol.start_frame}]",
        "steps": int(steps_done),
        "simulated_ps": steps_done * protocol.timestep_fs / 1000.0,
        "stability_ps": float(stability_ps),
        "collapsed": collapsed_at is not None,
        "collapse_frame": collapsed_at,
        "collapse_reason": reason,
        "collapse_bonds": _collapse_bonds_of(frames_arr[collapsed_at], reference, protocol)
        if collapsed_at is not None else None,
        "max_bond_deviation_A": float(max(finite_dev)) if finite_dev else None,
        "hr_frames": int(len(analysed)),
        "hr_mae": hr_mae(hr, reference.hr),
        "hr_mae_mdsim": hr_mae(hr, reference.hr) * protocol.hr_bins,
        "mean_temperature_K": float(finite_t.mean()) if len(finite_t) else None,
        "steps_per_s": steps_per_s,
        "ns_per_day": steps_per_s * protocol.timestep_fs * 1e-6 * 86400.0,
        "md_wall_s": md_wall_s,
        "md_cpu_s": md_cpu_s,
        "compiled": bool(getattr(getattr(calculator, "engine", None), "compiled", False)),
        "stopped_by": stopped_by or ("collapse" if collapsed_at is not None else "time"),
        "cpu_budget_s": cpu_budget_s,
        "resume": resume_note,
        "fingerprint": fingerprint_key,
        "protocol_key": protocol_key(protocol),
        "run_dir": str(run_dir),
        "hr": hr.tolist(),
    }
    write_json_atomic(result_path, result)
    log(f"done: stability {stability_ps:.2f} ps ({'collapsed' if collapsed_at is not None else 'stable'}), "
        f"h(r) MAE {result['hr_mae']:.2e}, {steps_per_s:.1f} steps/s, {result['ns_per_day']:.3f} ns/day")
    return result


def _collapse_bonds_of(positions: np.ndarray, reference: Reference, protocol: Protocol) -> Dict[str, Any] | None:
    """:func:`forcefield_et.bonds.bond_changes` at a collapse frame; None when its positions are not finite."""
    if not np.isfinite(positions).all():
        return None
    return bond_changes(reference.numbers, positions, reference.bonds, reference.bond_reference,
                        protocol.collapse_threshold_A, reference.frames)


def add_missing_collapse_bonds(run: Dict[str, Any], reference: Reference, protocol: Protocol,
                               work: Path | None = None) -> None:
    """Give a collapsed run's result from before the ``collapse_bonds`` field that field, from its
    saved trajectory (in the work folder root ``work``), in ``run`` and in its result.json. Without
    the trajectory the result stays as it is."""
    if not run["collapsed"] or "collapse_bonds" in run:
        return
    run_dir = Path(run["run_dir"])
    trajectory_path = _run_work_dir(run_dir, work) / "trajectory.npz"
    if not trajectory_path.is_file():
        return
    with np.load(trajectory_path) as trajectory:
        positions = trajectory["positions"][run["collapse_frame"]]
    run["collapse_bonds"] = _collapse_bonds_of(positions, reference, protocol)
    stored = json.loads((run_dir / "result.json").read_text())
    write_json_atomic(run_dir / "result.json", {**stored, "collapse_bonds": run["collapse_bonds"]})


def _set_aside(work_dir: Path, fingerprint: str, names: Sequence[str]) -> Path:
    """Move the files ``names`` of an older run (another protocol or model file) out of the way, into
    ``work_dir/superseded/<its fingerprint, 12 characters>/``, instead of deleting them."""
    folder = work_dir / "superseded" / fingerprint[:12]
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (work_dir / name).is_file():
            (work_dir / name).replace(folder / name)
    return folder


def read_superseded(run_dir: Path) -> List[Dict[str, Any]]:
    """The results of the earlier runs that this run replaced (``superseded.json``), oldest first."""
    path = Path(run_dir) / "superseded.json"
    return json.loads(path.read_text()) if path.is_file() else []


SUMMARY_LEAVES_OUT = ("fingerprint", "protocol_key", "hr")


def summary_entry(run: Dict[str, Any]) -> Dict[str, Any]:
    """A run as the summary lists it: without its fingerprints and h(r) histogram (in its
    result.json), with the results of the runs it replaced under ``superseded``."""
    entry = {k: v for k, v in run.items() if k not in SUMMARY_LEAVES_OUT}
    superseded = read_superseded(Path(run["run_dir"]))
    if superseded:
        entry["superseded"] = [{k: v for k, v in r.items() if k not in SUMMARY_LEAVES_OUT} for r in superseded]
    return entry


def run_hr(run: Dict[str, Any]) -> np.ndarray | None:
    """A run's h(r) histogram: from its result (``hr``), else from ``hr.npy`` in its result folder
    (results written before the histogram moved into result.json), else None."""
    if run.get("hr") is not None:
        return np.asarray(run["hr"], dtype=np.float64)
    path = Path(run["run_dir"]) / "hr.npy"
    return np.load(path) if path.is_file() else None


def stability_text(run: Dict[str, Any]) -> str:
    """'<stable ps> of <simulated ps>', with '(collapsed)' when the run collapsed and, for a run
    whose extension to a longer time has not finished, how far the extension got without a collapse
    (the other columns describe the finished shorter run)."""
    text = f"{run['stability_ps']:.2f} of {run['simulated_ps']:.2f}"
    if run["collapsed"]:
        bonds = bond_changes_text(run.get("collapse_bonds"))
        text += f" (collapsed: {bonds})" if bonds else " (collapsed)"
    if run.get("extension_reached_ps") is not None:
        text += (f" (continued to {run['extension_reached_ps']:.2f} ps without collapse; "
                 f"other columns over the first {run['simulated_ps']:.2f} ps)")
    return text


def table(runs: Sequence[Dict[str, Any]]) -> str:
    """Markdown table of the runs: stability, h(r) MAE (ours and MDsim's scale), temperature, speed."""
    lines = [
        "| molecule | model | stable for (ps) | h(r) MAE (×1e-4) | h(r) MAE, MDsim scale | mean T (K) "
        "| steps/s | ns/day |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(runs, key=lambda r: (r["molecule"], r["model"])):
        stable = stability_text(r)
        temperature = f"{r['mean_temperature_K']:.0f}" if r.get("mean_temperature_K") is not None else "–"
        lines.append(
            f"| {r['molecule']} | {r['model']} | {stable} | {r['hr_mae'] * 1e4:.2f} | {r['hr_mae_mdsim']:.3f} "
            f"| {temperature} | {r['steps_per_s']:.1f} | {r['ns_per_day']:.2f} |"
        )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grouped_bars(runs: List[Dict[str, Any]], molecules: Sequence[str], models: Sequence[str], key: str,
                  ylabel: str, title: str, path: Path, hline: float | None = None, log: bool = False) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(molecules) + 2), 4.2))
    width = 0.8 / max(1, len(models))
    lookup = {(r["molecule"], r["model"]): r for r in runs}
    for k, model in enumerate(models):
        xs, ys, stable = [], [], []
        for m, molecule in enumerate(molecules):
            run = lookup.get((molecule, model))
            if run is None or run.get(key) is None or not np.isfinite(run[key]):
                continue
            xs.append(m + (k - (len(models) - 1) / 2) * width)
            ys.append(run[key])
            stable.append(not run.get("collapsed", False))
        bars = ax.bar(xs, ys, width=width * 0.95, label=model, color=f"C{k}")
        if key == "stability_ps":
            for bar, ok in zip(bars, stable):
                if ok:
                    bar.set_hatch("//")
    if hline is not None:
        ax.axhline(hline, color="k", lw=0.8, ls="--")
    ax.set_xticks(range(len(molecules)), molecules)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _hr_plot(molecule: str, reference_hr: np.ndarray, curves: Dict[str, np.ndarray], protocol: Protocol,
             path: Path, colours: Dict[str, str]) -> Path:
    plt = _plt()
    edges = hr_edges(protocol.hr_bins, protocol.hr_r_max_A)
    centres = 0.5 * (edges[1:] + edges[:-1])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(centres, reference_hr, "k--", lw=1.5, label="rMD17 reference (test split)")
    for model, hr in curves.items():
        ax.plot(centres, hr, lw=1.0, color=colours.get(model), label=model)
    ax.set_xlabel("r (Å)")
    ax.set_ylabel("h(r) (fraction of pairs per 0.02 Å bin)")
    ax.set_title(f"{molecule}: interatomic distance histogram, 500 K NVT", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------- driver
def parse_model_paths(items: Sequence[str]) -> Dict[str, Path]:
    extra: Dict[str, Path] = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--model-path expects NAME=PATH, got {item!r}")
        name, path = item.split("=", 1)
        extra[name.strip()] = Path(path).expanduser()
    return extra


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.md_stability", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="aspirin + ethanol, 2 ps (CI)")
    mode.add_argument("--full", action="store_true", help="4 molecules, 300 ps (the default)")
    mode.add_argument("--report", action="store_true",
                      help="run nothing: rebuild the summary and plots from the runs in --out (finished runs, "
                           "and how far running or stopped extensions have got)")
    parser.add_argument("--molecules", nargs="+", choices=MOLECULES)
    parser.add_argument("--models", nargs="+", help=f"model names (default: {' '.join(DEFAULT_MODELS)} + --model-path)")
    parser.add_argument("--model-path", action="append", default=[], metavar="NAME=PATH",
                        help="extra model: an ETCalculator checkpoint or a .nequip.pth file; '{molecule}' in PATH "
                             "is replaced by the molecule name (repeatable)")
    parser.add_argument("--out", help="output folder (default benchmarks/results/md_stability, "
                                      "or benchmarks/results/md_stability_quick with --quick)")
    parser.add_argument("--work", help="folder for the resumable states and trajectories (default runs/md_stability, "
                                       "runs/md_stability_quick with --quick; <out>/work for an --out outside "
                                       "benchmarks/results)")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT,
                        help="the shared data folder; its rmd17/ gives the start frames and the reference h(r)")
    parser.add_argument("--time-ps", type=float, help="simulated time per run (default 300, --quick 2)")
    parser.add_argument("--temperature", type=float, default=500.0, help="K")
    parser.add_argument("--timestep", type=float, default=0.5, help="fs")
    parser.add_argument("--save-every", type=int, default=100, help="steps between saved frames")
    parser.add_argument("--tdamp", type=float, default=10.0, help="Nose-Hoover damping time (fs)")
    parser.add_argument("--start-frame", type=int, default=0, help="index in the rMD17 test split")
    parser.add_argument("--seed", type=int, default=0, help="velocity seed")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="ET model precision")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--no-compile", action="store_true",
                        help="ET models in eager mode (default: energy and forces compiled into one graph for runs "
                        "long enough to repay it, forcefield_et.runtime.compile_pays_off)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--checkpoint-every", type=int, default=50, help="saved frames between state checkpoints")
    parser.add_argument("--restart", action="store_true", help="discard earlier results/state of the selected runs")
    parser.add_argument("--quiet", action="store_true")
    return parser


def main(argv: List[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    torch.set_num_threads(max(1, args.threads))
    extra = parse_model_paths(args.model_path)
    molecules = [] if args.report else list(args.molecules or (QUICK_MOLECULES if args.quick else MOLECULES))
    models = list(args.models or (list(DEFAULT_MODELS) + [n for n in extra if n not in DEFAULT_MODELS]))
    default_out = "benchmarks/results/md_stability_quick" if args.quick else "benchmarks/results/md_stability"
    out = Path(args.out or default_out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else default_work_dir(out)
    time_ps = args.time_ps if args.time_ps is not None else (2.0 if args.quick else 300.0)
    protocol = Protocol(
        temperature_K=args.temperature, timestep_fs=args.timestep,
        time_ps=time_ps,
        save_every=args.save_every, tdamp_fs=args.tdamp, start_frame=args.start_frame, seed=args.seed,
        dtype=args.dtype, threads=max(1, args.threads), device=args.device,
        compile=not args.no_compile and compile_pays_off(int(round(time_ps * 1000.0 / args.timestep))),
    )
    if args.report:
        print(f"MD stability benchmark: summary of the runs in {out}/runs (nothing is run)", flush=True)
    else:
        print(f"MD stability benchmark: {', '.join(molecules)} x {', '.join(models)}; {protocol.time_ps:g} ps "
              f"({protocol.n_steps} steps) per run -> {out}/", flush=True)

    runs: List[Dict[str, Any]] = []
    skipped: List[Dict[str, str]] = []
    references: Dict[str, Reference] = {}
    started = time.perf_counter()
    for molecule in molecules:
        try:
            references[molecule] = load_reference(molecule, protocol, args.data_root)
        except (FileNotFoundError, ValueError) as error:
            for model in models:
                skipped.append({"molecule": molecule, "model": model, "reason": str(error)})
            print(f"{molecule}: skipped: {error}", flush=True)
            continue
        for model in models:
            spec = resolve_model(model, molecule, extra, device=args.device)
            if spec.skip_reason:
                skipped.append({"molecule": molecule, "model": model, "reason": spec.skip_reason})
                print(f"{molecule}/{model}: skipped: {spec.skip_reason}", flush=True)
                continue
            try:
                runs.append(run_one(spec, references[molecule], protocol, out / "runs" / f"{molecule}__{model}",
                                    checkpoint_every=max(1, args.checkpoint_every), restart=args.restart,
                                    quiet=args.quiet, work_dir=work / f"{molecule}__{model}"))
            except DirectoryBusyError as error:  # another invocation (on another core) runs it
                print(f"{molecule}/{model}: skipped: {error}", flush=True)
            except Exception as error:  # one broken model must not stop the others
                reason = f"run failed: {type(error).__name__}: {error}"
                skipped.append({"molecule": molecule, "model": model, "reason": reason})
                print(f"{molecule}/{model}: {reason}", flush=True)

    from .machine import machine_info

    runs += collect_previous_runs(out, protocol, runs, work)
    all_molecules = [m for m in MOLECULES if any(r["molecule"] == m for r in runs)]
    all_models = list(dict.fromkeys(list(models) + [r["model"] for r in runs]))
    for molecule in all_molecules:
        if molecule not in references:
            references[molecule] = load_reference(molecule, protocol, args.data_root)
    for run in runs:
        add_missing_collapse_bonds(run, references[run["molecule"]], protocol, work)
    plot_models = [m for m in all_models if any(r["model"] == m for r in runs)]
    plot_molecules = all_molecules
    colours = {model: f"C{k}" for k, model in enumerate(plot_models)}  # the bar charts' colours too
    figures = {}
    if runs:
        # the dashed line marks the requested length, unless the summary holds runs of other lengths
        lengths = {round(r["simulated_ps"], 6) for r in runs if not r["collapsed"]}
        figures["stability"] = str(_grouped_bars(
            runs, plot_molecules, plot_models, "stability_ps", "stability (ps)",
            f"Time to collapse (bond deviation > {protocol.collapse_threshold_A} Å), 500 K NVT; hatched: no collapse",
            out / "stability.png", hline=protocol.time_ps if lengths <= {round(protocol.time_ps, 6)} else None))
        figures["speed"] = str(_grouped_bars(
            runs, plot_molecules, plot_models, "steps_per_s", "MD steps / s",
            f"MD speed ({protocol.device}, {protocol.threads} thread(s), {protocol.dtype} ET)", out / "speed.png"))
        for molecule in plot_molecules:
            # in plot_models order, so that each model has the same colour in every figure
            histograms = {r["model"]: run_hr(r) for r in runs if r["molecule"] == molecule}
            curves = {model: histograms[model] for model in plot_models if histograms.get(model) is not None}
            if curves:
                figures[f"hr_{molecule}"] = str(_hr_plot(molecule, references[molecule].hr, curves, protocol,
                                                         out / f"hr_{molecule}.png", colours))
    summary = {
        "benchmark": "md_stability",
        "description": "MDsim protocol (Fu et al. 2022, arXiv:2210.07237): Nose-Hoover NVT from an rMD17 test "
                       "frame; stability = time to the first saved frame with a bond deviating > 0.5 A; h(r) MAE "
                       "against the rMD17 test-split frames; speed in steps/s and ns/day.",
        "mode": "quick" if args.quick else "report" if args.report else "full",
        "machine": machine_info(),
        "protocol": protocol.to_dict(),
        "molecules": plot_molecules,
        "models": plot_models,
        "runs": [summary_entry(r) for r in runs],
        "skipped": skipped,
        "figures": figures,
        # the MD of every run, over all the sessions it took (a rerun that only reports adds nothing)
        "wall_time_s": float(sum(r.get("md_wall_s", 0.0) for r in runs)),
        "invocation_wall_s": time.perf_counter() - started,
        "data": "revised MD17 (Christensen & von Lilienfeld 2020), split 01, CC0",
    }
    # a summary of the same runs (a report-only rerun, perhaps on another machine, listing them in
    # another order) leaves the file alone
    if not holds_same_content(out / "md_stability.json", summary, ("machine", "invocation_wall_s", "mode"),
                              unordered=("runs",)):
        write_json_atomic(out / "md_stability.json", summary)
    write_text_atomic(out / "md_stability.md", table(runs))
    print(f"wrote {out / 'md_stability.json'} ({len(runs)} runs, {len(skipped)} skipped) and "
          f"{len(figures)} figures", flush=True)
    for r in runs:
        print(f"  {r['molecule']:<12} {r['model']:<24} stability {r['stability_ps']:8.2f} ps "
              f"{'(collapsed)' if r['collapsed'] else '(stable)   '} h(r) MAE {r['hr_mae']:.2e}  "
              f"{r['steps_per_s']:7.1f} steps/s  {r['ns_per_day']:.3f} ns/day", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "Protocol", "collapse_frame", "default_work_dir", "distance_histogram", "hr_mae", "load_reference", "resolve_model",
    "run_one", "table",
]

"""The trainer: AdamW, warm-up + cosine/plateau schedule (``torch.optim.lr_scheduler``), EMA
(``torch.optim.swa_utils.AveragedModel``), clipping, validation, atomic checkpoints with exact
resume, and data parallelism through ``torchrun``.

Run directory layout::

    run_dir/last.pt        resumable state (model, EMA, optimiser, schedule, step), atomic
    run_dir/best.pt        EMA weights with the best validation loss (an inference checkpoint)
    run_dir/metrics.csv    one row per log/validation event
    run_dir/config.yaml    the configuration used

Determinism: batch composition and denoising noise are pure functions of (seed, step), so a
run killed at any point and resumed from ``last.pt`` reproduces the uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import Tensor
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from ..checkpoint import read_checkpoint, save_checkpoint
from ..data.conformations import ConformationSet
from ..data.sources import read_source
from ..data.splits import split_by_molecule_id
from ..domain import merge_domains, training_domain
from ..dtypes import resolve_dtype
from ..files import DirectoryLock, write_text_atomic
from ..inference import Evaluator
from ..model import DEFAULT_ELEMENTS, build_model
from ..registry import load_model
from ..runtime import apply_threads, available_cpus, resolve_device
from .batching import (
    MixedBatchSampler,
    Source,
    TensorConformations,
    batch_shares,
    build_batch,
)
from .config import UNLIMITED_STEPS, OptimConfig, TrainConfig
from .curves import write_learning_curve
from .objectives import TERM_NAMES, compute_loss, count_terms, prepare_equilibrium

METRIC_FIELDS = ["step", "kind", "lr", "loss", "time_s", "conf_per_s", "cpu_hours"]
EXISTING_RUN_POLICIES = ("resume", "require", "refuse", "overwrite")
# a cosine over a time budget ends its decay at this share of the steps the budget is measured to hold
BUDGET_COSINE_MARGIN = 0.95
RUN_FILES = ("last.pt", "best.pt", "metrics.csv", "learning_curve.csv", "learning_curve.png", "config.yaml")
# optimiser settings that may change when a run is resumed (how long and how it runs, not what it learns)
RESUMABLE_SETTINGS = (
    "max_steps", "warmup_steps", "time_budget_s", "early_stop_patience", "threads", "device", "compile",
    "log_every", "checkpoint_every", "valid_every", "select_by", "snapshot_steps",
)

LATER_SOURCE_DEFAULTS = {"drop_invalid_frames": False, "drop_outliers": None}
LATER_OBJECTIVE_DEFAULTS = {"stress_weight": 1.0}
LATER_OPTIM_DEFAULTS = {"encoder_lr_scale": 1.0}
SOURCE_PATH_KEYS = ("path", "valid_path", "test_path")


def _same_file_spelling(value: Any) -> Any:
    """An absolute path with ``..`` and repeated separators folded (``/a/b/../c`` -> ``/a/c``), so
    that one file named two ways gives one fingerprint; other values unchanged."""
    if isinstance(value, list):
        return [_same_file_spelling(v) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        return os.path.normpath(value)
    return value


def config_fingerprint(config: Dict[str, Any]) -> Dict[str, Any]:
    """The parts of a configuration (as ``TrainConfig.to_dict()``) that define what a run learns:
    everything but the run directory, the data root and :data:`RESUMABLE_SETTINGS`. A run resumes
    only under a configuration with the same fingerprint."""
    fingerprint = {k: v for k, v in config.items() if k not in ("run_dir", "data_root", "optim", "description")}
    # source and objective settings added after runs were stored: at their defaults they match a
    # configuration without them
    fingerprint["sources"] = [
        {k: _same_file_spelling(v) if k in SOURCE_PATH_KEYS else v for k, v in source.items()
         if not (k in LATER_SOURCE_DEFAULTS and v == LATER_SOURCE_DEFAULTS[k])}
        for source in config.get("sources", [])
    ]
    fingerprint["objectives"] = {k: v for k, v in config.get("objectives", {}).items()
                                 if not (k in LATER_OBJECTIVE_DEFAULTS and v == LATER_OBJECTIVE_DEFAULTS[k])}
    fingerprint["optim"] = {k: v for k, v in config.get("optim", {}).items()
                            if k not in RESUMABLE_SETTINGS and not (k in LATER_OPTIM_DEFAULTS
                                                                    and v == LATER_OPTIM_DEFAULTS[k])}
    return fingerprint


def parameter_groups(model: torch.nn.Module, lr: float, encoder_lr_scale: float) -> List[Dict[str, Any]]:
    """The optimiser's parameter groups: one group at ``lr`` when ``encoder_lr_scale`` is 1; otherwise
    the parameters outside every ``representation`` submodule at ``lr`` (group 0) and those inside at
    ``encoder_lr_scale * lr`` (group 1). Each group records its ``lr_scale``."""
    if encoder_lr_scale == 1.0:
        return [{"params": list(model.parameters()), "lr": lr, "lr_scale": 1.0}]
    head, encoder = [], []
    for name, parameter in model.named_parameters():
        inside = name.startswith("representation.") or ".representation." in name
        (encoder if inside else head).append(parameter)
    if not encoder:
        raise ValueError(f"optim.encoder_lr_scale = {encoder_lr_scale:g} needs a model with a representation "
                         f"(encoder) submodule; {type(model).__name__} has none")
    return [{"params": head, "lr": lr, "lr_scale": 1.0},
            {"params": encoder, "lr": lr * encoder_lr_scale, "lr_scale": encoder_lr_scale}]


def _differences(a: Any, b: Any, prefix: str = "") -> List[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: List[str] = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for index, (x, y) in enumerate(zip(a, b)):
            out += _differences(x, y, f"{prefix}{index}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def training_device(requested: str = "auto") -> torch.device:
    """The device of this training process: ``requested`` (auto, cpu, cuda, cuda:N) resolved;
    under ``torchrun`` on GPUs, ``auto`` and ``cuda`` mean ``cuda:LOCAL_RANK``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else None
    return resolve_device(requested, local_rank=local_rank)


def _distributed(device: torch.device | None = None) -> Tuple[int, int]:
    """(rank, world_size); initialises torch.distributed when launched by torchrun: NCCL when
    the workers train on GPUs, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if device is None:
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def fit_atomic_energies(data: ConformationSet, elements: List[int], residual: np.ndarray | None = None) -> np.ndarray:
    """Least-squares per-element reference energies E0 [n_elements] (eV) from frame energies
    (or from ``residual`` energies), minimum-norm when compositions are collinear."""
    index = {z: k for k, z in enumerate(elements)}
    counts = np.zeros((len(data), len(elements)))
    frame_of_atom = np.repeat(np.arange(len(data)), data.n_atoms)
    np.add.at(counts, (frame_of_atom, np.array([index[int(z)] for z in data.z])), 1.0)
    target = data.energy if residual is None else residual
    ok = np.isfinite(target)
    solution, *_ = np.linalg.lstsq(counts[ok], target[ok], rcond=None)
    return solution


def exponential_moving_average(decay: float) -> Callable[[List[torch.Tensor], List[torch.Tensor], torch.Tensor], None]:
    """``multi_avg_fn`` for :class:`~torch.optim.swa_utils.AveragedModel`: an EMA whose decay
    ramps up as ``min(decay, (1 + n) / (10 + n))``, n = ``n_averaged`` (the trainer starts it at 1,
    the initial weights, so n is the step number), so that the average follows the weights closely
    during the first steps."""

    def average(averaged: List[torch.Tensor], current: List[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = float(num_averaged)
        torch._foreach_lerp_(averaged, current, 1.0 - min(decay, (1.0 + n) / (10.0 + n)))

    return average


class Trainer:
    """Train a :class:`Potential` from a :class:`TrainConfig`. ``run()`` trains to
    ``optim.max_steps`` (resuming from ``run_dir/last.pt`` when it exists)."""

    def __init__(self, config: TrainConfig, progress: bool = True, existing: str = "resume") -> None:
        """``existing`` says what to do with a run already in ``config.run_dir``: 'resume' it (when
        there is one; its configuration must match, see :func:`config_fingerprint`), 'require' one to
        resume, 'refuse' to touch it, or 'overwrite' it (its checkpoints, logs and snapshots are
        deleted before the new run starts)."""
        if existing not in EXISTING_RUN_POLICIES:
            raise ValueError(f"existing must be one of {EXISTING_RUN_POLICIES}, got {existing!r}")
        self.existing = existing
        self.config = config
        self.device = training_device(config.optim.device)
        self.rank, self.world_size = _distributed(self.device)
        self.progress = progress and self.rank == 0
        self.dtype = resolve_dtype(config.dtype)
        self.run_dir = Path(config.run_dir)
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ValueError(f"run directory {self.run_dir} is a file")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._directory_lock = DirectoryLock(self.run_dir, "run directory")
        self._check_existing_run()
        self._load_sources()
        if self.device.type == "cpu":  # the rule for one worker's batch, on its share of the machine's cores
            mean_atoms = float(np.mean(np.concatenate([s.data.n_atoms for s in self.sources])))
            workers_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            apply_threads(
                int(round(config.optim.batch_size / self.world_size * mean_atoms)),
                requested=config.optim.threads or None,
                cpus=max(1, available_cpus() // max(1, workers_here)),
            )
        self._build_model()
        self._build_tensors()
        optim = config.optim
        self.optimizer = torch.optim.AdamW(
            parameter_groups(self.model, optim.lr, optim.encoder_lr_scale), lr=optim.lr,
            weight_decay=optim.weight_decay, fused=True,
        )
        # a cosine over a time budget: the step count it decays over, measured once (see _fit_budget_cosine)
        self.budget_cosine_steps: int | None = None
        self.budget_cosine_anchor: Tuple[int, float] | None = None
        self.budget_cosine_budget_s: float | None = None
        # warm-up, then cosine (or the constant rate that the plateau scheduler reduces)
        self.scheduler = LambdaLR(self.optimizer, self._schedule_factor())
        self.plateau: ReduceLROnPlateau | None = None
        if optim.schedule == "plateau":
            self.plateau = ReduceLROnPlateau(
                self.optimizer, mode="min", factor=optim.plateau_factor, patience=optim.plateau_patience,
                threshold=0.0, min_lr=[optim.min_lr * group["lr_scale"] for group in self.optimizer.param_groups],
            )
        self.averaged = AveragedModel(self.model, multi_avg_fn=exponential_moving_average(optim.ema_decay))
        self.averaged.n_averaged.fill_(1)  # the average starts at the initial weights
        self.averaged.eval()
        if optim.compile:
            self.model.compile_training()
        self.step = 0
        self.best_valid = math.inf
        self.cpu_seconds = 0.0  # CPU time used by training and validation, all workers, across resumes
        self.validations_since_best = 0
        self.stop_reason: str | None = None
        self.sampler = MixedBatchSampler(
            [len(s.data) for s in self.sources],
            batch_shares([s.ratio for s in self.sources], config.optim.batch_size),
            config.seed,
        )

    # ---------------------------------------------------------------- set-up
    def _lock(self) -> None:
        """Hold an exclusive lock on ``run_dir/.lock`` (:class:`~forcefield_et.files.DirectoryLock`)
        while :meth:`run` trains, so that a second process cannot write into the same run directory
        (released at the end, or when the process dies)."""
        self._directory_lock.acquire()

    def release(self) -> None:
        """Release the run directory's lock (done automatically when the process ends)."""
        self._directory_lock.release()

    def _remove_existing_run(self) -> None:
        """``existing='overwrite'``: delete the previous run's checkpoints, logs and snapshots."""
        for name in RUN_FILES:
            (self.run_dir / name).unlink(missing_ok=True)
        if (self.run_dir / "snapshots").is_dir():
            shutil.rmtree(self.run_dir / "snapshots")

    def _started(self) -> bool:
        """Whether ``run_dir`` holds a run that was started (killed before its first ``last.pt``, a
        resume starts it again from step 0, which the uninterrupted run would have passed through)."""
        return (self.run_dir / ".lock").exists() or any((self.run_dir / name).exists() for name in RUN_FILES)

    def _remove_stale_temporaries(self) -> None:
        """Delete the temporary files of writes that a killed run left unfinished (``run_dir``'s lock
        is held, so no other process is writing them)."""
        for folder in (self.run_dir, self.run_dir / "snapshots"):
            for stale in [*folder.glob(".*.tmp"), *folder.glob("*.csv.tmp")]:
                stale.unlink(missing_ok=True)

    def _check_existing_run(self) -> None:
        """Validate ``existing`` against what the run directory holds (nothing is changed here)."""
        last = self.run_dir / "last.pt"
        holds_run = last.exists() or (self.run_dir / "best.pt").exists()
        if self.existing == "overwrite":
            return
        if self.existing == "refuse" and holds_run:
            where = "a finished or interrupted training run"
            if last.exists():
                state = read_checkpoint(last).get("training_state") or {}
                where = f"a training run (last.pt at step {state.get('step')})"
            raise ValueError(
                f"{self.run_dir} already holds {where}; pass --resume to continue it or --overwrite to replace it"
            )
        if self.existing == "require" and not last.exists() and not self._started():
            raise ValueError(f"nothing to resume: {last} does not exist")
        if last.exists():
            stored = (read_checkpoint(last).get("training_state") or {}).get("config")
            if stored is not None:
                changed = _differences(config_fingerprint(stored), config_fingerprint(self.config.to_dict()))
                if changed:
                    raise ValueError(
                        f"{self.run_dir} holds a run with another configuration (differs in: {', '.join(changed)}); "
                        "resume it with its own configuration, choose another run directory, or overwrite it"
                    )

    def _report(self, message: str) -> None:
        """A data-screening message (dropped frames, outliers), printed by the first worker."""
        if self.rank == 0:
            print(message, flush=True)

    def _load_sources(self) -> None:
        cfg = self.config
        split_seed = cfg.seed if cfg.split_seed is None else cfg.split_seed
        self.sources: List[Source] = []
        self.valid_sets: List[ConformationSet] = []
        for sc in cfg.sources:
            data = read_source(sc, cfg.data_root, report=self._report)
            if sc.valid_path:
                train, valid = data, read_source(
                    sc, cfg.data_root, path=sc.valid_path, validation=True, report=self._report
                )
            elif sc.valid_fraction > 0 and sc.split == "frame":
                train, valid = data.split_random(sc.valid_fraction, seed=split_seed)
            elif sc.valid_fraction > 0:
                train, valid = split_by_molecule_id(data, sc.valid_fraction, split_seed)
            else:
                train, valid = data, data.subset(np.arange(0))
            if len(valid) == 0 and (sc.valid_path or sc.valid_fraction > 0):
                where = f"{sc.valid_path} frames {sc.valid_frames}" if sc.valid_path else f"{sc.valid_fraction:g} of it"
                raise ValueError(
                    f"source {sc.name!r}: the validation set ({where}) is empty; give validation frames that exist "
                    "(with --n-train, leave frames after the first N) or a --valid file"
                )
            if len(valid) > sc.valid_max_frames:
                rng = np.random.default_rng(split_seed)
                valid = valid.subset(np.sort(rng.choice(len(valid), sc.valid_max_frames, replace=False)))
            self.sources.append(Source(sc.name, train, sc.objective, sc.weight, sc.ratio))
            self.valid_sets.append(valid)
        self.test_sets = [
            read_source(sc, cfg.data_root, path=sc.test_path, validation="test", report=self._report)
            if sc.test_path
            else None
            for sc in cfg.sources
        ]
        # elements and compositions of the training frames: models warn outside them (domain.py)
        self.training_domain = merge_domains([training_domain(s.data.z, s.data.n_atoms) for s in self.sources])
        self.source_weights = torch.tensor([s.weight for s in self.sources], dtype=torch.float64, device=self.device)

    def _build_model(self) -> None:
        cfg = self.config
        data_elements = sorted({int(z) for s in self.sources for z in np.unique(s.data.z)})
        if cfg.init_from:
            self.model = load_model(cfg.init_from, device=self.device, dtype=self.dtype)
            overrides = set(cfg.model) - {"zbl"}
            if overrides:
                raise ValueError(
                    f"with init_from, the model's architecture comes from {cfg.init_from!r}; only 'zbl' can be set "
                    f"in 'model', not {sorted(overrides)}"
                )
            if "zbl" in cfg.model:
                self.model.set_zbl(cfg.model["zbl"])
            missing = sorted(set(data_elements) - set(self.model.elements))
            if missing:
                raise ValueError(f"init_from model {cfg.init_from!r} does not support elements {missing} in the data")
            self.parent = getattr(self.model, "metadata", {})
            self._fit_reference_energies(from_model=True)
        else:
            hyper = dict(cfg.model)
            hyper["elements"] = sorted(set(hyper.get("elements", DEFAULT_ELEMENTS)) | set(data_elements))
            torch.manual_seed(cfg.seed)
            self.model = build_model(**hyper).to(self.dtype).to(self.device)
            self.parent = None
            self._init_statistics()
        self.model.train()

    def _build_tensors(self) -> None:
        """The sources' training, validation and test frames as tensors in the model's dtype, with the
        cells of frames periodic in fewer than three directions completed for the model's cutoff.
        Where some sources are periodic and others are not (periodic frames with molecular replay
        frames, say), the molecules get completed cells too, so that both share a batch."""
        cutoff = float(self.model.cutoff)
        periodic = any(s.data.cell is not None for s in self.sources)

        def tensors(data: ConformationSet) -> TensorConformations:
            return TensorConformations(data, self.dtype, cutoff, periodic=periodic)

        self.tensors = [tensors(s.data) for s in self.sources]
        self.valid_tensors = [tensors(v) if len(v) else None for v in self.valid_sets]
        self.test_tensors = [None if t is None else tensors(t) for t in self.test_sets]

    def _init_statistics(self) -> None:
        """Scale the energy head by the RMS reference force, and fit E0 for energy sources."""
        force_sets = [s.data for s in self.sources if s.data.forces is not None and s.objective != "equilibrium"]
        if force_sets:
            forces = np.concatenate([d.forces[:200_000] for d in force_sets])
            forces = forces[np.isfinite(forces).all(1)]
            rms = float(np.sqrt(np.mean(forces**2))) if len(forces) else 1.0
            self.model.head.scale.fill_(max(rms, 1e-3))
        self._fit_reference_energies(from_model=False)

    @torch.no_grad()
    def _fit_reference_energies(self, from_model: bool) -> None:
        energy_sources = [s for s in self.sources if s.objective in ("energy_forces", "energy")]
        if not energy_sources:
            return
        data = ConformationSet.concatenate([s.data for s in energy_sources])
        residual = None
        if from_model:
            residual = data.energy - self._predict_energies(data)
        solution = fit_atomic_energies(data, self.model.elements, residual)
        head = self.model.head
        head.atomic_energies.add_(
            torch.as_tensor(solution, dtype=head.atomic_energies.dtype, device=head.atomic_energies.device)
        )

    def _predict_energies(self, data: ConformationSet) -> np.ndarray:
        """The model's energies [F] (eV) of ``data``, in batches of at most ``optim.batch_size`` frames
        that fit in the available memory (through the inference engine's batch path)."""
        self.model.eval()
        try:
            prediction = Evaluator.wrap(self.model).predict(data, self.config.optim.batch_size, keys=("energy",))
        finally:
            self.model.train()
        return prediction["energy"]

    def _to_device(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The batch's tensors on the training device (batches are built, and their denoising
        noise drawn, on the CPU, so that they do not depend on the device)."""
        if self.device.type == "cpu":
            return batch
        return {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}

    # ---------------------------------------------------------------- schedule, EMA
    def _schedule_factor(self) -> Callable[[int], float]:
        """The LambdaLR factor of step s: linear warm-up over ``warmup_steps``, then a cosine from
        ``lr`` to ``min_lr`` at ``max_steps`` (read at each step, so that a resumed run may change
        it), or 1 for the plateau schedule."""

        def factor(step: int) -> float:
            o = self.config.optim
            if step < o.warmup_steps:
                return (step + 1) / o.warmup_steps
            if o.schedule != "cosine":
                return 1.0
            total = self.cosine_steps()
            if total is None:  # a cosine over a time budget before its step count is measured
                return 1.0
            progress = min(1.0, (step - o.warmup_steps) / max(1, total - o.warmup_steps))
            return (o.min_lr + 0.5 * (o.lr - o.min_lr) * (1 + math.cos(math.pi * progress))) / o.lr

        return factor

    def budget_cosine(self) -> bool:
        """Whether the cosine decays over the time budget: schedule cosine, a time budget, and no step count."""
        o = self.config.optim
        return o.schedule == "cosine" and o.time_budget_s is not None and o.max_steps >= UNLIMITED_STEPS

    def cosine_steps(self) -> int | None:
        """The step count the cosine decays over: ``max_steps``, or for a cosine over a time budget the
        steps that fit in it (None until measured)."""
        return self.budget_cosine_steps if self.budget_cosine() else self.config.optim.max_steps

    def _fit_budget_cosine(self) -> str | None:
        """At the validations after warm-up, for a cosine over a time budget: the first marks the start
        of a measurement, the second fixes the step count that fits in the budget from the CPU time per
        step in between (validation included), with a margin of ``BUDGET_COSINE_MARGIN``. The count is
        saved with the run, so the schedule does not depend on the machine's speed after that. Returns
        a message when it fixes the count."""
        optim = self.config.optim
        if not self.budget_cosine() or self.budget_cosine_steps is not None or self.step < optim.warmup_steps:
            return None
        if self.budget_cosine_anchor is None:
            self.budget_cosine_anchor = (self.step, self.cpu_seconds)
            return None
        start_step, start_cpu = self.budget_cosine_anchor
        if self.step <= start_step:
            return None
        per_step = max(self.cpu_seconds - start_cpu, 1e-9) / (self.step - start_step)
        remaining = max(0.0, float(optim.time_budget_s) - self.cpu_seconds)
        steps = torch.tensor([self.step + int(BUDGET_COSINE_MARGIN * remaining / per_step)], dtype=torch.int64)
        if self.world_size > 1:  # every worker takes rank 0's count
            steps = steps.to(self.device)
            dist.broadcast(steps, 0)
        self.budget_cosine_steps = int(steps.item())
        self.budget_cosine_budget_s = float(optim.time_budget_s)
        return (f"cosine over the time budget: decays to the minimum learning rate at step "
                f"{self.budget_cosine_steps} ({per_step:.3g} CPU-s per step measured)")

    def learning_rate(self, step: int) -> float:
        """The learning rate of step ``step`` under the warm-up and cosine schedule (for the plateau
        schedule after warm-up: the present, possibly reduced, rate)."""
        if self.plateau is not None and step >= self.config.optim.warmup_steps:
            return float(self.optimizer.param_groups[0]["lr"])
        return self.config.optim.lr * self._schedule_factor()(step)

    @property
    def ema(self) -> List[torch.Tensor]:
        """The EMA weights, in the order of ``model.parameters()``."""
        return list(self.averaged.module.parameters())

    @property
    def ema_model(self) -> torch.nn.Module:
        """The :class:`Potential` that holds the EMA weights (eval mode): validation, best.pt and
        snapshots use it."""
        return self.averaged.module

    # ---------------------------------------------------------------- state
    def _training_state(self) -> Dict[str, Any]:
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "ema": [t.detach() for t in self.ema],
            "ema_updates": int(self.averaged.n_averaged),
            "scheduler": self.scheduler.state_dict(),
            "plateau_scheduler": self.plateau.state_dict() if self.plateau is not None else None,
            "budget_cosine": {"steps": self.budget_cosine_steps, "anchor": self.budget_cosine_anchor,
                              "budget_s": self.budget_cosine_budget_s},
            "best_valid": self.best_valid,
            "select_by": self.config.optim.select_by,
            "cpu_seconds": self.cpu_seconds,
            "validations_since_best": self.validations_since_best,
            "stop_reason": self.stop_reason,
            "config": self.config.to_dict(),
        }

    def _metadata(self, extra: Dict[str, Any] | None = None) -> Dict[str, Any]:
        meta: Dict[str, Any] = {
            "training": {
                "config": self.config.to_dict(),
                "step": self.step,
                "sources": [
                    {
                        "name": s.name,
                        "objective": s.objective,
                        "frames": len(s.data),
                        "weight": s.weight,
                        "ratio": s.ratio,
                    }
                    for s in self.sources
                ],
                "parent": (self.parent or {}).get("name") if self.parent else None,
            }
        }
        if self.parent:
            meta["parent_training"] = self.parent.get("training")
        meta["training_domain"] = self.training_domain
        meta.update(extra or {})
        return meta

    def save_last(self) -> None:
        if self.rank != 0:
            return
        save_checkpoint(self.run_dir / "last.pt", self.model, self._metadata(), self._training_state())

    def save_best(self, metrics: Dict[str, Any]) -> None:
        if self.rank != 0:
            return
        save_checkpoint(self.run_dir / "best.pt", self.ema_model, self._metadata({"validation": metrics}))

    def save_snapshot(self) -> None:
        """Keep the EMA weights of this step as ``snapshots/step_<N>.pt`` (an inference checkpoint)."""
        if self.rank != 0:
            return
        extra = {"snapshot": {"step": self.step, "conformations_seen": self.step * self.config.optim.batch_size}}
        save_checkpoint(self.run_dir / "snapshots" / f"step_{self.step}.pt", self.ema_model, self._metadata(extra))

    def resume(self) -> bool:
        """Restore from ``run_dir/last.pt`` if present. Returns whether it resumed."""
        path = self.run_dir / "last.pt"
        if not path.exists():
            self._truncate_metrics()  # a fresh start: drop rows a previous, unsaved run left behind
            return False
        payload = read_checkpoint(path)
        state = payload.get("training_state")
        if state is None:
            raise RuntimeError(f"{path} has no training state to resume from")
        self.model.load_state_dict(payload["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        with torch.no_grad():
            for e, saved in zip(self.ema, state["ema"], strict=True):
                e.copy_(saved)
            for b_avg, b_model in zip(self.ema_model.buffers(), self.model.buffers()):
                b_avg.copy_(b_model)
            self.averaged.n_averaged.fill_(int(state.get("ema_updates", self.step + 1)))
        self._restore_budget_cosine(state.get("budget_cosine") or {})
        self._restore_schedule(state)
        self.best_valid = float(state["best_valid"])
        self.cpu_seconds = float(state.get("cpu_seconds", 0.0))
        self.validations_since_best = int(state.get("validations_since_best", 0))
        self.stop_reason = state.get("stop_reason")
        if state.get("select_by", "valid_loss") != self.config.optim.select_by:
            # the stored bests are values of another metric: the next validation sets new ones
            self.best_valid = math.inf
            if self.plateau is not None:
                self.plateau.best = math.inf
        self._truncate_metrics()
        return True

    def _restore_budget_cosine(self, saved: Dict[str, Any]) -> None:
        """The measured step count of a cosine over a time budget; a resumed run with another budget
        scales it by the ratio of the budgets."""
        anchor = saved.get("anchor")
        self.budget_cosine_anchor = (int(anchor[0]), float(anchor[1])) if anchor is not None else None
        steps, budget_s = saved.get("steps"), saved.get("budget_s")
        self.budget_cosine_steps = int(steps) if steps is not None else None
        self.budget_cosine_budget_s = float(budget_s) if budget_s is not None else None
        now = self.config.optim.time_budget_s
        if self.budget_cosine_steps is not None and budget_s and now and now != budget_s:
            self.budget_cosine_steps = int(round(self.budget_cosine_steps * now / budget_s))
            self.budget_cosine_budget_s = float(now)

    def _restore_schedule(self, state: Dict[str, Any]) -> None:
        """Restore the schedulers from a training state (also from one written before the trainer
        used torch's schedulers, which stored the plateau state as [scale, bad, best])."""
        optim = self.config.optim
        if state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        else:
            self.scheduler.last_epoch = self.step
        legacy = state.get("plateau")
        if self.plateau is not None:
            if state.get("plateau_scheduler") is not None:
                self.plateau.load_state_dict(state["plateau_scheduler"])
            elif legacy is not None:
                scale, bad, best = legacy
                self.plateau.best, self.plateau.num_bad_epochs = float(best), int(bad)
                self.plateau.last_epoch = 0
        # the rate of the next step (the optimiser state holds the rate of the last one)
        if self.plateau is None or self.step < optim.warmup_steps:
            rate = optim.lr * self._schedule_factor()(self.step)
        elif legacy is not None and state.get("plateau_scheduler") is None:
            rate = max(optim.min_lr, optim.lr * float(legacy[0]))
        else:
            rate = float(self.optimizer.param_groups[0]["lr"])
        for group in self.optimizer.param_groups:
            group["lr"] = rate * group.get("lr_scale", 1.0)

    def _truncate_metrics(self) -> None:
        path = self.run_dir / "metrics.csv"
        if not path.exists():
            return
        with open(path) as handle:
            rows = list(csv.reader(handle))
        if not rows:
            return
        # a row cut short by a kill has fewer fields (its step may even parse): it is dropped
        kept = [rows[0]] + [r for r in rows[1:] if len(r) == len(rows[0]) and r[0].isdigit() and int(r[0]) <= self.step]
        buffer = io.StringIO()
        csv.writer(buffer).writerows(kept)
        write_text_atomic(path, buffer.getvalue())

    def _log(self, row: Dict[str, Any]) -> None:
        if self.rank != 0:
            return
        path = self.run_dir / "metrics.csv"
        fieldnames = METRIC_FIELDS + [k for k in sorted(row) if k not in METRIC_FIELDS]
        exists = path.exists()
        if exists:
            with open(path) as handle:
                header = next(csv.reader(handle), [])
            extra = [k for k in fieldnames if k not in header]
            if extra:  # rewrite with the widened header
                with open(path) as handle:
                    old = list(csv.DictReader(handle))
                header = header + extra
                buffer = io.StringIO()
                writer = csv.DictWriter(buffer, header)
                writer.writeheader()
                writer.writerows(old)
                write_text_atomic(path, buffer.getvalue())
            fieldnames = header
        with open(path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames, extrasaction="ignore")
            if not exists:
                writer.writeheader()
            writer.writerow(row)

    # ---------------------------------------------------------------- one step
    def _local_batch(self, step: int) -> Dict[str, torch.Tensor]:
        picks = self.sampler.frames(step)
        if self.world_size > 1:  # each worker takes every world_size-th frame of the global batch
            picks = [p[self.rank :: self.world_size] for p in picks]
        batch = build_batch(self.tensors, self.sources, picks)
        seed = int(np.random.SeedSequence([self.config.seed, step, self.rank]).generate_state(1, np.uint64)[0] >> 1)
        generator = torch.Generator().manual_seed(seed)
        prepare_equilibrium(batch, self.config.objectives, generator)
        return batch

    def train_step(self) -> Dict[str, float]:
        """One optimisation step on the global batch of ``self.step``."""
        batch = self._to_device(self._local_batch(self.step))
        counts = count_terms(batch, len(self.sources))
        if self.world_size > 1:
            dist.all_reduce(counts)
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.optimizer.zero_grad(set_to_none=False)
        output = self.model(batch["z"], batch["pos"], batch["batch"], batch.get("cell"))
        loss, parts = compute_loss(output, batch, self.source_weights, self.config.objectives, counts)
        loss.backward()
        if self.world_size > 1:
            # A parameter can get a gradient on some workers only (e.g. the energy head's last bias
            # when only one worker's frames have an energy term): every worker must all-reduce the
            # same tensors, so agree on the set first and use zeros where a local one is missing.
            params = list(self.model.parameters())
            present = torch.tensor([p.grad is not None for p in params], dtype=torch.int64, device=self.device)
            dist.all_reduce(present)
            grads = []
            for p, n_workers in zip(params, present.tolist()):
                if n_workers > 0:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    grads.append(p.grad)
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            offset = 0
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()
            loss_t = loss.detach().clone()
            dist.all_reduce(loss_t)
            loss = loss_t
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.clip_grad_norm))
        self.optimizer.step()
        self.step += 1
        if self.plateau is None or self.step <= self.config.optim.warmup_steps:
            self.scheduler.step()  # the rate of the next step
        self.averaged.update_parameters(self.model)
        return {
            "loss": float(loss.detach()),
            "lr": lr,
            "grad_norm": grad_norm,
            "frames": float(len(batch["n_atoms"])),
            **parts,
        }

    # ---------------------------------------------------------------- validation
    def validate(self) -> Dict[str, float]:
        """EMA-weight validation: per-source force MAE/RMSE (meV/Å), energy MAE (meV),
        equilibrium |F| (meV/Å), and ``valid_loss`` (the training objective on the
        validation frames, with fixed denoising noise), ``valid_loss_without_denoise`` and
        ``valid_force_mae_meV_A`` (the force MAE of all sources' validation frames together);
        ``optim.select_by`` names the one that selects ``best.pt``."""
        model = self.ema_model
        metrics: Dict[str, float] = {}
        total_loss, total_without_denoise = 0.0, 0.0
        all_abs_err, all_comp = 0.0, 0
        for s, (source, tensors) in enumerate(zip(self.sources, self.valid_tensors)):
            if tensors is None:
                continue
            abs_err, sq_err, n_comp, e_err, n_frames, eq_norm, n_eq = 0.0, 0.0, 0, 0.0, 0, 0.0, 0
            stress_err, n_stress = 0.0, 0
            loss_sum, denoise_sum = 0.0, 0.0
            generator = torch.Generator().manual_seed(12345 + s)
            bs = self.config.optim.batch_size
            for start in range(0, tensors.n_frames, bs):
                frames = torch.arange(start, min(start + bs, tensors.n_frames))
                picks = [np.zeros(0, dtype=np.int64)] * len(self.sources)
                picks[s] = frames.numpy()
                batch = build_batch(self.valid_tensors_or_train(s), self.sources, picks)
                prepare_equilibrium(batch, self.config.objectives, generator)
                batch = self._to_device(batch)
                counts = count_terms(batch, len(self.sources))
                with torch.enable_grad():
                    out = model(batch["z"], batch["pos"], batch["batch"], batch.get("cell"))
                loss, parts = compute_loss(out, batch, self.source_weights, self.config.objectives, counts)
                loss_sum += float(loss.detach()) * len(frames)
                denoise_sum += parts.get("denoise", 0.0) * len(frames)
                forces = out["forces"].detach()
                if source.objective == "equilibrium":
                    clean = ~batch["denoised"][batch["batch"]]
                    eq_norm += float(forces[clean].norm(dim=-1).sum())
                    n_eq += int(clean.sum())
                else:
                    diff = forces - batch["forces"]
                    ok = torch.isfinite(diff).all(-1)
                    abs_err += float(diff[ok].abs().sum())
                    sq_err += float(diff[ok].pow(2).sum())
                    n_comp += 3 * int(ok.sum())
                if source.objective in ("energy_forces", "energy"):
                    e_err += float((out["energy"].detach().double() - batch["energy"]).abs().sum())
                    n_frames += len(frames)
                err, count = stress_error_sum(out, batch)
                stress_err, n_stress = stress_err + err, n_stress + count
            name = source.name
            metrics[f"{name}/valid_loss"] = loss_sum / tensors.n_frames
            total_loss += loss_sum / tensors.n_frames
            total_without_denoise += (loss_sum - denoise_sum) / tensors.n_frames
            if n_comp:
                metrics[f"{name}/force_mae_meV_A"] = 1000 * abs_err / n_comp
                all_abs_err, all_comp = all_abs_err + abs_err, all_comp + n_comp
                metrics[f"{name}/force_rmse_meV_A"] = 1000 * math.sqrt(sq_err / n_comp)
            if n_frames:
                metrics[f"{name}/energy_mae_meV"] = 1000 * e_err / n_frames
            if n_stress:
                metrics[f"{name}/stress_mae_meV_A3"] = 1000 * stress_err / n_stress
            if n_eq:
                metrics[f"{name}/eq_force_norm_meV_A"] = 1000 * eq_norm / n_eq
        for source, tensors in zip(self.sources, self.test_tensors):
            if tensors is not None:
                metrics.update(
                    {f"{source.name}/test_{k}": v for k, v in self._errors(tensors, source.objective).items()}
                )
        metrics["valid_loss"] = total_loss
        metrics["valid_loss_without_denoise"] = total_without_denoise
        if all_comp:  # every validated force component of every source
            metrics["valid_force_mae_meV_A"] = 1000 * all_abs_err / all_comp
        return metrics

    def _errors(self, tensors: TensorConformations, objective: str) -> Dict[str, float]:
        """Force MAE (meV/Å) and, for energy objectives, energy MAE (meV) of the EMA weights on
        ``tensors``, in batches of ``optim.batch_size``."""
        abs_err, n_comp, e_err, stress_err, n_stress = 0.0, 0, 0.0, 0.0, 0
        bs = self.config.optim.batch_size
        evaluator = Evaluator.wrap(self.ema_model)
        for start in range(0, tensors.n_frames, bs):
            batch = self._to_device(tensors.gather(torch.arange(start, min(start + bs, tensors.n_frames))))
            out = evaluator.evaluate_batch(batch["z"], batch["pos"], batch["batch"], batch.get("cell"))
            diff = out["forces"] - batch["forces"]
            ok = torch.isfinite(diff).all(-1)
            abs_err += float(diff[ok].abs().sum())
            n_comp += 3 * int(ok.sum())
            e_err += float((out["energy"].double() - batch["energy"]).abs().sum())
            err, count = stress_error_sum(out, batch)
            stress_err, n_stress = stress_err + err, n_stress + count
        errors = {"force_mae_meV_A": 1000 * abs_err / max(n_comp, 1)}
        if objective in ("energy_forces", "energy"):
            errors["energy_mae_meV"] = 1000 * e_err / tensors.n_frames
        if n_stress:
            errors["stress_mae_meV_A3"] = 1000 * stress_err / n_stress
        return errors

    def valid_tensors_or_train(self, s: int) -> List[TensorConformations]:
        """Tensor sets where index ``s`` is source s's validation set (for build_batch)."""
        sets = list(self.tensors)
        sets[s] = self.valid_tensors[s]
        return sets

    # ---------------------------------------------------------------- loop
    def run(self) -> Dict[str, float]:
        """Train (resuming if possible) until ``optim.max_steps``; returns the last validation."""
        cfg = self.config.optim
        if self.rank == 0:
            self._lock()
        try:
            if self.rank == 0:
                self._remove_stale_temporaries()
            if self.existing == "overwrite" and self.rank == 0:
                self._remove_existing_run()
            if self.world_size > 1:
                dist.barrier()
            return self._run(cfg)
        finally:
            self.release()

    def _run(self, cfg: Any) -> Dict[str, float]:
        resumed = self.resume()
        if self.rank == 0:
            write_text_atomic(self.run_dir / "config.yaml", yaml.safe_dump(self.config.to_dict(), sort_keys=False))
        last_valid: Dict[str, float] = {}
        bar = tqdm(
            **progress_bar_settings(cfg, self.step, self.cpu_seconds),
            disable=not self.progress,
            desc="train",
            mininterval=0.5 if sys.stderr.isatty() else 60.0,  # keep background logs short
        )
        if resumed and self.rank == 0:
            bar.write(
                f"resumed from {self.run_dir / 'last.pt'} at step {self.step} "
                f"({self.cpu_seconds / 3600:.3g} CPU-hours used so far)"
            )
        if resumed and self.stop_reason and self._stop_still_holds():
            bar.write(f"{self.run_dir} stopped earlier ({self.stop_reason}); nothing to train")
        else:
            self.stop_reason = None
        window_start, window_frames = time.perf_counter(), 0.0
        cpu_mark = time.process_time()

        def count_cpu() -> None:
            nonlocal cpu_mark
            now = time.process_time()
            self.cpu_seconds += (now - cpu_mark) * self.world_size
            cpu_mark = now

        while self.step < cfg.max_steps and self.stop_reason is None:
            info = self.train_step()
            count_cpu()
            window_frames += info["frames"] * self.world_size
            bar.update(progress_bar_position(cfg, self.step, self.cpu_seconds) - bar.n)
            if not math.isfinite(info["loss"]):
                raise FloatingPointError(f"non-finite training loss at step {self.step}: {info}")
            if self.step % cfg.log_every == 0:
                elapsed = time.perf_counter() - window_start
                row = {
                    "step": self.step,
                    "kind": "train",
                    "lr": info["lr"],
                    "loss": info["loss"],
                    "time_s": elapsed,
                    "conf_per_s": window_frames / max(elapsed, 1e-9),
                    "cpu_hours": self.cpu_seconds / 3600,
                    "grad_norm": info["grad_norm"],
                }
                row.update({f"train/{k}": info[k] for k in TERM_NAMES if k in info})
                self._log(row)
                bar.set_postfix(step=self.step, loss=f"{info['loss']:.4g}", lr=f"{info['lr']:.2e}",
                                cps=f"{row['conf_per_s']:.0f}")
                window_start, window_frames = time.perf_counter(), 0.0
            if cfg.time_budget_s is not None and self._agree(self.cpu_seconds >= cfg.time_budget_s):
                self.stop_reason = f"time budget of {cfg.time_budget_s / 3600:.3g} CPU-hours used"
            validate_now = self.step % cfg.valid_every == 0 or self.step == cfg.max_steps
            if validate_now or self.stop_reason:
                last_valid = self.validate()
                count_cpu()
                self._after_validation(last_valid)
                fitted = self._fit_budget_cosine()
                if fitted and self.rank == 0:
                    bar.write(fitted)
                self._log(
                    {
                        "step": self.step,
                        "kind": "valid",
                        "lr": info["lr"],
                        "loss": last_valid["valid_loss"],
                        "cpu_hours": self.cpu_seconds / 3600,
                        **last_valid,
                    }
                )
                if self.rank == 0:
                    write_learning_curve(self.run_dir)
                if self.progress:
                    bar.write(f"step {self.step}: " + ", ".join(f"{k}={v:.4g}" for k, v in last_valid.items()))
            if self.stop_reason:
                self.save_last()
                if self.rank == 0:
                    bar.write(f"stopped at step {self.step}: {self.stop_reason}")
                break
            if self.step in cfg.snapshot_steps:
                self.save_snapshot()
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.max_steps:
                self.save_last()
        bar.close()
        if not last_valid:
            last_valid = self.validate()
        return last_valid

    def _stop_still_holds(self) -> bool:
        """Whether a resumed run's earlier stop holds under the present config (a larger time
        budget or patience lets it go on)."""
        optim = self.config.optim
        if self.stop_reason and self.stop_reason.startswith("time budget"):
            return optim.time_budget_s is not None and self.cpu_seconds >= optim.time_budget_s
        if self.stop_reason and self.stop_reason.startswith("no better"):
            return bool(optim.early_stop_patience) and self.validations_since_best >= optim.early_stop_patience
        return True

    def _agree(self, flag: bool) -> bool:
        """True when ``flag`` is true on any data-parallel worker (so all stop together)."""
        if self.world_size == 1:
            return flag
        value = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def _after_validation(self, metrics: Dict[str, float]) -> None:
        optim = self.config.optim
        if optim.select_by not in metrics:
            raise ValueError(f"optim.select_by is {optim.select_by}, but no validation frame has reference forces: "
                             "select by valid_loss")
        value = metrics[optim.select_by]
        if not math.isfinite(value):  # the data is screened (screening.py): the weights have diverged
            raise FloatingPointError(
                f"non-finite validation {optim.select_by} ({value}) at step {self.step}: the weights have diverged; "
                f"lower the learning rate, or resume from an earlier checkpoint"
            )
        if value < self.best_valid:
            self.best_valid = value
            self.validations_since_best = 0
            self.save_best(metrics)
        else:
            self.validations_since_best += 1
            if optim.early_stop_patience and self.validations_since_best >= optim.early_stop_patience:
                self.stop_reason = self.stop_reason or (
                    f"no better {optim.select_by} in {self.validations_since_best} validations"
                )
        if self.plateau is not None and self.step >= optim.warmup_steps:
            self.plateau.step(value)


def stress_error_sum(output: Dict[str, Tensor], batch: Dict[str, Tensor]) -> Tuple[float, int]:
    """Sum of |predicted - reference| stress components (eV/Å³) over the batch's frames with a stress
    label, and the number of components summed."""
    if "stress" not in output or "stress" not in batch:
        return 0.0, 0
    labelled = torch.isfinite(batch["stress"]).flatten(1).all(-1)
    if not bool(labelled.any()):
        return 0.0, 0
    diff = output["stress"].detach()[labelled] - batch["stress"][labelled]
    return float(diff.abs().sum()), diff.numel()


def progress_bar_position(optim: OptimConfig, step: int, cpu_seconds: float) -> int:
    """Where the training progress bar stands: whole CPU-seconds used (at most the budget) for a run
    with a time budget, else the step."""
    if optim.time_budget_s is not None:
        return min(int(cpu_seconds), int(optim.time_budget_s))
    return step


def progress_bar_settings(optim: OptimConfig, step: int, cpu_seconds: float) -> Dict[str, Any]:
    """What the training progress bar counts (tqdm's ``total``, ``initial``, ``unit``): with a time
    budget the CPU-seconds used out of the budget (the budget usually ends such a run), else the
    steps out of ``max_steps``, or the steps alone when only early stopping ends the run."""
    initial = progress_bar_position(optim, step, cpu_seconds)
    if optim.time_budget_s is not None:
        return {"total": int(optim.time_budget_s), "initial": initial, "unit": "CPU-s",
                "bar_format": "{l_bar}{bar}| {n_fmt}/{total_fmt} CPU-s [{elapsed}<{remaining}{postfix}]"}
    return {"total": None if optim.max_steps >= UNLIMITED_STEPS else optim.max_steps, "initial": initial,
            "unit": "step"}


def train(config: TrainConfig, progress: bool = True, existing: str = "resume") -> Tuple[Trainer, Dict[str, float]]:
    """Build a Trainer, run it, and return it with its last validation metrics (``existing``: see
    :class:`Trainer`)."""
    trainer = Trainer(config, progress=progress, existing=existing)
    metrics = trainer.run()
    return trainer, metrics


__all__ = ["Trainer", "config_fingerprint", "fit_atomic_energies", "train"]

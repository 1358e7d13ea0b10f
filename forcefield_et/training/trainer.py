"""The trainer: AdamW, the warm-up + cosine/plateau schedule (:mod:`.schedule`), EMA
(``torch.optim.swa_utils.AveragedModel``), clipping, validation, atomic checkpoints with exact
resume into a run directory (:mod:`.run_directory`), and data parallelism through ``torchrun``.

Determinism: batch composition and denoising noise are pure functions of (seed, step), so a
run killed at any point and resumed from ``last.pt`` reproduces the uninterrupted run.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from ..checkpoint import read_checkpoint, save_checkpoint
from ..data.conformations import ConformationSet
from ..data.sources import read_source
from ..data.splits import split_by_molecule_id
from ..domain import merge_domains, training_domain
from ..dtypes import resolve_dtype
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
from .run_directory import RunDirectory, check_existing_policy, config_fingerprint
from .schedule import LearningRateSchedule


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
        check_existing_policy(existing)  # before the run directory is made
        self.existing = existing
        self.config = config
        self.device = training_device(config.optim.device)
        self.rank, self.world_size = _distributed(self.device)
        self.progress = progress and self.rank == 0
        self.dtype = resolve_dtype(config.dtype)
        self.directory = RunDirectory(config.run_dir)
        self.directory.check_existing(existing, config.to_dict())
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
        self.schedule = LearningRateSchedule(self.optimizer, optim)
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

    @property
    def run_dir(self) -> Path:
        return self.directory.path

    # ---------------------------------------------------------------- set-up
    def release(self) -> None:
        """Release the run directory's lock (done automatically when the process ends)."""
        self.directory.release()

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

    # ---------------------------------------------------------------- EMA
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
            **self.schedule.state_dict(),
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
        save_checkpoint(self.directory.last, self.model, self._metadata(), self._training_state())

    def save_best(self, metrics: Dict[str, Any]) -> None:
        if self.rank != 0:
            return
        save_checkpoint(self.directory.best, self.ema_model, self._metadata({"validation": metrics}))

    def save_snapshot(self) -> None:
        """Keep the EMA weights of this step as ``snapshots/step_<N>.pt`` (an inference checkpoint)."""
        if self.rank != 0:
            return
        extra = {"snapshot": {"step": self.step, "conformations_seen": self.step * self.config.optim.batch_size}}
        save_checkpoint(self.directory.snapshot(self.step), self.ema_model, self._metadata(extra))

    def resume(self) -> bool:
        """Restore from ``run_dir/last.pt`` if present. Returns whether it resumed."""
        path = self.directory.last
        if not path.exists():
            self.directory.truncate_metrics(self.step)  # a fresh start: drop rows a previous, unsaved run left behind
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
        self.schedule.load_state_dict(state, self.step)
        self.best_valid = float(state["best_valid"])
        self.cpu_seconds = float(state.get("cpu_seconds", 0.0))
        self.validations_since_best = int(state.get("validations_since_best", 0))
        self.stop_reason = state.get("stop_reason")
        if state.get("select_by", "valid_loss") != self.config.optim.select_by:
            # the stored bests are values of another metric: the next validation sets new ones
            self.best_valid = math.inf
            self.schedule.forget_best()
        self.directory.truncate_metrics(self.step)
        return True

    def _log(self, row: Dict[str, Any]) -> None:
        if self.rank == 0:
            self.directory.log_metrics(row)

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
        self.schedule.after_step(self.step)
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
            self.directory.lock()
        try:
            if self.rank == 0:
                self.directory.remove_stale_temporaries()
            if self.existing == "overwrite" and self.rank == 0:
                self.directory.remove_run()
            if self.world_size > 1:
                dist.barrier()
            return self._run(cfg)
        finally:
            self.release()

    def _run(self, cfg: Any) -> Dict[str, float]:
        resumed = self.resume()
        if self.rank == 0:
            self.directory.write_config(self.config.to_dict())
        last_valid: Dict[str, float] = {}
        bar = tqdm(
            **progress_bar_settings(cfg, self.step, self.cpu_seconds),
            disable=not self.progress,
            desc="train",
            mininterval=0.5 if sys.stderr.isatty() else 60.0,  # keep background logs short
        )
        if resumed and self.rank == 0:
            bar.write(
                f"resumed from {self.directory.last} at step {self.step} "
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
                fitted = self.schedule.fit_budget_cosine(self.step, self.cpu_seconds, self._broadcast)
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

    def _broadcast(self, value: int) -> int:
        """Rank 0's ``value`` on every data-parallel worker."""
        if self.world_size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.broadcast(tensor, 0)
        return int(tensor.item())

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
        self.schedule.after_validation(self.step, value)


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

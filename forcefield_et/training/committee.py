"""Training a committee, of one of two kinds.

**checkpoints** (the default): K runs of one configuration that differ only in their seed.
``forcefield-et finetune --committee K --out DIR`` trains the members one after another into
ordinary run directories ``DIR/member_<k>/``. Member ``k`` uses ``seed + k`` for its batch order,
noise and any newly initialised weights; every member uses ``seed`` for the train/validation carve
(``TrainConfig.split_seed``), so all members are selected on the same validation frames. Rerunning
the same command resumes an interrupted member and skips finished ones. When every member is
finished, ``DIR/committee.json`` lists their ``best.pt`` files; :class:`~forcefield_et.ETCalculator`
and ``forcefield-et md --model`` accept ``DIR`` or ``DIR/committee.json``.

**heads** (``--committee-kind heads``, :func:`train_head_committee`): one run in ``DIR`` of a
:class:`~forcefield_et.model.HeadCommittee`, K energy heads on one shared representation. The K
heads start from the initial model's energy head with independent noise (``head_noise`` times each
weight tensor's standard deviation, seeded by ``seed`` and the head index); head k draws its
frames from its own bootstrap resample of each source (drawn with replacement, seed ``seed + k``)
in its own order, ``max(1, batch_size // K)`` frames a step, and only its own frames train it,
while the representation learns from all K heads' frames. One step costs what one model's step on
``K * max(1, batch_size // K)`` frames costs, so a heads committee trains at the cost of one model;
validation, ``best.pt`` and the EMA use the heads' mean. ``DIR/committee.json`` (kind ``heads``)
names ``best.pt``; the checkpoint alone is a committee as well.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import torch

from ..checkpoint import read_checkpoint
from ..registry import COMMITTEE_FILE, write_committee_file
from .batching import MixedBatchSampler, batch_shares, build_batch
from .config import TrainConfig
from .objectives import prepare_equilibrium
from .run_directory import config_differences, config_fingerprint
from .trainer import Trainer, train

COMMITTEE_KINDS = ("heads", "checkpoints")
DEFAULT_HEAD_NOISE = 0.1

MEMBER_PREFIX = "member_"


def member_dir(committee_dir: str | Path, index: int) -> Path:
    """The run directory of member ``index`` (0-based) of the committee in ``committee_dir``."""
    return Path(committee_dir) / f"{MEMBER_PREFIX}{index}"


def member_config(config: TrainConfig, index: int) -> TrainConfig:
    """Member ``index``'s configuration: run directory ``<run_dir>/member_<index>``, seed
    ``config.seed + index``, train/validation carve seeded by ``config.seed``."""
    split_seed = config.seed if config.split_seed is None else config.split_seed
    return dataclasses.replace(
        config,
        run_dir=str(member_dir(config.run_dir, index)),
        seed=config.seed + index,
        split_seed=split_seed,
    )


def member_finished(config: TrainConfig) -> bool:
    """Whether the run in ``config.run_dir`` was trained with ``config`` (same fingerprint, see
    :func:`~forcefield_et.training.trainer.config_fingerprint`), has a ``best.pt``, and its
    ``last.pt`` reached ``optim.max_steps`` or stopped for a reason that still holds under
    ``config`` (time budget used, no better validation within the patience). A run of another
    configuration is not finished: training it raises the trainer's clear error."""
    run_dir = Path(config.run_dir)
    last = run_dir / "last.pt"
    if not (last.is_file() and (run_dir / "best.pt").is_file()):
        return False
    state = read_checkpoint(last).get("training_state") or {}
    stored = state.get("config")
    if stored is None or config_differences(config_fingerprint(stored), config_fingerprint(config.to_dict())):
        return False
    optim = config.optim
    if int(state.get("step", 0)) >= optim.max_steps:
        return True
    reason = str(state.get("stop_reason") or "")
    if reason.startswith("time budget"):
        return optim.time_budget_s is not None and float(state.get("cpu_seconds", 0.0)) >= optim.time_budget_s
    if reason.startswith("no better"):
        return bool(optim.early_stop_patience) and int(state.get("validations_since_best", 0)) >= (
            optim.early_stop_patience
        )
    return False


def train_committee(
    config: TrainConfig,
    size: int,
    progress: bool = True,
    existing: str = "resume",
    log: Callable[[str], None] = print,
) -> Dict[str, Any]:
    """Train ``size`` members of ``config`` (see the module docstring) and write
    ``<run_dir>/committee.json``. ``existing`` applies to each member's run directory as in
    :func:`~forcefield_et.training.train` ('resume', 'refuse', 'overwrite'; with 'resume' a finished
    member is skipped). Returns the committee file's content with each member's last validation."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise ValueError(f"a committee needs at least 2 members, got {size!r}")
    members: List[Dict[str, Any]] = []
    for index in range(size):
        member = member_config(config, index)
        if existing == "resume" and member_finished(member):
            log(f"committee member {index + 1}/{size} ({member.run_dir}) is finished; skipped")
        else:
            log(f"committee member {index + 1}/{size}: seed {member.seed} -> {member.run_dir}")
            trainer, _ = train(member, progress=progress, existing=existing)
            trainer.release()
        validation = read_checkpoint(Path(member.run_dir) / "best.pt")["metadata"].get("validation") or {}
        members.append({"path": f"{MEMBER_PREFIX}{index}/best.pt", "seed": member.seed, "validation": validation})
    path = write_committee_file(
        config.run_dir, [m["path"] for m in members],
        extra={"split_seed": member_config(config, 0).split_seed, "members_info": members},
    )
    log(f"wrote {path} ({size} members)")
    return {"path": str(path), "members": members}


class HeadCommitteeTrainer(Trainer):
    """A :class:`~forcefield_et.training.Trainer` of a :class:`~forcefield_et.model.HeadCommittee`
    with ``n_heads`` heads (see the module docstring for the recipe)."""

    def __init__(self, config: TrainConfig, n_heads: int, head_noise: float = DEFAULT_HEAD_NOISE,
                 progress: bool = True, existing: str = "resume") -> None:
        if isinstance(n_heads, bool) or not isinstance(n_heads, int) or n_heads < 2:
            raise ValueError(f"a committee needs at least 2 members, got {n_heads!r}")
        if not head_noise >= 0:
            raise ValueError(f"head_noise must be >= 0, got {head_noise!r}")
        self.n_heads, self.head_noise = n_heads, float(head_noise)
        super().__init__(config, progress=progress, existing=existing)
        if self.world_size > 1:
            raise ValueError("a heads committee trains in one process (no --workers)")
        per_head = max(1, config.optim.batch_size // n_heads)
        shares = batch_shares([s.ratio for s in self.sources], per_head)
        sizes = [len(s.data) for s in self.sources]
        self.head_samplers = [MixedBatchSampler(sizes, shares, config.seed + k) for k in range(n_heads)]
        self.bootstrap = [
            [np.random.default_rng([config.seed + k, s, 7919]).integers(0, size, size) for s, size in enumerate(sizes)]
            for k in range(n_heads)
        ]

    def _build_model(self) -> None:
        from ..model.head_committee import HeadCommittee

        super()._build_model()
        self.model = HeadCommittee.from_potential(self.model, self.n_heads, self.head_noise, seed=self.config.seed)
        self.model.train()

    def _metadata(self, extra: Dict[str, Any] | None = None) -> Dict[str, Any]:
        meta = super()._metadata(extra)
        meta["committee_heads"] = self.n_heads
        meta["committee"] = {"kind": "heads", "heads": self.n_heads, "head_noise": self.head_noise,
                             "frames_per_head_and_step": max(1, self.config.optim.batch_size // self.n_heads),
                             "bootstrap": True}
        return meta

    def resume(self) -> bool:
        path = self.run_dir / "last.pt"
        if path.exists():
            stored = read_checkpoint(path)["metadata"].get("committee_heads")
            if stored != self.n_heads:
                raise ValueError(f"{path} holds a run with committee_heads={stored!r}, not {self.n_heads}; "
                                 "choose another --out or --overwrite")
        return super().resume()

    def _local_batch(self, step: int) -> Dict[str, torch.Tensor]:
        picks: List[List[np.ndarray]] = [[] for _ in self.sources]
        heads: List[List[int]] = [[] for _ in self.sources]
        for k, sampler in enumerate(self.head_samplers):
            for s, frames in enumerate(sampler.frames(step)):
                picks[s].append(self.bootstrap[k][s][frames])
                heads[s].extend([k] * len(frames))
        batch = build_batch(self.tensors, self.sources, [np.concatenate(p) for p in picks])
        self.model.structure_heads = torch.tensor([k for h in heads for k in h], dtype=torch.long)
        seed = int(np.random.SeedSequence([self.config.seed, step, self.rank]).generate_state(1, np.uint64)[0] >> 1)
        prepare_equilibrium(batch, self.config.objectives, torch.Generator().manual_seed(seed))
        return batch


def train_head_committee(
    config: TrainConfig,
    size: int,
    head_noise: float = DEFAULT_HEAD_NOISE,
    progress: bool = True,
    existing: str = "resume",
    log: Callable[[str], None] = print,
) -> Dict[str, Any]:
    """Train a heads committee of ``size`` heads into ``config.run_dir`` (see the module docstring)
    and write ``<run_dir>/committee.json`` (kind ``heads``). Returns the committee file's content
    with the last validation."""
    log(f"heads committee: {size} heads on one representation -> {config.run_dir}")
    if config.optim.compile:  # the heads committee trains eagerly
        config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, compile=False))
    trainer = HeadCommitteeTrainer(config, size, head_noise, progress=progress, existing=existing)
    try:
        trainer.run()
    finally:
        trainer.release()
    validation = read_checkpoint(Path(config.run_dir) / "best.pt")["metadata"].get("validation") or {}
    path = write_committee_file(config.run_dir, ["best.pt"], extra={"kind": "heads", "heads": size,
                                                                    "validation": validation})
    log(f"wrote {path} ({size} heads)")
    return {"path": str(path), "kind": "heads", "heads": size, "validation": validation}


__all__ = ["COMMITTEE_FILE", "COMMITTEE_KINDS", "HeadCommitteeTrainer", "member_config", "member_dir",
           "member_finished", "train_committee", "train_head_committee"]

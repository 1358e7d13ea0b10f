"""Training a committee: K runs of one configuration that differ only in their seed.

``forcefield-et finetune --committee K --out DIR`` trains the members one after another into
ordinary run directories ``DIR/member_<k>/``. Member ``k`` uses ``seed + k`` for its batch order,
noise and any newly initialised weights; every member uses ``seed`` for the train/validation carve
(``TrainConfig.split_seed``), so all members are selected on the same validation frames. Rerunning
the same command resumes an interrupted member and skips finished ones. When every member is
finished, ``DIR/committee.json`` lists their ``best.pt`` files; :class:`~forcefield_et.ETCalculator`
and ``forcefield-et md --model`` accept ``DIR`` or ``DIR/committee.json``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Dict, List

from ..checkpoint import read_checkpoint
from ..registry import COMMITTEE_FILE, write_committee_file
from .config import TrainConfig
from .trainer import _differences, config_fingerprint, train

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
    if stored is None or _differences(config_fingerprint(stored), config_fingerprint(config.to_dict())):
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


__all__ = ["COMMITTEE_FILE", "member_config", "member_dir", "member_finished", "train_committee"]

"""A training run's directory: its files, the lock that keeps it to one writer, what may be done
with a run already there (resume, require, refuse, overwrite), and ``metrics.csv``.

Layout::

    run_dir/last.pt        resumable state (model, EMA, optimiser, schedule, step), atomic
    run_dir/best.pt        EMA weights with the best validation metric (an inference checkpoint)
    run_dir/metrics.csv    one row per log/validation event
    run_dir/config.yaml    the configuration used
    run_dir/snapshots/     EMA weights at chosen steps (pretraining)
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List

import yaml

from ..checkpoint import read_checkpoint
from ..files import DirectoryLock, write_text_atomic

METRIC_FIELDS = ["step", "kind", "lr", "loss", "time_s", "conf_per_s", "cpu_hours"]
EXISTING_RUN_POLICIES = ("resume", "require", "refuse", "overwrite")
RUN_FILES = ("last.pt", "best.pt", "metrics.csv", "learning_curve.csv", "learning_curve.png", "config.yaml")
# optimiser settings that may change when a run is resumed (how long and how it runs, not what it learns)
RESUMABLE_SETTINGS = (
    "max_steps", "warmup_steps", "time_budget_s", "early_stop_patience", "threads", "device", "compile",
    "log_every", "checkpoint_every", "valid_every", "select_by", "snapshot_steps",
)
# settings added after runs were stored: at these defaults they match a stored configuration without them
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


def check_existing_policy(existing: str) -> None:
    """Raise a clear error unless ``existing`` is one of :data:`EXISTING_RUN_POLICIES`."""
    if existing not in EXISTING_RUN_POLICIES:
        raise ValueError(f"existing must be one of {EXISTING_RUN_POLICIES}, got {existing!r}")


def config_fingerprint(config: Dict[str, Any]) -> Dict[str, Any]:
    """The parts of a configuration (as ``TrainConfig.to_dict()``) that define what a run learns:
    everything but the run directory, the data root and :data:`RESUMABLE_SETTINGS`. A run resumes
    only under a configuration with the same fingerprint."""
    fingerprint = {k: v for k, v in config.items() if k not in ("run_dir", "data_root", "optim", "description")}
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


def config_differences(a: Any, b: Any, prefix: str = "") -> List[str]:
    """The dotted keys (``optim.lr``, ``sources.0.path``) where two configuration dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: List[str] = []
        for key in sorted(set(a) | set(b)):
            out += config_differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for index, (x, y) in enumerate(zip(a, b)):
            out += config_differences(x, y, f"{prefix}{index}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


class RunDirectory:
    """The files of one training run in ``path`` (created when missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"run directory {self.path} is a file")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = DirectoryLock(self.path, "run directory")

    @property
    def last(self) -> Path:
        """The resumable checkpoint."""
        return self.path / "last.pt"

    @property
    def best(self) -> Path:
        """The inference checkpoint of the best validation."""
        return self.path / "best.pt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.csv"

    def snapshot(self, step: int) -> Path:
        return self.path / "snapshots" / f"step_{step}.pt"

    # ---------------------------------------------------------------- one writer
    def lock(self) -> None:
        """Hold an exclusive lock on ``.lock`` (:class:`~forcefield_et.files.DirectoryLock`), so that
        a second process cannot write into the same run directory (released by :meth:`release`, or
        when the process dies)."""
        self._lock.acquire()

    def release(self) -> None:
        self._lock.release()

    # ---------------------------------------------------------------- a run already there
    def started(self) -> bool:
        """Whether the directory holds a run that was started (killed before its first ``last.pt``, a
        resume starts it again from step 0, which the uninterrupted run would have passed through)."""
        return (self.path / ".lock").exists() or any((self.path / name).exists() for name in RUN_FILES)

    def check_existing(self, existing: str, config: Dict[str, Any]) -> None:
        """Check the policy ``existing`` (one of :data:`EXISTING_RUN_POLICIES`) against the run the
        directory holds, for a run of ``config`` (``TrainConfig.to_dict()``); nothing is changed."""
        check_existing_policy(existing)
        if existing == "overwrite":
            return
        holds_run = self.last.exists() or self.best.exists()
        if existing == "refuse" and holds_run:
            where = "a finished or interrupted training run"
            if self.last.exists():
                state = read_checkpoint(self.last).get("training_state") or {}
                where = f"a training run (last.pt at step {state.get('step')})"
            raise ValueError(
                f"{self.path} already holds {where}; pass --resume to continue it or --overwrite to replace it"
            )
        if existing == "require" and not self.last.exists() and not self.started():
            raise ValueError(f"nothing to resume: {self.last} does not exist")
        if self.last.exists():
            stored = (read_checkpoint(self.last).get("training_state") or {}).get("config")
            if stored is not None:
                changed = config_differences(config_fingerprint(stored), config_fingerprint(config))
                if changed:
                    raise ValueError(
                        f"{self.path} holds a run with another configuration (differs in: {', '.join(changed)}); "
                        "resume it with its own configuration, choose another run directory, or overwrite it"
                    )

    def remove_run(self) -> None:
        """Delete a previous run's checkpoints, logs and snapshots (``existing='overwrite'``)."""
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
        if (self.path / "snapshots").is_dir():
            shutil.rmtree(self.path / "snapshots")

    def remove_stale_temporaries(self) -> None:
        """Delete the temporary files of writes that a killed run left unfinished (call with the lock
        held, so that no other process is writing them)."""
        for folder in (self.path, self.path / "snapshots"):
            for stale in [*folder.glob(".*.tmp"), *folder.glob("*.csv.tmp")]:
                stale.unlink(missing_ok=True)

    def write_config(self, config: Dict[str, Any]) -> None:
        write_text_atomic(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    # ---------------------------------------------------------------- metrics.csv
    def truncate_metrics(self, step: int) -> None:
        """Drop the rows after ``step`` (logged by a run after its last checkpoint) and rows cut short
        by a kill, so that a resumed run logs each step once."""
        path = self.metrics
        if not path.exists():
            return
        with open(path) as handle:
            rows = list(csv.reader(handle))
        if not rows:
            return
        # a row cut short by a kill has fewer fields (its step may even parse): it is dropped
        kept = [rows[0]] + [r for r in rows[1:] if len(r) == len(rows[0]) and r[0].isdigit() and int(r[0]) <= step]
        buffer = io.StringIO()
        csv.writer(buffer).writerows(kept)
        write_text_atomic(path, buffer.getvalue())

    def log_metrics(self, row: Dict[str, Any]) -> None:
        """Append ``row`` to ``metrics.csv`` (:data:`METRIC_FIELDS` first); a row with new keys widens
        the header (the file is rewritten atomically)."""
        path = self.metrics
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


__all__ = ["EXISTING_RUN_POLICIES", "RUN_FILES", "RunDirectory", "check_existing_policy", "config_differences",
           "config_fingerprint"]

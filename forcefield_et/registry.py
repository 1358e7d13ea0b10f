"""The model registry: bundled model names, resolving a name or path to a checkpoint file, and
building a :class:`~forcefield_et.model.Potential` from it. Every entry point (ASE, OpenMM, the
CLI, the trainer, evaluation) resolves a model through :func:`resolve_model`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Sequence, Union

import torch

from .checkpoint import (
    FORMAT_NAME,
    FORMAT_VERSION,
    CheckpointError,
    PathLike,
    atomic_torch_save,
    check_model_entries,
    checksum,
    read_checkpoint,
)
from .dtypes import resolve_dtype
from .files import write_text_atomic

BUNDLED_DIR = Path(__file__).resolve().parent / "checkpoints"


def bundled_models() -> Dict[str, Path]:
    """Names of the checkpoints shipped inside the package, mapped to their files."""
    if not BUNDLED_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(BUNDLED_DIR.glob("*.pt"))}


def resolve_model_path(name_or_path: PathLike) -> Path:
    """Resolve a model name or path.

    - an existing file path is used as is;
    - a bundled name (``"pretrained"``, ``"rmd17-aspirin"``, ...) or such a name with ``.pt``
      that does not exist as a file in the working directory resolves to the bundled file;
    - anything else raises CheckpointError listing the bundled names.
    """
    candidate = Path(name_or_path).expanduser()
    if candidate.is_file():
        return candidate
    bundled = bundled_models()
    stem = candidate.name[:-3] if candidate.name.endswith(".pt") else candidate.name
    if candidate.parent == Path(".") and stem in bundled:
        return bundled[stem]
    known = ", ".join(sorted(bundled)) or "none installed"
    raise CheckpointError(f"model {str(name_or_path)!r} is neither an existing file nor a bundled model ({known})")


def load_model(
    name_or_path: PathLike = "pretrained",
    device: Union[str, torch.device] = "cpu",
    dtype: Union[str, torch.dtype] = "float32",
) -> torch.nn.Module:
    """Load a model by bundled name or path, in eval mode, on ``device`` in ``dtype``.

    The checkpoint's metadata (training data, metrics, units) is attached as ``model.metadata``.
    """
    from .model import Potential

    path = resolve_model_path(name_or_path)
    payload = read_checkpoint(path)
    meta = payload["metadata"]
    check_model_entries(meta, payload["state_dict"], path)
    hyper = meta["hyperparameters"]
    try:
        if meta.get("committee_heads"):  # K energy heads on one representation (finetune --committee-kind heads)
            from .model.head_committee import HeadCommittee

            model = HeadCommittee(int(meta["committee_heads"]), **hyper)
        else:
            model = Potential(**hyper)
        model.load_state_dict(payload["state_dict"])
    except (TypeError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"{path}: weights do not match the stored hyperparameters ({error})") from error
    model.metadata = meta
    model.checkpoint_path = str(path)
    return model.to(device=torch.device(device), dtype=resolve_dtype(dtype)).eval()


def resolve_model(
    model: Any,
    dtype: Union[str, torch.dtype, None] = None,
    device: Union[str, torch.device, None] = None,
) -> torch.nn.Module:
    """A model as given (a ``Potential`` or committee module, returned as is, never converted); a
    committee (a list of names/paths, a committee directory or its ``committee.json``) loaded as a
    :class:`~forcefield_et.model.Committee`; or a bundled name or checkpoint path loaded (in
    ``dtype``, default float32, on ``device``, default CPU)."""
    if isinstance(model, torch.nn.Module):
        return model
    device = device if device is not None else "cpu"
    dtype = dtype if dtype is not None else "float32"
    if isinstance(model, (list, tuple)) or (
        isinstance(model, (str, os.PathLike)) and committee_members(model) is not None
    ):
        return load_committee(model, device=device, dtype=dtype)
    if isinstance(model, (str, os.PathLike)):
        return load_model(model, device=device, dtype=dtype)
    raise TypeError(
        "model must be a Potential, a committee (a list of names/paths or a committee directory), a bundled "
        f"model name or a checkpoint path, got {type(model).__name__}"
    )


def export_checkpoint(source: PathLike, destination: PathLike, card: Dict[str, Any] | None = None) -> Path:
    """Copy a (training) checkpoint to an inference checkpoint: the model weights and metadata
    only (no optimiser state), with ``card`` entries (name, description, level of theory,
    limits, ...) merged into the metadata. Written atomically, checksummed."""
    payload = read_checkpoint(source)
    check_model_entries(payload["metadata"], payload["state_dict"], source)
    meta = dict(payload["metadata"])
    meta.update(card or {})
    meta["exported_from"] = {"file": Path(source).name, "checksum": payload["checksum"]}
    out: Dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "metadata": json.dumps(meta, sort_keys=True),
        "state_dict": payload["state_dict"],
    }
    out["checksum"] = checksum(out)
    return atomic_torch_save(out, destination)



COMMITTEE_FILE = "committee.json"
COMMITTEE_FORMAT = "forcefield_et_committee"


def write_committee_file(
    directory: PathLike, members: Sequence[PathLike], extra: Dict[str, Any] | None = None
) -> Path:
    """Write ``directory/committee.json`` atomically: the member checkpoints (paths relative to
    ``directory``, or absolute) of a committee, plus ``extra`` JSON entries."""
    directory = Path(directory)
    content: Dict[str, Any] = {
        "format": COMMITTEE_FORMAT,
        "format_version": 1,
        "members": [str(m) for m in members],
    }
    content.update(extra or {})
    return write_text_atomic(directory / COMMITTEE_FILE, json.dumps(content, indent=2) + "\n")


def committee_members(name_or_path: PathLike) -> List[Path] | None:
    """The member checkpoint files of a committee given as its directory (holding
    ``committee.json``) or as the ``committee.json`` file; None when ``name_or_path`` is not a
    committee. Raises CheckpointError for an unreadable committee file or a missing member."""
    candidate = Path(name_or_path).expanduser()
    if candidate.is_dir() and (candidate / COMMITTEE_FILE).is_file():
        candidate = candidate / COMMITTEE_FILE
    elif candidate.is_dir():
        raise CheckpointError(
            f"{candidate} is a directory without {COMMITTEE_FILE}; give a checkpoint file, a bundled model name, "
            "or a committee directory written by forcefield-et finetune --committee"
        )
    if not (candidate.is_file() and candidate.suffix == ".json"):
        return None
    try:
        content = json.loads(candidate.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot read committee file {candidate}: {error}") from error
    members = content.get("members") if isinstance(content, dict) else None
    if not isinstance(content, dict) or content.get("format") != COMMITTEE_FORMAT or not isinstance(members, list):
        raise CheckpointError(f"{candidate} is not a forcefield_et committee file (format {COMMITTEE_FORMAT!r})")
    paths = [candidate.parent / Path(str(m)).expanduser() for m in members]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise CheckpointError(f"committee {candidate}: member checkpoint(s) not found: {', '.join(missing)}")
    return paths


def load_committee(
    members: Union[PathLike, Sequence[PathLike]],
    device: Union[str, torch.device] = "cpu",
    dtype: Union[str, torch.dtype] = "float32",
) -> torch.nn.Module:
    """Load a :class:`~forcefield_et.model.committee.Committee` from a committee directory or
    ``committee.json``, or from a list of checkpoint paths / bundled names. A committee of one
    heads checkpoint (:class:`~forcefield_et.model.HeadCommittee`, ``finetune --committee-kind
    heads``) loads as that checkpoint."""
    from .model.committee import Committee

    if isinstance(members, (str, os.PathLike)):
        paths = committee_members(members)
        if paths is None:
            raise CheckpointError(f"{members} is not a committee directory or committee.json file")
        source: str | None = str(members)
    else:
        paths, source = list(members), None
    models = [load_model(p, device=device, dtype=dtype) for p in paths]
    if len(models) == 1 and isinstance(models[0], Committee):
        models[0].source = source
        return models[0]
    if any(isinstance(m, Committee) for m in models):
        raise CheckpointError("a heads committee checkpoint cannot be a member of another committee")
    committee = Committee(models)
    committee.source = source
    return committee

__all__ = [
    "BUNDLED_DIR", "COMMITTEE_FILE", "bundled_models", "committee_members", "export_checkpoint", "load_committee",
    "load_model", "resolve_model", "resolve_model_path", "write_committee_file",
]

"""Checkpoint I/O, in one place: safe loading, checksums, atomic writes, name resolution.

A checkpoint is a ``torch.save`` archive holding only tensors and plain Python values:

    {"format": "forcefield_et", "format_version": 1,
     "metadata": "<JSON: hyperparameters, elements, units, provenance, metrics>",
     "state_dict": {name: tensor}, "training_state": {...} (optional, for resuming),
     "checksum": "<sha256 of everything above>"}

It is always read with ``torch.load(..., weights_only=True)``, which refuses pickled code, and
the checksum is verified before any weight is used. Writes go to a temporary file in the same
folder that is then renamed over the target, so an interrupted write never corrupts the
previous checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Sequence, Union

import torch

FORMAT_NAME = "forcefield_et"
FORMAT_VERSION = 1
BUNDLED_DIR = Path(__file__).resolve().parent / "checkpoints"
UNITS = {"length": "Angstrom", "energy": "eV", "forces": "eV/Angstrom", "stress": "eV/Angstrom^3"}

PathLike = Union[str, os.PathLike]


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, unsafe, or from an unsupported format version."""


def _digest_update(h: hashlib._Hash, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(value, dict):
        h.update(b"{")
        for key in sorted(value, key=str):
            h.update(repr(key).encode())
            _digest_update(h, value[key])
        h.update(b"}")
    elif isinstance(value, (list, tuple)):
        h.update(b"[")
        for item in value:
            _digest_update(h, item)
        h.update(b"]")
    else:
        h.update(repr(value).encode())


def checksum(payload: Dict[str, Any]) -> str:
    """SHA-256 over every entry of a checkpoint payload except ``checksum`` itself."""
    h = hashlib.sha256()
    _digest_update(h, {k: v for k, v in payload.items() if k != "checksum"})
    return h.hexdigest()


def atomic_torch_save(payload: Dict[str, Any], path: PathLike) -> Path:
    """Write ``payload`` with torch.save to ``path`` atomically (temp file + fsync + rename).

    On failure (disk full, permissions, interruption) the previous file at ``path`` is left
    untouched and a CheckpointError says why.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException as error:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        # torch.save's archive writer turns a failed write() (disk full, I/O error) into a
        # RuntimeError whose __context__ is the OSError: report that OSError.
        reason = error if isinstance(error, OSError) else error.__context__
        if isinstance(reason, OSError) and isinstance(error, (OSError, RuntimeError)):
            raise CheckpointError(
                f"could not write checkpoint {path}: {reason}. The previous checkpoint (if any) is unchanged."
            ) from error
        raise
    return path


def git_commit() -> str | None:
    """The git commit of the source tree this package was imported from, if any."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def save_checkpoint(
    path: PathLike,
    model: torch.nn.Module,
    metadata: Dict[str, Any] | None = None,
    training_state: Dict[str, Any] | None = None,
) -> Path:
    """Save a model (and optionally the training state for resuming) atomically.

    ``metadata`` must be JSON-serialisable; hyperparameters, units, package version and git
    commit are added automatically.
    """
    from . import __version__

    meta = dict(metadata or {})
    meta.setdefault("hyperparameters", getattr(model, "hyperparameters", {}))
    meta.setdefault("units", UNITS)
    meta.setdefault("package_version", __version__)
    meta.setdefault("git_commit", git_commit())
    meta.setdefault("model_class", type(model).__name__)
    try:
        metadata_json = json.dumps(meta, sort_keys=True)
    except TypeError as error:
        raise CheckpointError(f"checkpoint metadata is not JSON-serialisable: {error}") from error
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload: Dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "metadata": metadata_json,
        "state_dict": state,
    }
    if training_state is not None:
        payload["training_state"] = training_state
    payload["checksum"] = checksum(payload)
    return atomic_torch_save(payload, path)


def is_torchscript_file(path: PathLike) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``): a zip with compiled code."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.split("/", 1)[-1].startswith("code/") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def read_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Read and verify a checkpoint file without executing any pickled code.

    Returns the payload with ``metadata`` decoded to a dict. Raises CheckpointError for a
    missing, truncated, corrupted, tampered, unsafe or future-version file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if is_torchscript_file(path):
        raise CheckpointError(
            f"{path} is a TorchScript model (as written by forcefield-et export), not a checkpoint. It is for "
            "OpenMM's TorchForce and torch.jit.load; ETCalculator, info, evaluate and finetune need the checkpoint "
            "it was exported from (a .pt written by training or export --format checkpoint) or a bundled model name"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for bad archives
        text = str(error)
        if "GLOBAL" in text or "Unsupported global" in text:
            reason = "it contains pickled Python objects that are not allowed (possible code execution); refusing"
        else:
            detail = next((line for line in text.splitlines()[1:] if "operand" in line or "error" in line.lower()), "")
            reason = f"the file is truncated or not a checkpoint ({type(error).__name__}: {detail or text[:200]})"
        raise CheckpointError(f"cannot load checkpoint {path}: {reason}") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} is not a forcefield_et checkpoint (missing 'format': '{FORMAT_NAME}')")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}; this forcefield_et reads versions "
            f"<= {FORMAT_VERSION}. Upgrade forcefield_et to load it."
        )
    for key in ("metadata", "state_dict", "checksum"):
        if key not in payload:
            raise CheckpointError(f"{path} is incomplete: missing entry {key!r}")
    if checksum(payload) != payload["checksum"]:
        raise CheckpointError(f"{path} failed its checksum: the file is corrupted or was modified")
    try:
        payload["metadata"] = json.loads(payload["metadata"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: metadata is not valid JSON ({error})") from error
    return payload


def export_checkpoint(source: PathLike, destination: PathLike, card: Dict[str, Any] | None = None) -> Path:
    """Copy a (training) checkpoint to an inference checkpoint: the model weights and metadata
    only (no optimiser state), with ``card`` entries (name, description, level of theory,
    limits, ...) merged into the metadata. Written atomically, checksummed."""
    payload = read_checkpoint(source)
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
    hyper = meta.get("hyperparameters")
    if not isinstance(hyper, dict):
        raise CheckpointError(f"{path}: metadata has no 'hyperparameters'")
    try:
        model = Potential(**hyper)
        model.load_state_dict(payload["state_dict"])
    except (TypeError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"{path}: weights do not match the stored hyperparameters ({error})") from error
    model.metadata = meta
    model.checkpoint_path = str(path)
    return model.to(device=torch.device(device), dtype=resolve_dtype(dtype)).eval()


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
    path = directory / COMMITTEE_FILE
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{COMMITTEE_FILE}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(content, handle, indent=2)
            handle.write("\n")
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


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
    ``committee.json``, or from a list of checkpoint paths / bundled names."""
    from .model.committee import Committee

    if isinstance(members, (str, os.PathLike)):
        paths = committee_members(members)
        if paths is None:
            raise CheckpointError(f"{members} is not a committee directory or committee.json file")
        source: str | None = str(members)
    else:
        paths, source = list(members), None
    committee = Committee([load_model(p, device=device, dtype=dtype) for p in paths])
    committee.source = source
    return committee


def resolve_dtype(dtype: Union[str, torch.dtype]) -> torch.dtype:
    """'float32' / 'float64' (or a torch dtype) -> torch dtype; anything else raises ValueError."""
    if isinstance(dtype, torch.dtype):
        if dtype in (torch.float32, torch.float64):
            return dtype
    elif dtype in ("float32", "float64", "single", "double"):
        return torch.float32 if dtype in ("float32", "single") else torch.float64
    raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")

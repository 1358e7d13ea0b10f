"""The checkpoint file format: safe loading, checksums, atomic writes, and checks of the stored
model entries against the weights. Names of bundled models and building a model from a file are
:mod:`forcefield_et.registry`'s job.

A checkpoint is a ``torch.save`` archive holding only tensors and plain Python values:

    {"format": "forcefield_et", "format_version": 1,
     "metadata": "<JSON: hyperparameters, elements, units, provenance, metrics>",
     "state_dict": {name: tensor}, "training_state": {...} (optional, for resuming),
     "checksum": "<sha256 of everything above>"}

It is always read with ``torch.load(..., weights_only=True)``, which refuses pickled code, and
the checksum is verified before any weight is used. Writes go to a temporary file in the same
folder that is fsynced and then renamed over the target (:mod:`forcefield_et.files`), so an
interrupted write never corrupts the previous checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Dict, Union

import torch

from .files import atomic_write

FORMAT_NAME = "forcefield_et"
FORMAT_VERSION = 1
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
    """Write ``payload`` with torch.save to ``path`` atomically and durably
    (:func:`forcefield_et.files.atomic_write`: temporary file, fsync, rename, fsync of the folder).

    On failure (disk full, permissions, interruption) the previous file at ``path`` is left
    untouched and a CheckpointError says why.
    """
    path = Path(path)
    try:
        with atomic_write(path) as handle:
            torch.save(payload, handle)
    except BaseException as error:
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


# Bounds of the hyperparameters a checkpoint may declare: larger values are refused before any
# tensor is allocated (the largest bundled model has 128 channels, 4 layers, 8 heads, 32 RBF, 5 Å).
HYPERPARAMETER_BOUNDS = {"hidden_channels": 4096, "num_layers": 64, "num_heads": 256, "num_rbf": 1024}
MAX_CUTOFF = 50.0  # Å
MAX_ATOMIC_NUMBER = 118


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_model_entries(metadata: Dict[str, Any], state_dict: Dict[str, Any], path: PathLike = "checkpoint") -> None:
    """Range-check a checkpoint's hyperparameters against its tensors before a model is built.

    Checks: the known hyperparameters only, integer sizes within :data:`HYPERPARAMETER_BOUNDS`,
    a finite cutoff in (0, MAX_CUTOFF] Å, distinct atomic numbers in 1..118, floating-point
    (float32/float64) finite weights, and that the element map, the embedding, the radial basis,
    the layer count and the head agree with them. Raises CheckpointError naming the field."""
    from .model.potential import DEFAULT_HYPERPARAMETERS

    def fail(field: str, message: str) -> None:
        raise CheckpointError(f"{path}: {field} {message}")

    hyper = metadata.get("hyperparameters")
    if not isinstance(hyper, dict):
        fail("metadata", "has no 'hyperparameters'")
    unknown = sorted(set(hyper) - set(DEFAULT_HYPERPARAMETERS))
    if unknown:
        fail("hyperparameters", f"has unknown entries {unknown}; known: {sorted(DEFAULT_HYPERPARAMETERS)}")
    sizes = {}
    for name, maximum in HYPERPARAMETER_BOUNDS.items():
        value = hyper.get(name, DEFAULT_HYPERPARAMETERS[name])
        if not _is_int(value) or not 1 <= value <= maximum:
            fail(f"hyperparameters.{name}", f"must be an integer from 1 to {maximum}, got {value!r}")
        sizes[name] = value
    if sizes["hidden_channels"] % sizes["num_heads"]:
        fail(
            "hyperparameters.num_heads",
            f"({sizes['num_heads']}) must divide hidden_channels ({sizes['hidden_channels']})",
        )
    cutoff = hyper.get("cutoff", DEFAULT_HYPERPARAMETERS["cutoff"])
    if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)) or not 0 < cutoff <= MAX_CUTOFF:
        fail("hyperparameters.cutoff", f"must be a finite length in (0, {MAX_CUTOFF:g}] Å, got {cutoff!r}")
    zbl = hyper.get("zbl", False)
    if not isinstance(zbl, bool) and not (isinstance(zbl, (int, float)) and 0 < zbl < float("inf")):
        fail("hyperparameters.zbl", f"must be true, false or a positive number, got {zbl!r}")
    elements = hyper.get("elements", DEFAULT_HYPERPARAMETERS["elements"])
    if (
        not isinstance(elements, list)
        or not elements
        or not all(_is_int(z) and 1 <= z <= MAX_ATOMIC_NUMBER for z in elements)
        or len(set(elements)) != len(elements)
    ):
        fail("hyperparameters.elements", f"must be a list of distinct atomic numbers in 1..{MAX_ATOMIC_NUMBER}")
    n_elements = len(elements)

    if not isinstance(state_dict, dict):
        fail("state_dict", "is not a mapping of names to tensors")
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            fail(f"state_dict[{name!r}]", f"is a {type(tensor).__name__}, not a tensor")
        if name == "element_index":
            continue
        if tensor.dtype not in (torch.float32, torch.float64):
            fail(f"state_dict[{name!r}]", f"has dtype {tensor.dtype}; weights must be float32 or float64")
        if not bool(torch.isfinite(tensor).all()):
            fail(f"state_dict[{name!r}]", "contains NaN or inf")

    def expect_shape(name: str, shape: tuple) -> None:
        tensor = state_dict.get(name)
        if tensor is None:
            fail(f"state_dict[{name!r}]", "is missing")
        if tuple(tensor.shape) != shape:
            fail(
                f"state_dict[{name!r}]",
                f"has shape {tuple(tensor.shape)}, but the hyperparameters ({n_elements} elements, "
                f"{sizes['hidden_channels']} hidden channels, {sizes['num_rbf']} RBF) need {shape}",
            )

    hidden = sizes["hidden_channels"]
    expect_shape("element_index", (MAX_ATOMIC_NUMBER + 1,))
    expect_shape("representation.embedding.weight", (n_elements, hidden))
    expect_shape("representation.rbf.means", (sizes["num_rbf"],))
    expect_shape("head.atomic_energies", (n_elements,))
    index = state_dict["element_index"]
    if index.dtype != torch.int64:
        fail("state_dict['element_index']", f"has dtype {index.dtype}, expected int64")
    expected_index = torch.full((MAX_ATOMIC_NUMBER + 1,), -1, dtype=torch.int64)
    expected_index[torch.tensor(sorted(elements))] = torch.arange(n_elements)
    if not torch.equal(index, expected_index):
        bad = int(torch.nonzero(index != expected_index)[0, 0])
        fail(
            "state_dict['element_index']",
            f"maps Z={bad} to {int(index[bad])}, which disagrees with hyperparameters.elements "
            f"({n_elements} elements; entries must be -1 or an index below {n_elements})",
        )
    layers = {int(name.split(".")[2]) for name in state_dict if name.startswith("representation.layers.")
              and name.split(".")[2].isdigit()}
    if layers != set(range(sizes["num_layers"])):
        fail(
            "hyperparameters.num_layers",
            f"is {sizes['num_layers']}, but the weights hold {len(layers)} layer(s)",
        )


# names that moved to forcefield_et.registry and forcefield_et.dtypes; importable from here as before
_MOVED = {"BUNDLED_DIR": "registry", "bundled_models": "registry", "resolve_model_path": "registry",
          "load_model": "registry", "export_checkpoint": "registry", "resolve_dtype": "dtypes",
          "COMMITTEE_FILE": "registry", "write_committee_file": "registry", "committee_members": "registry",
          "load_committee": "registry"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(f"forcefield_et.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

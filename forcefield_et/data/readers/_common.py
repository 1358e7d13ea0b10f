"""Shared private helpers of all readers: file / npz access, shape and finiteness checks, unit aliases (-> Å, eV)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Union

import numpy as np

from ...units import energy_factor, length_factor
from ..conformations import ConformationSet
from ..errors import DataFormatError
from ..labels import nonfinite_labels_accepted

PathLike = Union[str, "os.PathLike[str]"]


class _ArgumentError(IndexError):
    """Bad user argument (e.g. frame index out of range); not wrapped into DataFormatError."""


def _existing(path: PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(2, "No such file or directory", str(p))
    return p


@contextmanager
def _guard(name: str, what: str) -> Iterator[None]:
    """Turn any unexpected exception raised while parsing into a DataFormatError naming the file."""
    try:
        yield
    except (DataFormatError, _ArgumentError):
        raise
    except Exception as e:  # numpy / zipfile / h5py / sqlite / ase errors, MemoryError on bogus shapes
        raise DataFormatError(f"{name}: cannot read as {what} ({type(e).__name__}: {e})") from e


@contextmanager
def _open_npz(p: Path, name: str) -> Iterator[Any]:
    try:
        f = np.load(p, allow_pickle=False)
    except Exception as e:
        raise DataFormatError(f"{name}: not a readable .npz file ({type(e).__name__}: {e})") from e
    if not hasattr(f, "files"):
        raise DataFormatError(f"{name}: expected an .npz archive, found a single .npy array")
    try:
        yield f
    finally:
        f.close()


def _get(
    f: Any, name: str, key: str, ndim: int | tuple[int, ...] | None = None, kinds: str = "biuf"
) -> np.ndarray:
    """Array ``key`` of an npz (or dict-like), with clear errors for a missing key / bad dtype / ndim."""
    files = list(f.files) if hasattr(f, "files") else list(f.keys())
    if key not in files:
        raise DataFormatError(f"{name}: missing key {key!r} (found: {sorted(files)})")
    try:
        arr = np.asarray(f[key])
    except Exception as e:
        raise DataFormatError(f"{name}: key {key!r} cannot be read ({type(e).__name__}: {e})") from e
    if arr.dtype.kind not in kinds:
        raise DataFormatError(f"{name}: key {key!r} has dtype {arr.dtype}, expected numeric")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if arr.ndim not in allowed:
            raise DataFormatError(
                f"{name}: key {key!r} has shape {arr.shape}, "
                f"expected {' or '.join(f'{d}-D' for d in allowed)}"
            )
    return arr


def _frame_vector(arr: np.ndarray, name: str, key: str, n_frames: int) -> np.ndarray:
    """[F] or [F,1] -> [F] float64, with a shape check."""
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.shape != (n_frames,):
        raise DataFormatError(
            f"{name}: key {key!r} has shape {arr.shape}, expected ({n_frames},) or ({n_frames}, 1)"
        )
    return arr.astype(np.float64)


def _check_shape(arr: np.ndarray, shape: tuple[int, ...], name: str, key: str, like: str = "") -> None:
    if arr.shape != tuple(shape):
        extra = f" (like {like!r})" if like else ""
        raise DataFormatError(f"{name}: key {key!r} has shape {arr.shape}, expected {tuple(shape)}{extra}")


def _check_finite_frames(arr: np.ndarray, name: str, key: str, what: str = "coordinates") -> None:
    """Raise if any frame of ``arr`` [F, ...] has a non-finite value; names the first bad frame."""
    if arr.size == 0 or (what in ("energies", "forces") and nonfinite_labels_accepted()):
        return
    bad = ~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
    if bad.any():
        raise DataFormatError(
            f"{name}: key {key!r} has non-finite {what} in {int(bad.sum())} frame(s) "
            f"(first: frame {int(np.argmax(bad))})"
        )


def _select(n_frames: int, indices: Any, max_frames: int | None) -> np.ndarray:
    sel = np.arange(n_frames, dtype=np.int64)
    if indices is not None:
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (n_frames,):
                raise _ArgumentError(f"boolean indices have shape {idx.shape}, file has {n_frames} frames")
            sel = sel[idx]
        else:
            idx = idx.astype(np.int64).reshape(-1)
            if idx.size and (idx.min() < -n_frames or idx.max() >= n_frames):
                raise _ArgumentError(f"indices out of range for {n_frames} frames")
            sel = sel[idx]
    if max_frames is not None:
        if max_frames < 0:
            raise _ArgumentError(f"max_frames must be >= 0, got {max_frames}")
        sel = sel[:max_frames]
    return sel


def _finish(cs: ConformationSet) -> ConformationSet:
    cs.validate()
    return cs


def _fixed_size_set(
    z: np.ndarray,
    pos: np.ndarray,
    energy: np.ndarray | None,
    forces: np.ndarray | None,
    source: str,
    mol_id: int = 0,
    properties: dict[str, np.ndarray] | None = None,
) -> ConformationSet:
    """Frames of one molecule: z [N], pos [F,N,3], energy [F], forces [F,N,3] (already converted)."""
    n_frames, n = pos.shape[:2]
    return ConformationSet(
        z=np.tile(z.astype(np.int64), n_frames),
        pos=pos.reshape(-1, 3),
        n_atoms=np.full(n_frames, n, dtype=np.int64),
        energy=energy,
        forces=None if forces is None else forces.reshape(-1, 3),
        mol_id=np.full(n_frames, mol_id, dtype=np.int64),
        properties=properties or {},
        source=source,
    )


# Unit aliases found in data files (schnetpack metadata etc.) -> names known to forcefield_et.units.
_UNIT_ALIASES = {
    "ang": "Angstrom",
    "angs": "Angstrom",
    "angstrom": "Angstrom",
    "å": "Angstrom",
    "a": "Angstrom",
    "a0": "Bohr",
    "bohr": "Bohr",
    "nm": "nm",
    "ha": "Hartree",
    "hartree": "Hartree",
    "ev": "eV",
    "mev": "meV",
    "kcal/mol": "kcal/mol",
    "kj/mol": "kJ/mol",
}


def _energy_unit_factor(unit: str) -> float:
    return energy_factor(_UNIT_ALIASES.get(unit.strip().lower(), unit.strip()))


def _length_unit_factor(unit: str) -> float:
    return length_factor(_UNIT_ALIASES.get(unit.strip().lower(), unit.strip()))


def _force_unit_factor(unit: str) -> float:
    """'eV/Ang', 'Ha/Bohr', 'kcal/mol/Ang' -> factor to eV/Å."""
    u = unit.strip()
    e_part, _, l_part = u.rpartition("/")
    return _energy_unit_factor(e_part) / _length_unit_factor(l_part)

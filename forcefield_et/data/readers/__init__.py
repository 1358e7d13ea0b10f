"""Readers for the reference data formats used by forcefield_et.

Every reader returns a :class:`ConformationSet` in Å / eV (forces eV/Å), sets ``source`` to
``"<format>:<file name>"`` and raises

* ``FileNotFoundError`` (with the path) when the input does not exist,
* :class:`DataFormatError` naming the file and the key / entry when the input is malformed
  (missing key, inconsistent shapes, non-finite coordinates, unreadable / truncated / random
  bytes: numpy, zip, h5py, sqlite and ASE exceptions are wrapped).

Unit conversions use :mod:`forcefield_et.units` only.
"""

from __future__ import annotations

import base64
import fnmatch
import os
import re
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Union

import numpy as np

from ..elements import number as _element_number
from ..units import (
    BOHR_TO_ANGSTROM,
    HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM,
    HARTREE_TO_EV,
    KCAL_PER_MOL_PER_ANGSTROM_TO_EV_PER_ANGSTROM,
    KCAL_PER_MOL_TO_EV,
    energy_factor,
    length_factor,
)
from .conformations import ConformationSet
from .errors import DataFormatError

__all__ = [
    "DataFormatError",
    "QM9_PROPERTY_UNITS",
    "READERS",
    "infer_format",
    "read_ani1x",
    "read_ase",
    "read_ase_db",
    "read_dataset",
    "read_deepmd",
    "read_md17",
    "read_qm7x",
    "read_qm9",
    "read_rmd17",
    "read_spice",
    "read_xtb_corpus",
    "smiles_formal_charge",
    "xtb_start_sources",
]

PathLike = Union[str, "os.PathLike[str]"]

_SQLITE_MAGIC = b"SQLite format 3\x00"


# ============================================================================ helpers
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
    if arr.size == 0:
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


# ============================================================================ rMD17 / MD17
def read_rmd17(
    path: PathLike,
    max_frames: int | None = None,
    indices: Any = None,
    old_labels: bool = False,
) -> ConformationSet:
    """Read a revised-MD17 npz (Christensen & von Lilienfeld 2020).

    File keys: ``nuclear_charges`` [N], ``coords`` [F,N,3] Å, ``energies`` [F] kcal/mol,
    ``forces`` [F,N,3] kcal/mol/Å, plus ``old_indices`` [F] (frame index in original MD17) and
    ``old_energies`` / ``old_forces`` (original MD17 PBE+vdW-TS labels; used if ``old_labels``).
    Returns energies in eV, forces in eV/Å, ``mol_id = 0`` for all frames,
    ``properties['old_index']`` when present. ``indices`` (int array or bool mask) selects
    frames first, then ``max_frames`` keeps the first ones of that selection.
    """
    p = _existing(path)
    name = p.name
    ekey, fkey = ("old_energies", "old_forces") if old_labels else ("energies", "forces")
    with _guard(name, "rMD17 npz"), _open_npz(p, name) as f:
        z = _get(f, name, "nuclear_charges", ndim=1, kinds="iu")
        coords = _get(f, name, "coords", ndim=3)
        n_frames, n = coords.shape[:2]
        _check_shape(coords, (n_frames, len(z), 3), name, "coords")
        energies = _frame_vector(_get(f, name, ekey), name, ekey, n_frames)
        forces = _get(f, name, fkey)
        _check_shape(forces, coords.shape, name, fkey, like="coords")
        props = {}
        if "old_indices" in f.files:
            oi = _get(f, name, "old_indices", kinds="iu")
            _check_shape(oi, (n_frames,), name, "old_indices")
            props["old_index"] = oi.astype(np.int64)
        sel = _select(n_frames, indices, max_frames)
        coords, energies, forces = coords[sel], energies[sel], forces[sel]
        props = {k: v[sel] for k, v in props.items()}
        _check_finite_frames(coords, name, "coords")
        _check_finite_frames(energies, name, ekey, "energies")
        _check_finite_frames(forces, name, fkey, "forces")
        cs = _fixed_size_set(
            z,
            coords.astype(np.float64),
            energies * KCAL_PER_MOL_TO_EV,
            forces.astype(np.float64) * KCAL_PER_MOL_PER_ANGSTROM_TO_EV_PER_ANGSTROM,
            source=f"rmd17:{name}",
            properties=props,
        )
        return _finish(cs)


def read_md17(
    path: PathLike,
    max_frames: int | None = None,
    indices: Any = None,
    energy_unit: str = "kcal/mol",
    length_unit: str = "Angstrom",
) -> ConformationSet:
    """Read an original MD17 / sGDML npz: ``R`` [F,N,3] Å, ``z`` [N], ``E`` [F] or [F,1] kcal/mol,
    ``F`` [F,N,3] kcal/mol/Å (units overridable). Returns eV, eV/Å, ``mol_id = 0``."""
    p = _existing(path)
    name = p.name
    e_fac = energy_factor(energy_unit)
    l_fac = length_factor(length_unit)
    with _guard(name, "MD17 npz"), _open_npz(p, name) as f:
        z = _get(f, name, "z", kinds="iu")
        if z.ndim != 1:
            raise DataFormatError(
                f"{name}: key 'z' has shape {z.shape}, expected [N] (a 2-D 'z' is the zero-padded "
                "QM7-X layout: use read_qm7x)"
            )
        R = _get(f, name, "R", ndim=3)
        n_frames = R.shape[0]
        _check_shape(R, (n_frames, len(z), 3), name, "R")
        E = _frame_vector(_get(f, name, "E"), name, "E", n_frames)
        F = _get(f, name, "F")
        _check_shape(F, R.shape, name, "F", like="R")
        sel = _select(n_frames, indices, max_frames)
        R, E, F = R[sel], E[sel], F[sel]
        _check_finite_frames(R, name, "R")
        _check_finite_frames(E, name, "E", "energies")
        _check_finite_frames(F, name, "F", "forces")
        cs = _fixed_size_set(
            z,
            R.astype(np.float64) * l_fac,
            E * e_fac,
            F.astype(np.float64) * (e_fac / l_fac),
            source=f"md17:{name}",
        )
        return _finish(cs)


# ============================================================================ QM7-X
def read_qm7x(
    path: PathLike, energy_key: str | None = None, forces_key: str | None = None
) -> ConformationSet:
    """Read a QM7-X npz in one of two layouts (both Å, eV, eV/Å, PBE0+MBD).

    * Zero-padded multi-molecule layout (``qm7x_250_small.npz``): ``R`` [F,M,3], ``z`` [F,M]
      (``z == 0`` is padding), ``E`` [F,1], ``F`` [F,M,3]. The file stores no molecule id, so
      ``mol_id`` numbers the distinct atomic-number sequences (rows of ``z``) in order of first
      appearance: frames of one molecule share it; isomers written with the same atom order
      are grouped too (conservative for held-out-molecule splits).
    * Single-molecule layout (``qm7x_<id>.npz``): ``atXYZ`` [F,N,3], ``atNUM`` [F,N],
      ``ePBE0+MBD`` [F,1], ``totFOR`` [F,N,3], plus ``hCHG`` [F,N,1] (Hirshfeld charges, e),
      ``hRAT`` [F,N,1] (Hirshfeld volume ratios), ``vDIP`` [F,3] (dipole, e·Å). ``mol_id`` is
      the QM7-X molecule index parsed from the file name (``qm7x_226.npz`` -> 226), else 0.

    Other arrays are kept in raw units: [F,N,...] ones in ``atom_properties`` (trailing 1
    squeezed), [F,...] ones in ``properties``. Neither layout has an equilibrium flag; a
    boolean key ``equilibrium`` [F] is honoured if present, else all frames are False.
    """
    p = _existing(path)
    name = p.name
    with _guard(name, "QM7-X npz"), _open_npz(p, name) as f:
        files = set(f.files)
        if "atXYZ" in files or "atNUM" in files:
            zkey, rkey = "atNUM", "atXYZ"
            ekey = energy_key or "ePBE0+MBD"
            fkey = forces_key or "totFOR"
            m = re.search(r"qm7x_(\d+)$", p.stem)
            single_id = int(m.group(1)) if m else 0
        elif "R" in files and "z" in files:
            zkey, rkey = "z", "R"
            ekey = energy_key or "E"
            fkey = forces_key or "F"
            single_id = None
        else:
            raise DataFormatError(
                f"{name}: missing key 'R'/'z' (padded layout) or 'atXYZ'/'atNUM' (single-molecule layout) "
                f"(found: {sorted(files)})"
            )
        R = _get(f, name, rkey, ndim=3)
        n_frames, m_max = R.shape[:2]
        z = _get(f, name, zkey, kinds="iu")
        if z.ndim == 1:  # one z row for all frames
            z = np.broadcast_to(z, (n_frames, z.shape[0]))
        _check_shape(z, (n_frames, m_max), name, zkey, like=rkey)
        _check_shape(R, (n_frames, m_max, 3), name, rkey)
        E = _frame_vector(_get(f, name, ekey), name, ekey, n_frames)
        F = _get(f, name, fkey)
        _check_shape(F, R.shape, name, fkey, like=rkey)
        mask = z > 0
        n_atoms = mask.sum(axis=1)
        if n_frames and n_atoms.min() == 0:
            raise DataFormatError(
                f"{name}: key {zkey!r}: frame {int(np.argmin(n_atoms))} has no atoms (all z == 0)"
            )
        if (z < 0).any():
            raise DataFormatError(f"{name}: key {zkey!r} has negative atomic numbers")
        pos = R[mask]
        if not np.isfinite(pos).all():
            bad = ~np.isfinite(np.where(mask[..., None], R, 0.0)).all(axis=(1, 2))
            raise DataFormatError(
                f"{name}: key {rkey!r} has non-finite coordinates in {int(bad.sum())} frame(s) "
                f"(first: frame {int(np.argmax(bad))})"
            )
        _check_finite_frames(E, name, ekey, "energies")
        forces = F[mask].astype(np.float64)
        if not np.isfinite(forces).all():
            raise DataFormatError(f"{name}: key {fkey!r} has non-finite forces")
        if single_id is None:
            _, first, inv = np.unique(z, axis=0, return_index=True, return_inverse=True)
            rank = np.empty(len(first), dtype=np.int64)
            rank[np.argsort(first)] = np.arange(len(first))
            mol_id = rank[np.asarray(inv).reshape(-1)]
        else:
            mol_id = np.full(n_frames, single_id, dtype=np.int64)
        equilibrium = None
        used = {zkey, rkey, ekey, fkey}
        if "equilibrium" in files:
            eq = _get(f, name, "equilibrium")
            _check_shape(eq.reshape(-1), (n_frames,), name, "equilibrium")
            equilibrium = eq.reshape(-1).astype(bool)
            used.add("equilibrium")
        props: dict[str, np.ndarray] = {}
        aprops: dict[str, np.ndarray] = {}
        for key in sorted(files - used):
            try:
                arr = np.asarray(f[key])
            except Exception as e:
                raise DataFormatError(f"{name}: key {key!r} cannot be read ({type(e).__name__}: {e})") from e
            if arr.dtype.kind not in "biuf" or arr.ndim == 0 or arr.shape[0] != n_frames:
                continue
            if arr.ndim >= 3 and arr.shape[1] == m_max:  # per-atom [F, N, k]
                a = arr[mask]
                aprops[key] = a[:, 0] if a.ndim == 2 and a.shape[1] == 1 else a
            else:
                props[key] = arr[:, 0] if arr.ndim == 2 and arr.shape[1] == 1 else arr
        cs = ConformationSet(
            z=z[mask],
            pos=pos.astype(np.float64),
            n_atoms=n_atoms,
            energy=E,
            forces=forces,
            equilibrium=equilibrium,
            mol_id=mol_id,
            properties=props,
            source=f"qm7x:{name}",
            atom_properties=aprops,
        )
        return _finish(cs)


# ============================================================================ ASE formats
def read_ase(
    path: PathLike,
    index: Any = ":",
    energy_key: str | None = None,
    forces_key: str | None = None,
    energy_unit: str = "eV",
    length_unit: str = "Angstrom",
    format: str | None = None,
) -> ConformationSet:
    """Read anything ``ase.io.read`` handles (extxyz, xyz, traj, ...).

    Energy/forces come from the attached calculator (extxyz ``energy=`` / ``forces`` columns
    end up there) or from ``info[energy_key]`` / ``arrays[forces_key]``; they are converted
    from ``energy_unit`` / ``length_unit`` to eV and eV/Å. A cell [3,3] (Å) is kept when any
    frame has a periodic direction. Numeric ``info`` entries go to ``properties`` (raw units),
    extra numeric per-atom arrays to ``atom_properties``; ``info['mol_id']`` and
    ``info['equilibrium']`` are honoured (default: one molecule id per frame, not equilibrium).
    """
    p = _existing(path)
    name = p.name
    energy_factor(energy_unit)  # fail early on unknown units
    length_factor(length_unit)
    frames = _ase_read(p, name, index, format)
    return _finish(
        _from_ase_frames(frames, name, f"ase:{name}", energy_key, forces_key, energy_unit, length_unit)
    )


def _ase_read(p: Path, name: str, index: Any, format: str | None) -> list:
    from ase import Atoms
    from ase.io import read as ase_read

    if p.is_dir():
        raise DataFormatError(f"{name}: is a directory, not a structure file")
    with _guard(name, "a structure file (ase.io.read)"):
        frames = ase_read(str(p), index=index, format=format)
    if isinstance(frames, Atoms):
        frames = [frames]
    frames = list(frames)
    if not frames:
        raise DataFormatError(f"{name}: contains no structures")
    return frames


def _from_ase_frames(
    frames: list,
    name: str,
    source: str,
    energy_key: str | None,
    forces_key: str | None,
    energy_unit: str,
    length_unit: str,
) -> ConformationSet:
    for i, atoms in enumerate(frames):
        if len(atoms) == 0:
            raise DataFormatError(f"{name}: entry {i} has no atoms")
        if not np.isfinite(atoms.positions).all():
            raise DataFormatError(f"{name}: entry {i}: non-finite coordinates in 'positions'")
    try:
        cs = ConformationSet.from_ase(
            frames,
            source=source,
            energy_key=energy_key,
            forces_key=forces_key,
            energy_unit=energy_unit,
            length_unit=length_unit,
        )
    except KeyError as e:
        raise DataFormatError(f"{name}: {e.args[0]}") from e
    except Exception as e:
        raise DataFormatError(f"{name}: {type(e).__name__}: {e}") from e
    return cs


class _DbRows:
    """Rows + metadata of an ASE database, opened read-only (sqlite) so nothing is ever written."""

    def __init__(self, rows: list, metadata: dict):
        self.rows = rows
        self.metadata = metadata


def _open_ase_db(p: Path, name: str, selection: Any) -> _DbRows:
    import ase.db

    with _guard(name, "an ASE database"):
        if p.suffix.lower() == ".json":
            db = ase.db.connect(str(p), type="json", append=True)
            return _DbRows(
                list(db.select(selection) if selection is not None else db.select()), dict(db.metadata)
            )
        with open(p, "rb") as fh:
            head = fh.read(16)
        if head != _SQLITE_MAGIC:
            raise DataFormatError(f"{name}: not an SQLite/ASE database (bad header {head[:16]!r})")
        uri = f"file:{urllib.parse.quote(str(p.resolve()))}?mode=ro"
        con = sqlite3.connect(uri, uri=True)
        try:
            n = con.execute("SELECT COUNT(*) FROM sqlite_master WHERE name='systems'").fetchone()[0]
        finally:
            con.close()
        if n == 0:
            raise DataFormatError(f"{name}: SQLite file is not an ASE database (missing table 'systems')")
        from ase.db.sqlite import SQLite3Database

        class _ReadOnlySQLite(SQLite3Database):
            def _connect(self) -> sqlite3.Connection:
                return sqlite3.connect(uri, uri=True, timeout=20)

        db = _ReadOnlySQLite(str(p), create_indices=False)
        rows = list(db.select(selection) if selection is not None else db.select())
        return _DbRows(rows, dict(db.metadata))


def _decode_row_data(data: Any) -> dict[str, Any]:
    """``row.data`` as a dict; decodes schnetpack-0.3 style base64 arrays (``_shape_k``/``_dtype_k``)."""
    data = dict(data or {})
    out: dict[str, Any] = {}
    for k, v in data.items():
        if k.startswith("_shape_") or k.startswith("_dtype_"):
            continue
        if isinstance(v, str) and f"_dtype_{k}" in data:
            arr = np.frombuffer(base64.b64decode(v), dtype=np.dtype(str(data[f"_dtype_{k}"])))
            shape = data.get(f"_shape_{k}")
            v = arr.reshape(shape) if shape is not None else arr
        out[k] = v
    return out


def _row_value(row: Any, data: dict[str, Any], key: str) -> Any:
    if key in row.key_value_pairs:
        return row.key_value_pairs[key]
    if key in data:
        return data[key]
    return None


def read_ase_db(
    path: PathLike,
    energy_key: str | None = None,
    selection: Any = None,
    forces_key: str | None = None,
    energy_unit: str | None = None,
    mol_id_key: str = "mol_id",
) -> ConformationSet:
    """Read an ASE database (``.db`` SQLite, opened read-only, or ``.json``).

    Energy comes from the stored calculator results, or from ``energy_key`` looked up in
    ``row.key_value_pairs`` then ``row.data`` (e.g. ``'energy_U0'``). Its unit is
    ``energy_unit`` if given, else the db metadata (schnetpack ``_property_unit_dict``), else
    eV; positions use metadata ``_distance_unit`` (default Å). Forces from the calculator or
    ``row.data[forces_key]`` (unit from metadata, default eV/Å). Other numeric key-value pairs
    and ``row.data`` entries (schnetpack base64 arrays decoded) become ``properties`` in their
    stored units. ``mol_id`` from the key ``mol_id_key`` when every row has it, else one per row.
    """
    p = _existing(path)
    name = p.name
    if energy_unit is not None:
        energy_factor(energy_unit)
    cs, _meta = _read_ase_db_impl(
        p, name, energy_key, selection, forces_key, energy_unit, mol_id_key, "ase_db"
    )
    return _finish(cs)


def _read_ase_db_impl(
    p: Path,
    name: str,
    energy_key: str | None,
    selection: Any,
    forces_key: str | None,
    energy_unit: str | None,
    mol_id_key: str,
    fmt: str,
) -> tuple[ConformationSet, dict]:
    dbr = _open_ase_db(p, name, selection)
    rows, meta = dbr.rows, dbr.metadata
    if not rows:
        raise DataFormatError(
            f"{name}: database has no rows" + (f" matching {selection!r}" if selection else "")
        )
    units = dict(meta.get("_property_unit_dict", {}) or {})
    with _guard(name, "an ASE database"):
        l_fac = _length_unit_factor(str(meta.get("_distance_unit", "Angstrom")))
        if energy_unit is not None:
            e_fac = energy_factor(energy_unit)
        elif energy_key is not None and energy_key in units:
            e_fac = _energy_unit_factor(str(units[energy_key]))
        else:
            e_fac = 1.0
        f_fac = _force_unit_factor(str(units[forces_key])) if forces_key and forces_key in units else 1.0
        zs, poss, cells, energies, forces = [], [], [], [], []
        any_pbc = False
        e_seen = f_seen = False
        mol_ids: list[Any] = []
        eq: list[bool] = []
        props: dict[str, dict[int, np.ndarray]] = {}
        skip = {energy_key, forces_key, mol_id_key, "equilibrium"}
        for i, row in enumerate(rows):
            label = f"{name}: row id={row.id}"
            numbers = np.asarray(row.numbers, dtype=np.int64)
            positions = np.asarray(row.positions, dtype=np.float64)
            n = len(numbers)
            if n == 0:
                raise DataFormatError(f"{label}: entry has no atoms")
            if positions.shape != (n, 3):
                raise DataFormatError(f"{label}: 'positions' has shape {positions.shape}, expected ({n}, 3)")
            if not np.isfinite(positions).all():
                raise DataFormatError(f"{label}: non-finite coordinates in 'positions'")
            zs.append(numbers)
            poss.append(positions * l_fac)
            pbc = bool(np.any(row.pbc))
            any_pbc |= pbc
            cells.append(np.asarray(row.cell, dtype=np.float64) * l_fac if pbc else np.zeros((3, 3)))
            data = _decode_row_data(row.get("data"))
            # energy
            e = row.get("energy") if energy_key is None else _row_value(row, data, energy_key)
            if e is not None:
                e_seen = True
                energies.append(float(np.asarray(e, dtype=np.float64).reshape(-1)[0]) * e_fac)
            else:
                energies.append(np.nan)
            # forces
            f = row.get("forces") if forces_key is None else _row_value(row, data, forces_key)
            if f is not None:
                f = np.asarray(f, dtype=np.float64)
                if f.shape != (n, 3):
                    raise DataFormatError(
                        f"{label}: {forces_key or 'forces'!r} has shape {f.shape}, expected ({n}, 3)"
                    )
                f_seen = True
                forces.append(f * f_fac)
            else:
                forces.append(np.full((n, 3), np.nan))
            mol_ids.append(row.key_value_pairs.get(mol_id_key))
            eq.append(bool(row.key_value_pairs.get("equilibrium", False)))
            for k, v in list(row.key_value_pairs.items()) + list(data.items()):
                if k in skip:
                    continue
                if isinstance(v, (str, bytes)) or v is None:
                    continue
                arr = np.asarray(v)
                if arr.dtype.kind in "biuf":
                    props.setdefault(k, {})[i] = arr.reshape(-1)[0] if arr.size == 1 else arr
        if energy_key is not None and not e_seen:
            r0 = rows[0]
            found = sorted(set(r0.key_value_pairs) | set(_decode_row_data(r0.get("data"))))
            raise DataFormatError(f"{name}: missing key {energy_key!r} in every row (found: {found})")
        if forces_key is not None and not f_seen:
            raise DataFormatError(f"{name}: missing key {forces_key!r} in every row")
        n_frames = len(rows)
        properties: dict[str, np.ndarray] = {}
        for k, vals in props.items():
            shapes = {np.shape(v) for v in vals.values()}
            if len(shapes) != 1:
                continue
            (shape,) = shapes
            if len(vals) == n_frames:
                properties[k] = np.stack([np.asarray(vals[i]) for i in range(n_frames)])
            else:
                arr = np.full((n_frames, *shape), np.nan)
                for i, v in vals.items():
                    arr[i] = v
                properties[k] = arr
        ids = None
        if all(isinstance(m, (int, np.integer)) and not isinstance(m, bool) for m in mol_ids):
            ids = np.asarray(mol_ids, dtype=np.int64)
        cs = ConformationSet(
            z=np.concatenate(zs),
            pos=np.concatenate(poss, axis=0),
            n_atoms=np.array([len(z) for z in zs], dtype=np.int64),
            energy=np.asarray(energies) if e_seen else None,
            forces=np.concatenate(forces, axis=0) if f_seen else None,
            cell=np.stack(cells) if any_pbc else None,
            equilibrium=np.asarray(eq, dtype=bool),
            mol_id=ids,
            properties=properties,
            source=f"{fmt}:{name}",
        )
    return cs, meta


# ============================================================================ QM9
#: Units of the QM9 ``properties`` returned by :func:`read_qm9` (energies converted to eV).
QM9_PROPERTY_UNITS: dict[str, str] = {
    "A": "GHz",
    "B": "GHz",
    "C": "GHz",
    "mu": "Debye",
    "alpha": "bohr^3",
    "homo": "eV",
    "lumo": "eV",
    "gap": "eV",
    "r2": "bohr^2",
    "zpve": "eV",
    "U0": "eV",
    "U": "eV",
    "H": "eV",
    "G": "eV",
    "Cv": "cal/(mol K)",
}
_QM9_XYZ_NAMES = {
    "A": "A", "B": "B", "C": "C", "mu": "mu", "alpha": "alpha", "epsHOMO": "homo", "epsLUMO": "lumo",
    "epsgap": "gap", "<R2>": "r2", "zpve": "zpve", "U0": "U0", "U": "U", "H": "H", "G": "G", "Cv": "Cv",
}  # fmt: skip
_QM9_DB_NAMES = {
    "rotational_constant_A": "A", "rotational_constant_B": "B", "rotational_constant_C": "C",
    "dipole_moment": "mu", "isotropic_polarizability": "alpha", "homo": "homo", "lumo": "lumo", "gap": "gap",
    "electronic_spatial_extent": "r2", "zpve": "zpve", "energy_U0": "U0", "energy_U": "U", "enthalpy_H": "H",
    "free_energy": "G", "heat_capacity": "Cv",
}  # fmt: skip
_QM9_ENERGY_PROPS = {"homo", "lumo", "gap", "zpve", "U0", "U", "H", "G"}


def read_qm9(path: PathLike, energy_unit: str | None = None) -> ConformationSet:
    """Read QM9 (B3LYP/6-31G(2df,p) equilibrium geometries); dispatch on the extension.

    * ``.xyz`` / ``.extxyz``: the 15 QM9 properties in ``info`` (energies in Hartree).
    * ``.db`` / ``.json`` ASE database with schnetpack-style keys (``energy_U0``, ``homo``, ...).
      Energy units come from the metadata ``_property_unit_dict`` (``test_qm9_20.db``: Hartree);
      without metadata they are ``energy_unit`` (default eV, as in ``qm9_500_U0_eV.db``).

    Properties are renamed to the QM9 short names of :data:`QM9_PROPERTY_UNITS`; energies
    (homo, lumo, gap, zpve, U0, U, H, G) are converted to eV, the others keep their QM9 units
    (GHz, Debye, bohr³, bohr², cal/(mol K)). ``energy`` = U0 in eV, ``equilibrium`` = True,
    ``mol_id`` = position in the file. Raises DataFormatError if U0 is implausible for the
    assumed unit (|U0| per atom < 50 in "eV" means the file is really in Hartree).
    """
    p = _existing(path)
    name = p.name
    if energy_unit is not None:
        energy_factor(energy_unit)
    suffix = p.suffix.lower()
    if suffix in (".db", ".json"):
        cs, meta = _read_ase_db_impl(p, name, None, None, None, None, "mol_id", "qm9")
        units = dict(meta.get("_property_unit_dict", {}) or {})
        mapping = _QM9_DB_NAMES
        default_unit = energy_unit or "eV"

        def unit_of(raw_key: str) -> str:
            return str(units.get(raw_key, default_unit)) if energy_unit is None else energy_unit
    else:
        frames = _ase_read(p, name, ":", None)
        cs = _from_ase_frames(frames, name, f"qm9:{name}", None, None, "eV", "Angstrom")
        mapping = _QM9_XYZ_NAMES
        xyz_unit = energy_unit or "Hartree"

        def unit_of(raw_key: str) -> str:
            return xyz_unit

    props: dict[str, np.ndarray] = {}
    for raw, v in cs.properties.items():
        short = mapping.get(raw)
        if short is None:
            props[raw] = v
        elif short in _QM9_ENERGY_PROPS:
            try:
                props[short] = v.astype(np.float64) * _energy_unit_factor(unit_of(raw))
            except ValueError as e:
                raise DataFormatError(f"{name}: key {raw!r}: {e}") from e
        else:
            props[short] = v.astype(np.float64)
    if "U0" not in props:
        raise DataFormatError(f"{name}: missing key 'U0'/'energy_U0' (found: {sorted(cs.properties)})")
    u0 = props["U0"]
    per_atom = np.abs(u0) / cs.n_atoms
    finite = np.isfinite(per_atom)
    if finite.any() and np.median(per_atom[finite]) < 50.0:
        raise DataFormatError(
            f"{name}: key 'U0' looks like Hartree, not eV "
            f"(median |U0|/atom = {np.median(per_atom[finite]):.1f}); "
            "pass energy_unit='Hartree'"
        )
    cs.properties = props
    cs.energy = u0.astype(np.float64)
    cs.equilibrium = np.ones(len(cs), dtype=bool)
    cs.mol_id = np.arange(len(cs), dtype=np.int64)
    cs.source = f"qm9:{name}"
    return _finish(cs)


# ============================================================================ DeePMD
def read_deepmd(folder: PathLike, type_map: Sequence[str] | None = None) -> ConformationSet:
    """Read DeePMD npy data: one system folder, or a folder containing several (found recursively).

    A system has ``type.raw`` (one type index per atom), ``type_map.raw`` (element symbols;
    or pass ``type_map``) and ``set.*/`` folders with ``coord.npy`` [F, N*3] Å, ``energy.npy``
    [F] eV, ``force.npy`` [F, N*3] eV/Å and optionally ``box.npy`` [F, 9] Å (-> ``cell``
    [F,3,3], rows are lattice vectors; ignored when a ``nopbc`` file is present). Each system
    gets its own ``mol_id`` (0, 1, ... in sorted path order).
    """
    p = _existing(folder)
    if not p.is_dir():
        raise DataFormatError(f"{p.name}: DeePMD data must be a directory")
    if (p / "type.raw").exists():
        systems = [p]
    else:
        systems = sorted({t.parent for t in p.rglob("type.raw")})
    if not systems:
        raise DataFormatError(f"{p.name}: missing 'type.raw' (no DeePMD system found in the folder)")
    parts = []
    for i, sysdir in enumerate(systems):
        cs = _read_deepmd_system(sysdir, p, type_map)
        cs.mol_id = np.full(len(cs), i, dtype=np.int64)
        parts.append(cs)
    cs = parts[0] if len(parts) == 1 else ConformationSet.concatenate(parts)
    cs.source = f"deepmd:{p.name}"
    return _finish(cs)


def _read_raw_tokens(path: Path, label: str) -> list[str]:
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{label}: not a text file ({e})") from e
    return text.split()


def _read_deepmd_system(sysdir: Path, root: Path, type_map: Sequence[str] | None) -> ConformationSet:
    base = root.name if sysdir == root else f"{root.name}/{sysdir.relative_to(root).as_posix()}"
    lab = f"{base}/type.raw"
    with _guard(lab, "DeePMD type.raw"):
        tokens = _read_raw_tokens(sysdir / "type.raw", lab)
        try:
            types = np.array([int(t) for t in tokens], dtype=np.int64)
        except ValueError as e:
            raise DataFormatError(f"{lab}: entries must be integers ({e})") from e
    if types.size == 0:
        raise DataFormatError(f"{lab}: no atoms")
    if type_map is None:
        tm_path = sysdir / "type_map.raw"
        if not tm_path.exists():
            raise DataFormatError(f"{base}: missing 'type_map.raw' (or pass type_map=[...])")
        type_map = _read_raw_tokens(tm_path, f"{base}/type_map.raw")
    try:
        zmap = np.array([_element_number(s) for s in type_map], dtype=np.int64)
    except ValueError as e:
        raise DataFormatError(f"{base}/type_map.raw: {e}") from e
    if types.min() < 0 or types.max() >= len(zmap):
        raise DataFormatError(f"{lab}: type index {int(types.max())} outside type_map of length {len(zmap)}")
    z = zmap[types]
    n = len(z)
    nopbc = (sysdir / "nopbc").exists()
    set_dirs = sorted(d for d in sysdir.glob("set.*") if d.is_dir())
    if not set_dirs:
        raise DataFormatError(f"{base}: missing 'set.*' folder")
    poss, energies, forces, cells = [], [], [], []
    any_energy = any_forces = any_box = False
    for sd in set_dirs:
        rel = f"{base}/{sd.name}"

        def load(fname: str, required: bool, rel: str = rel, sd: Path = sd) -> np.ndarray | None:
            fp = sd / fname
            if not fp.exists():
                if required:
                    raise DataFormatError(f"{rel}: missing '{fname}'")
                return None
            with _guard(f"{rel}/{fname}", "an .npy array"):
                arr = np.load(fp, allow_pickle=False)
            if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
                raise DataFormatError(f"{rel}/{fname}: expected a numeric array")
            return arr

        coord = load("coord.npy", True)
        assert coord is not None
        n_frames = coord.shape[0] if coord.ndim >= 1 else 0
        if coord.size != n_frames * n * 3 or coord.ndim < 2:
            raise DataFormatError(
                f"{rel}/coord.npy: shape {coord.shape} does not match {n} atoms of 'type.raw'"
            )
        coord = coord.reshape(n_frames, n, 3).astype(np.float64)
        _check_finite_frames(coord, f"{rel}/coord.npy", "coord")
        poss.append(coord)
        en = load("energy.npy", False)
        if en is not None:
            any_energy = True
            if en.size != n_frames:
                raise DataFormatError(
                    f"{rel}/energy.npy: shape {en.shape}, expected ({n_frames},) like 'coord.npy'"
                )
            energies.append(en.reshape(-1).astype(np.float64))
        else:
            energies.append(np.full(n_frames, np.nan))
        fo = load("force.npy", False)
        if fo is not None:
            any_forces = True
            if fo.shape[:1] != (n_frames,) or fo.size != n_frames * n * 3:
                raise DataFormatError(
                    f"{rel}/force.npy: shape {fo.shape}, expected {(n_frames, n * 3)} like 'coord.npy'"
                )
            fo = fo.reshape(n_frames, n, 3).astype(np.float64)
            _check_finite_frames(fo, f"{rel}/force.npy", "force", "forces")
            forces.append(fo)
        else:
            forces.append(np.full((n_frames, n, 3), np.nan))
        box = None if nopbc else load("box.npy", False)
        if box is not None:
            any_box = True
            if box.size != n_frames * 9:
                raise DataFormatError(f"{rel}/box.npy: shape {box.shape}, expected ({n_frames}, 9)")
            box = box.reshape(n_frames, 3, 3).astype(np.float64)
            _check_finite_frames(box, f"{rel}/box.npy", "box", "cell vectors")
            cells.append(box)
        else:
            cells.append(np.zeros((n_frames, 3, 3)))
    pos = np.concatenate(poss, axis=0)
    n_frames = pos.shape[0]
    return ConformationSet(
        z=np.tile(z, n_frames),
        pos=pos.reshape(-1, 3),
        n_atoms=np.full(n_frames, n, dtype=np.int64),
        energy=np.concatenate(energies) if any_energy else None,
        forces=np.concatenate(forces, axis=0).reshape(-1, 3) if any_forces else None,
        cell=np.concatenate(cells, axis=0) if any_box else None,
        source=f"deepmd:{base}",
    )


# ============================================================================ xTB corpus
def _xtb_files(p: Path) -> list[Path]:
    if p.is_dir():
        files = sorted(p.glob("xtb_shard*.npz"))
        if not files:
            raise DataFormatError(f"{p.name}: no 'xtb_shard*.npz' in the folder")
        return files
    return [p]


def read_xtb_corpus(
    path: PathLike,
    kinds: Sequence[int] = (0, 1, 2),
    exclude_sources: Sequence[str] = (),
) -> ConformationSet:
    """Read the GFN2-xTB pretraining corpus (concatenated layout; Å, eV, eV/Å).

    Keys per frame: ``n_atoms``, ``mol_id`` (index into ``starts.npz``), ``kind`` (0 relaxed,
    1 Langevin MD, 2 random displacement), ``energy`` [F] eV; per atom: ``z``, ``pos`` [A,3] Å,
    ``forces`` [A,3] eV/Å. ``path`` is a shard file or a folder of ``xtb_shard*.npz``.
    Only frames whose kind is in ``kinds`` are kept; kind 0 -> ``equilibrium=True``;
    ``properties['kind']`` keeps the kind. ``mol_id`` is kept as in the file (NOT renumbered),
    so ``xtb_start_sources(path)[cs.mol_id]`` gives each frame's origin. ``exclude_sources``
    drops molecules whose start source matches a glob, e.g. ``("rmd17-*",)``.
    """
    p = _existing(path)
    files = _xtb_files(p)
    excluded_ids = None
    if exclude_sources:
        srcs = xtb_start_sources(p)
        bad = np.array([any(fnmatch.fnmatch(s, pat) for pat in exclude_sources) for s in srcs], dtype=bool)
        excluded_ids = np.flatnonzero(bad)
    parts = [_read_xtb_shard(fp, tuple(int(k) for k in kinds), excluded_ids) for fp in files]
    if len(parts) == 1:
        return _finish(parts[0])
    mol_ids = np.concatenate([q.mol_id for q in parts])
    cs = ConformationSet.concatenate(parts)
    cs.mol_id = mol_ids
    cs.source = f"xtb:{p.name}"
    return _finish(cs)


def _read_xtb_shard(p: Path, kinds: tuple[int, ...], excluded_ids: np.ndarray | None) -> ConformationSet:
    name = p.name
    with _guard(name, "xTB corpus npz"), _open_npz(p, name) as f:
        n_atoms = _get(f, name, "n_atoms", ndim=1, kinds="iu").astype(np.int64)
        n_frames = len(n_atoms)
        mol_id = _get(f, name, "mol_id", ndim=1, kinds="iu").astype(np.int64)
        _check_shape(mol_id, (n_frames,), name, "mol_id", like="n_atoms")
        kind = _get(f, name, "kind", ndim=1, kinds="iu").astype(np.int64)
        _check_shape(kind, (n_frames,), name, "kind", like="n_atoms")
        energy = _get(f, name, "energy", ndim=(1, 2))
        energy = _frame_vector(energy, name, "energy", n_frames)
        z = _get(f, name, "z", ndim=1, kinds="iu").astype(np.int64)
        n_total = int(n_atoms.sum())
        if n_frames and n_atoms.min() < 1:
            raise DataFormatError(f"{name}: key 'n_atoms' has a frame with {int(n_atoms.min())} atoms")
        if len(z) != n_total:
            raise DataFormatError(f"{name}: key 'z' has {len(z)} atoms but 'n_atoms' sums to {n_total}")
        pos = _get(f, name, "pos", ndim=2)
        _check_shape(pos, (n_total, 3), name, "pos", like="z")
        forces = _get(f, name, "forces", ndim=2)
        _check_shape(forces, (n_total, 3), name, "forces", like="pos")
        keep = np.isin(kind, np.asarray(kinds, dtype=np.int64))
        if excluded_ids is not None:
            keep &= ~np.isin(mol_id, excluded_ids)
        atom_keep = np.repeat(keep, n_atoms)
        pos = pos[atom_keep].astype(np.float64)
        forces = forces[atom_keep].astype(np.float64)
        if not np.isfinite(pos).all():
            raise DataFormatError(f"{name}: key 'pos' has non-finite coordinates")
        if not np.isfinite(forces).all():
            raise DataFormatError(f"{name}: key 'forces' has non-finite values")
        _check_finite_frames(energy[keep], name, "energy", "energies")
        kind = kind[keep]
        cs = ConformationSet(
            z=z[atom_keep],
            pos=pos,
            n_atoms=n_atoms[keep],
            energy=energy[keep],
            forces=forces,
            equilibrium=kind == 0,
            mol_id=mol_id[keep],
            properties={"kind": kind},
            source=f"xtb:{name}",
        )
        return cs


def xtb_start_sources(path: PathLike) -> np.ndarray:
    """Per-molecule origin strings of the xTB corpus (``'qm9'``, ``'qm7x'``, ``'rmd17-<mol>'``).

    ``path`` is ``starts.npz``, a shard next to it, or their folder. Index with a corpus
    ``mol_id``: ``xtb_start_sources(p)[cs.mol_id]``.
    """
    p = Path(path)
    if p.is_dir():
        starts = p / "starts.npz"
    elif p.name == "starts.npz":
        starts = p
    else:
        starts = p.parent / "starts.npz"
    starts = _existing(starts)
    name = starts.name
    with _guard(name, "xTB starts npz"), _open_npz(starts, name) as f:
        src = _get(f, name, "source", ndim=1, kinds="U")
        return src.astype(str)


# ============================================================================ HDF5 (ANI-1x, SPICE)
@contextmanager
def _open_h5(p: Path, name: str) -> Iterator[Any]:
    import h5py

    if p.is_dir():
        raise DataFormatError(f"{name}: is a directory, not an HDF5 file")
    try:
        h = h5py.File(p, "r")
    except Exception as e:
        raise DataFormatError(f"{name}: not a readable HDF5 file ({type(e).__name__}: {e})") from e
    try:
        yield h
    finally:
        h.close()


def _h5_molecule_groups(h: Any, marker: str) -> list[tuple[str, Any]]:
    """All groups (recursively, sorted by name) that contain the dataset ``marker``."""
    import h5py

    out: list[tuple[str, Any]] = []

    def visit(g: Any) -> None:
        for key in sorted(g.keys()):
            item = g[key]
            if isinstance(item, h5py.Group):
                if marker in item:
                    out.append((item.name.lstrip("/"), item))
                else:
                    visit(item)

    visit(h)
    return out


def _h5_get(g: Any, name: str, gname: str, key: str, ndim: int | None = None) -> np.ndarray:
    if key not in g:
        raise DataFormatError(f"{name}: group {gname!r}: missing key {key!r} (found: {sorted(g.keys())})")
    try:
        arr = np.asarray(g[key][()])
    except Exception as e:
        raise DataFormatError(
            f"{name}: group {gname!r}: key {key!r} cannot be read ({type(e).__name__}: {e})"
        ) from e
    if arr.dtype.kind not in "biuf":
        raise DataFormatError(f"{name}: group {gname!r}: key {key!r} has dtype {arr.dtype}, expected numeric")
    if ndim is not None and arr.ndim != ndim:
        raise DataFormatError(
            f"{name}: group {gname!r}: key {key!r} has shape {arr.shape}, expected {ndim}-D"
        )
    return arr


def _h5_str(g: Any, key: str) -> str | None:
    if key not in g:
        return None
    v = g[key][()]
    v = np.asarray(v).reshape(-1)
    if v.size == 0:
        return None
    s = v[0]
    return s.decode() if isinstance(s, bytes) else str(s)


def _molecule_frames(
    name: str,
    gname: str,
    z: np.ndarray,
    R: np.ndarray,
    rkey: str,
    E: np.ndarray | None,
    ekey: str | None,
    F: np.ndarray | None,
    fkey: str | None,
) -> np.ndarray:
    """Shape checks for one HDF5 molecule group; returns the mask of frames with finite labels."""
    n_frames = R.shape[0]
    if z.ndim != 1:
        raise DataFormatError(
            f"{name}: group {gname!r}: key 'atomic_numbers' has shape {z.shape}, expected [N]"
        )
    if R.shape != (n_frames, len(z), 3):
        raise DataFormatError(
            f"{name}: group {gname!r}: key {rkey!r} has shape {R.shape}, expected [F, {len(z)}, 3]"
        )
    keep = np.ones(n_frames, dtype=bool)
    if E is not None:
        if E.ndim == 2 and E.shape[1] == 1:
            E = E[:, 0]
        if E.shape != (n_frames,):
            raise DataFormatError(
                f"{name}: group {gname!r}: key {ekey!r} has shape {E.shape}, expected ({n_frames},)"
            )
        keep &= np.isfinite(E)
    if F is not None:
        if F.shape != R.shape:
            raise DataFormatError(
                f"{name}: group {gname!r}: key {fkey!r} has shape {F.shape}, expected {R.shape} like {rkey!r}"
            )
        keep &= np.isfinite(F.reshape(n_frames, -1)).all(axis=1)
    bad = ~np.isfinite(R[keep].reshape(int(keep.sum()), -1)).all(axis=1)
    if bad.any():
        raise DataFormatError(f"{name}: group {gname!r}: key {rkey!r} has non-finite coordinates")
    return keep


def read_ani1x(
    path: PathLike,
    energy_key: str = "wb97x_dz.energy",
    forces_key: str | None = "wb97x_dz.forces",
    max_groups: int | None = None,
) -> ConformationSet:
    """Read the ANI-1x HDF5 release layout.

    One group per formula (e.g. ``C2H6O``, nested groups are searched too) with datasets
    ``atomic_numbers`` [N], ``coordinates`` [F,N,3] Å, ``<level>.energy`` [F] Hartree and
    ``<level>.forces`` [F,N,3] Hartree/Å (``energy_key``/``forces_key`` pick the level, e.g.
    ``'ccsd(t)_cbs.energy'`` with ``forces_key=None``). Frames whose selected energy or forces
    contain NaN (label missing at that level) are dropped. Returns eV, eV/Å;
    ``mol_id`` = group index (a formula group can hold several isomers).
    """
    p = _existing(path)
    name = p.name
    parts = []
    with _guard(name, "ANI-1x HDF5"), _open_h5(p, name) as h:
        groups = _h5_molecule_groups(h, "coordinates")
        if not groups:
            raise DataFormatError(
                f"{name}: no group with key 'coordinates' (top-level keys: {sorted(h.keys())[:20]})"
            )
        for gi, (gname, g) in enumerate(groups[:max_groups] if max_groups is not None else groups):
            z = _h5_get(g, name, gname, "atomic_numbers", ndim=1).astype(np.int64)
            R = _h5_get(g, name, gname, "coordinates", ndim=3)
            E = _h5_get(g, name, gname, energy_key)
            F = _h5_get(g, name, gname, forces_key) if forces_key else None
            keep = _molecule_frames(name, gname, z, R, "coordinates", E, energy_key, F, forces_key)
            if not keep.any():
                continue
            E = E.reshape(-1)[keep].astype(np.float64) * HARTREE_TO_EV
            Fk = None if F is None else F[keep].astype(np.float64) * HARTREE_TO_EV  # Hartree/Å -> eV/Å
            parts.append(_fixed_size_set(z, R[keep].astype(np.float64), E, Fk, f"ani1x:{name}", mol_id=gi))
    if not parts:
        raise DataFormatError(
            f"{name}: no frame has finite {energy_key!r}" + (f"/{forces_key!r}" if forces_key else "")
        )
    return _finish(_join_molecules(parts, f"ani1x:{name}"))


def _join_molecules(parts: list[ConformationSet], source: str) -> ConformationSet:
    """Concatenate per-group sets keeping their (already distinct) mol_ids."""
    mol_ids = np.concatenate([q.mol_id for q in parts])
    cs = ConformationSet.concatenate(parts)
    cs.mol_id = mol_ids
    cs.source = source
    return cs


_SMILES_BRACKET = re.compile(r"\[([^\]]*)\]")
_SMILES_CHARGE = re.compile(r"([+-]+)(\d*)$")


def smiles_formal_charge(smiles: str) -> int:
    """Total formal charge of a SMILES string (sum of the charges in its bracket atoms)."""
    total = 0
    for content in _SMILES_BRACKET.findall(smiles):
        content = content.split(":")[0]  # drop atom-map class
        m = _SMILES_CHARGE.search(content)
        if not m:
            continue
        signs, digits = m.group(1), m.group(2)
        sign = 1 if signs[0] == "+" else -1
        total += sign * (int(digits) if digits else len(signs))
    return total


def read_spice(
    path: PathLike,
    energy_key: str | None = None,
    subsets: Sequence[str] | None = None,
    max_molecules: int | None = None,
) -> ConformationSet:
    """Read the SPICE HDF5 layout (Eastman et al. 2023; versions 1 and 2).

    One group per molecule with ``atomic_numbers`` [N], ``conformations`` [F,N,3] in **bohr**,
    ``dft_total_energy`` and ``formation_energy`` [F] in Hartree, ``dft_total_gradient``
    [F,N,3] in Hartree/bohr, ``smiles`` and optionally ``subset`` (string datasets).
    Returns positions in Å, ``energy`` = ``energy_key`` (default ``dft_total_energy``, or
    ``formation_energy`` if the file has no total energy) in eV, and
    ``forces = -gradient`` in eV/Å. ``properties``: ``formation_energy`` (eV, when present
    and not the energy) and ``charge`` (total formal charge from the SMILES, e).
    ``subsets`` keeps only groups whose ``subset`` matches (case-insensitive substring).
    Frames with non-finite energy or gradient are dropped; ``mol_id`` = group index.
    """
    p = _existing(path)
    name = p.name
    parts = []
    with _guard(name, "SPICE HDF5"), _open_h5(p, name) as h:
        groups = _h5_molecule_groups(h, "conformations")
        if not groups:
            raise DataFormatError(
                f"{name}: no group with key 'conformations' (top-level keys: {sorted(h.keys())[:20]})"
            )
        ekey = energy_key
        if ekey is None:
            g0 = groups[0][1]
            ekey = (
                "dft_total_energy"
                if "dft_total_energy" in g0 or "formation_energy" not in g0
                else "formation_energy"
            )
        wanted = [s.lower() for s in subsets] if subsets is not None else None
        n_used = 0
        for gi, (gname, g) in enumerate(groups):
            if max_molecules is not None and n_used >= max_molecules:
                break
            if wanted is not None:
                sub = (_h5_str(g, "subset") or "").lower()
                if not any(w in sub for w in wanted):
                    continue
            n_used += 1
            z = _h5_get(g, name, gname, "atomic_numbers", ndim=1).astype(np.int64)
            R = _h5_get(g, name, gname, "conformations", ndim=3)
            E = _h5_get(g, name, gname, ekey)
            G = _h5_get(g, name, gname, "dft_total_gradient")
            keep = _molecule_frames(name, gname, z, R, "conformations", E, ekey, G, "dft_total_gradient")
            if not keep.any():
                continue
            nk = int(keep.sum())
            props: dict[str, np.ndarray] = {}
            if ekey != "formation_energy" and "formation_energy" in g:
                fe = _h5_get(g, name, gname, "formation_energy").reshape(-1)
                if fe.shape != (len(keep),):
                    raise DataFormatError(
                        f"{name}: group {gname!r}: key 'formation_energy' has shape {fe.shape}"
                    )
                props["formation_energy"] = fe[keep].astype(np.float64) * HARTREE_TO_EV
            smiles = _h5_str(g, "smiles")
            props["charge"] = np.full(nk, float(smiles_formal_charge(smiles)) if smiles else np.nan)
            parts.append(
                _fixed_size_set(
                    z,
                    R[keep].astype(np.float64) * BOHR_TO_ANGSTROM,
                    E.reshape(-1)[keep].astype(np.float64) * HARTREE_TO_EV,
                    -G[keep].astype(np.float64) * HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM,
                    f"spice:{name}",
                    mol_id=gi,
                    properties=props,
                )
            )
    if not parts:
        raise DataFormatError(
            f"{name}: no molecule with finite {ekey!r} and 'dft_total_gradient' was selected"
        )
    return _finish(_join_molecules(parts, f"spice:{name}"))


# ============================================================================ dispatcher
READERS: dict[str, Callable[..., ConformationSet]] = {
    "rmd17": read_rmd17,
    "md17": read_md17,
    "qm7x": read_qm7x,
    "qm9": read_qm9,
    "xtb": read_xtb_corpus,
    "ani1x": read_ani1x,
    "spice": read_spice,
    "deepmd": read_deepmd,
    "ase_db": read_ase_db,
    "ase": read_ase,
}
_FORMAT_ALIASES = {
    "extxyz": "ase",
    "xyz": "ase",
    "db": "ase_db",
    "ani": "ani1x",
    "xtb_corpus": "xtb",
    "dpdata": "deepmd",
}


def _sniff_npz(p: Path) -> str:
    name = p.name
    with _guard(name, "an .npz archive"), _open_npz(p, name) as f:
        keys = set(f.files)
        if {"nuclear_charges", "coords"} <= keys:
            return "rmd17"
        if {"n_atoms", "mol_id", "kind"} <= keys:
            return "xtb"
        if {"atXYZ", "atNUM"} <= keys:
            return "qm7x"
        if {"R", "z"} <= keys:
            z = _get(f, name, "z", kinds="iu")
            return "qm7x" if z.ndim == 2 else "md17"
        raise DataFormatError(
            f"{name}: cannot tell the npz layout from its keys {sorted(keys)} "
            "(expected rMD17 'nuclear_charges'/'coords', "
            "MD17 'R'/'z'/'E'/'F', QM7-X 'atXYZ'/'atNUM', or xTB 'n_atoms'/'mol_id'/'kind')"
        )


def _sniff_h5(p: Path) -> str:
    name = p.name
    with _guard(name, "an HDF5 file"), _open_h5(p, name) as h:
        if _h5_molecule_groups(h, "conformations"):
            return "spice"
        if _h5_molecule_groups(h, "coordinates"):
            return "ani1x"
        raise DataFormatError(
            f"{name}: no group with key 'conformations' (SPICE) or 'coordinates' (ANI-1x) "
            f"(top-level keys: {sorted(h.keys())[:20]})"
        )


def infer_format(path: PathLike) -> str:
    """Format name (a key of :data:`READERS`) for ``path``, from its extension and contents."""
    p = _existing(path)
    if p.is_dir():
        return "xtb" if list(p.glob("xtb_shard*.npz")) else "deepmd"
    suffix = p.suffix.lower()
    if suffix == ".npz":
        return _sniff_npz(p)
    if suffix in (".h5", ".hdf5", ".hdf"):
        return _sniff_h5(p)
    if suffix == ".db":
        return "ase_db"
    return "ase"


def read_dataset(path: PathLike, format: str | None = None, **kwargs: Any) -> ConformationSet:
    """Read any supported data set; ``format`` is a key of :data:`READERS` or inferred.

    Inference: folder -> DeePMD (or xTB shards); ``.npz`` -> rMD17 / MD17 / QM7-X / xTB from
    the keys; ``.h5``/``.hdf5`` -> SPICE (``conformations``) or ANI-1x (``coordinates``);
    ``.db`` -> ASE database; anything else -> ``ase.io.read``. QM9 files must be read with
    ``format='qm9'`` (or :func:`read_qm9`) to get U0 as energy and eV property units.
    ``kwargs`` go to the reader.
    """
    if format is None:
        fmt = infer_format(path)
    else:
        fmt = _FORMAT_ALIASES.get(format.lower(), format.lower())
        if fmt not in READERS:
            raise ValueError(f"unknown format {format!r}; known: {sorted(READERS)}")
    return READERS[fmt](path, **kwargs)

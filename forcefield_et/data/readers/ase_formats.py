"""ASE readers: ``ase.io.read`` formats (extxyz, xyz, traj, ...) and ASE databases (.db, .json); -> Å, eV, eV/Å."""

from __future__ import annotations

import base64
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np

from ...units import energy_factor, length_factor
from ..conformations import ConformationSet
from ..errors import DataFormatError
from ._common import PathLike, _energy_unit_factor, _existing, _finish, _force_unit_factor, _guard, _length_unit_factor

_SQLITE_MAGIC = b"SQLite format 3\x00"


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
            # a zero lattice vector marks a direction without periodicity (ConformationSet.cell)
            cells.append(np.asarray(row.cell, dtype=np.float64) * l_fac * np.asarray(row.pbc, dtype=bool)[:, None])
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

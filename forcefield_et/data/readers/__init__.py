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

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..conformations import ConformationSet
from ..errors import DataFormatError
from ._common import PathLike, _existing, _get, _guard, _open_npz
from .ase_formats import read_ase, read_ase_db
from .deepmd import read_deepmd
from .hdf5 import _h5_molecule_groups, _open_h5, read_ani1x, read_spice, smiles_formal_charge
from .qm7x import read_qm7x
from .qm9 import QM9_PROPERTY_UNITS, read_qm9
from .rmd17 import read_md17, read_rmd17
from .xtb import read_xtb_corpus, xtb_start_sources

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
    "FORMATS",
    "NATIVE_UNITS",
    "format_reader",
    "smiles_formal_charge",
    "xtb_start_sources",
]


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
# Units of each format's files (the reader converts them to eV and Å); None: the reader takes the
# units as arguments (energy_unit, length_unit).
NATIVE_UNITS: dict[str, dict[str, str] | None] = {
    "rmd17": {"energy": "kcal/mol", "length": "Angstrom"},
    "md17": {"energy": "kcal/mol", "length": "Angstrom"},
    "qm7x": {"energy": "eV", "length": "Angstrom"},
    "qm9": {"energy": "eV", "length": "Angstrom"},
    "xtb": {"energy": "eV", "length": "Angstrom"},
    "ani1x": {"energy": "Hartree", "length": "Angstrom"},
    "spice": {"energy": "Hartree", "length": "bohr"},
    "deepmd": {"energy": "eV", "length": "Angstrom"},
    "ase_db": None,
    "ase": None,
}
# every name a configuration may give as a source's format ("auto": detected from the file)
FORMATS = tuple(sorted(set(READERS) | set(_FORMAT_ALIASES) | {"auto"}))


def format_reader(name: str) -> tuple[Callable[..., ConformationSet], dict[str, str] | None]:
    """(reader function, native units or None) of a format name or alias; ``"auto"`` reads with
    :func:`read_dataset`. Raises ValueError for an unknown name."""
    if name == "auto":
        return read_dataset, None
    canonical = _FORMAT_ALIASES.get(name, name)
    if canonical not in READERS:
        raise ValueError(f"unknown format {name!r}; known: {list(FORMATS)}")
    return READERS[canonical], NATIVE_UNITS[canonical]


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

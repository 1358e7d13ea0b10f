"""QM9 reader (B3LYP/6-31G(2df,p); .xyz or schnetpack ASE db); energies -> eV, other properties in QM9 units."""

from __future__ import annotations

import numpy as np

from ...units import energy_factor
from ..conformations import ConformationSet
from ..errors import DataFormatError
from ._common import PathLike, _energy_unit_factor, _existing, _finish
from .ase_formats import _ase_read, _from_ase_frames, _read_ase_db_impl

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

"""Unit conversion, in one place.

Inside forcefield_et everything is in Å (length) and eV (energy); forces are eV/Å and
stress eV/Å³. Readers and interfaces (OpenMM: nm, kJ/mol) convert at the edge with the
constants below and nowhere else.
"""

from __future__ import annotations

# Energies -> eV
KCAL_PER_MOL_TO_EV = 0.0433641043
KJ_PER_MOL_TO_EV = 0.0103642688
HARTREE_TO_EV = 27.211386245988
EV_TO_KJ_PER_MOL = 1.0 / KJ_PER_MOL_TO_EV

# Lengths -> Å
BOHR_TO_ANGSTROM = 0.529177210903
NM_TO_ANGSTROM = 10.0
ANGSTROM_TO_NM = 0.1

# Forces
KCAL_PER_MOL_PER_ANGSTROM_TO_EV_PER_ANGSTROM = KCAL_PER_MOL_TO_EV
HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM = HARTREE_TO_EV / BOHR_TO_ANGSTROM
EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM = EV_TO_KJ_PER_MOL / ANGSTROM_TO_NM

# Pressure and density (MD at constant pressure)
BAR_TO_EV_PER_ANGSTROM3 = 1e5 / 1.602176634e-19 * 1e-30  # 1 bar = 1e5 Pa = 1e5 J/m^3
EV_PER_ANGSTROM3_TO_BAR = 1.0 / BAR_TO_EV_PER_ANGSTROM3
AMU_PER_ANGSTROM3_TO_G_PER_CM3 = 1.66053906660  # 1 amu = 1.66053906660e-24 g, 1 Å^3 = 1e-24 cm^3

ENERGY_UNITS = {
    "eV": 1.0,
    "meV": 1e-3,
    "kcal/mol": KCAL_PER_MOL_TO_EV,
    "kJ/mol": KJ_PER_MOL_TO_EV,
    "Hartree": HARTREE_TO_EV,
    "Ha": HARTREE_TO_EV,
}
LENGTH_UNITS = {
    "Angstrom": 1.0,
    "Å": 1.0,
    "A": 1.0,
    "nm": NM_TO_ANGSTROM,
    "Bohr": BOHR_TO_ANGSTROM,
    "bohr": BOHR_TO_ANGSTROM,
}


def energy_factor(unit: str) -> float:
    """Factor that converts an energy given in ``unit`` to eV. Raises ValueError if unknown."""
    try:
        return ENERGY_UNITS[unit]
    except KeyError:
        raise ValueError(f"unknown energy unit {unit!r}; known: {sorted(ENERGY_UNITS)}") from None


def length_factor(unit: str) -> float:
    """Factor that converts a length given in ``unit`` to Å. Raises ValueError if unknown."""
    try:
        return LENGTH_UNITS[unit]
    except KeyError:
        raise ValueError(f"unknown length unit {unit!r}; known: {sorted(LENGTH_UNITS)}") from None


def force_factor(energy_unit: str, length_unit: str) -> float:
    """Factor that converts a force in ``energy_unit/length_unit`` to eV/Å."""
    return energy_factor(energy_unit) / length_factor(length_unit)

"""The unit constants agree with ASE's CODATA 2014 units (to their stated precision), the derived
constants follow from the base ones, and unknown unit names are refused with the known ones listed."""

from __future__ import annotations

import pytest
from ase import units as ase_units

from forcefield_et import units


@pytest.mark.parametrize(("ours", "ase_value"), [
    (units.KCAL_PER_MOL_TO_EV, ase_units.kcal / ase_units.mol),
    (units.KJ_PER_MOL_TO_EV, ase_units.kJ / ase_units.mol),
    (units.HARTREE_TO_EV, ase_units.Hartree),
    (units.BOHR_TO_ANGSTROM, ase_units.Bohr),
    (units.NM_TO_ANGSTROM, ase_units.nm),
    (units.BAR_TO_EV_PER_ANGSTROM3, ase_units.bar),
    (units.AMU_PER_ANGSTROM3_TO_G_PER_CM3, 1e24 / ase_units._Nav),  # amu/Å^3 in g/cm^3: 1e24 Å^3 per cm^3
])
def test_constants_agree_with_ase(ours, ase_value):
    assert ours == pytest.approx(ase_value, rel=2e-7)  # CODATA 2014 against 2018 differ below that


def test_derived_constants_are_consistent():
    assert units.EV_TO_KJ_PER_MOL * units.KJ_PER_MOL_TO_EV == pytest.approx(1.0, rel=1e-15)
    assert units.ANGSTROM_TO_NM * units.NM_TO_ANGSTROM == 1.0
    assert units.HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM == pytest.approx(51.422067476, rel=1e-9)  # CODATA 2018
    # 1 eV/Å = 96.485 kJ/mol/Å = 964.85 kJ/mol/nm
    assert units.EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM == pytest.approx(10 * ase_units.mol / ase_units.kJ, rel=2e-7)
    assert units.EV_PER_ANGSTROM3_TO_BAR * units.BAR_TO_EV_PER_ANGSTROM3 == pytest.approx(1.0, rel=1e-15)


def test_unit_names_give_factors_to_ev_and_angstrom():
    assert units.energy_factor("Ha") == units.energy_factor("Hartree") == units.HARTREE_TO_EV
    assert units.length_factor("Å") == units.length_factor("Angstrom") == 1.0
    assert units.force_factor("kcal/mol", "Angstrom") == units.KCAL_PER_MOL_PER_ANGSTROM_TO_EV_PER_ANGSTROM
    assert units.force_factor("Hartree", "Bohr") == pytest.approx(units.HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM)
    assert units.force_factor("meV", "nm") == pytest.approx(1e-4)


@pytest.mark.parametrize(("function", "name"), [(units.energy_factor, "kcal"), (units.length_factor, "pm")])
def test_unknown_units_are_refused_with_the_known_ones_listed(function, name):
    with pytest.raises(ValueError, match=f"unknown .* unit '{name}'; known: "):
        function(name)

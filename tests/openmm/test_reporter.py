"""forcefield_et.openmm.BondCheckReporter: bonds watched in an OpenMM Simulation (nm at the edge, Å inside)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.openmm.conftest import require_openmm


def _water_simulation(pull_kj_mol_nm: float = 0.0, box_nm: float | None = None, shift_nm=(0.0, 0.0, 0.0),
                      topology_bonds=("H1", "H2")):
    """One water molecule with harmonic O-H bonds (0.0957 nm), a constant pull on H1 along +x,
    optionally in a periodic box; Reference platform, Langevin at 300 K, 0.5 fs. The topology
    holds the O-H bonds of the hydrogens named in ``topology_bonds``."""
    openmm = require_openmm()
    from openmm import app, unit

    topology = app.Topology()
    residue = topology.addResidue("HOH", topology.addChain())
    oxygen = topology.addAtom("O", app.Element.getBySymbol("O"), residue)
    for name in ("H1", "H2"):
        hydrogen = topology.addAtom(name, app.Element.getBySymbol("H"), residue)
        if name in topology_bonds:
            topology.addBond(oxygen, hydrogen)
    system = openmm.System()
    for mass in (15.999, 1.008, 1.008):
        system.addParticle(mass)
    bonds = openmm.HarmonicBondForce()
    bonds.addBond(0, 1, 0.0957, 2.0e5)
    bonds.addBond(0, 2, 0.0957, 2.0e5)
    angle = openmm.HarmonicAngleForce()
    angle.addAngle(1, 0, 2, np.deg2rad(104.5), 300.0)
    system.addForce(bonds)
    system.addForce(angle)
    if pull_kj_mol_nm:
        pull = openmm.CustomExternalForce("-f*x")
        pull.addGlobalParameter("f", pull_kj_mol_nm)
        pull.addParticle(1, [])
        system.addForce(pull)
    positions = np.array([[0.0, 0.0, 0.0], [0.0957, 0.0, 0.0], [-0.024, 0.0927, 0.0]]) + np.asarray(shift_nm)
    if box_nm is not None:
        for force in (bonds, angle):
            force.setUsesPeriodicBoundaryConditions(True)
        system.setDefaultPeriodicBoxVectors(*(np.eye(3) * box_nm))
        topology.setPeriodicBoxVectors(np.eye(3) * box_nm * unit.nanometer)
        positions = positions % box_nm  # wrapped: a bond may cross the boundary
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 5 / unit.picosecond, 0.5 * unit.femtosecond)
    integrator.setRandomNumberSeed(1)
    simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(positions * unit.nanometer)
    return simulation


def test_reporter_stops_the_simulation_when_a_bond_breaks(tmp_path):
    from forcefield_et.openmm import BondCheckReporter, BrokenBondError

    # 5e4 kJ/mol/nm against k = 2e5 kJ/mol/nm²: the O-H bond settles 0.25 nm (2.5 Å) longer
    simulation = _water_simulation(pull_kj_mol_nm=5.0e4)
    reporter = BondCheckReporter(10, max_bond_change=0.5, file=tmp_path / "bonds.csv")
    simulation.reporters.append(reporter)
    with pytest.raises(BrokenBondError, match=r"a bond changed by .* > 0.5 Å: O0-H1") as caught:
        simulation.step(2000)
    assert caught.value.step == simulation.currentStep < 2000 and caught.value.step % 10 == 0
    assert [b["atoms"] for b in caught.value.changes["stretched"]] == [[0, 1]]
    assert reporter.bonds.tolist() == [[0, 1], [0, 2]] and reporter.max_change_A > 0.5
    reporter.close()
    rows = (tmp_path / "bonds.csv").read_text().splitlines()
    assert rows[0] == "step,time_ps,max_bond_change_A" and len(rows) == caught.value.step // 10 + 1
    assert float(rows[-1].split(",")[2]) > 0.5


def test_reporter_measures_a_quiet_periodic_run_through_the_boundary():
    from forcefield_et.openmm import BondCheckReporter

    simulation = _water_simulation(box_nm=1.2, shift_nm=(0.01, 0.6, 0.6))  # the second H starts at x < 0: wrapped
    reporter = BondCheckReporter(10, max_bond_change=0.5)
    simulation.reporters.append(reporter)
    simulation.step(200)
    assert reporter.bonds.tolist() == [[0, 1], [0, 2]]  # the O-H2 bond is found through the boundary
    assert 0.0 < reporter.max_change_A < 0.1


def test_reporter_can_take_the_bonds_from_the_topology():
    from forcefield_et.openmm import BondCheckReporter, BrokenBondError

    simulation = _water_simulation(pull_kj_mol_nm=5.0e4, topology_bonds=("H1",))
    reporter = BondCheckReporter(10, max_bond_change=0.5, bonds_from="topology")
    simulation.reporters.append(reporter)
    with pytest.raises(BrokenBondError, match="O0-H1"):
        simulation.step(2000)
    assert reporter.bonds.tolist() == [[0, 1]]  # the topology's one bond; covalent radii would add O0-H2

    bare = _water_simulation(topology_bonds=())
    bare.reporters.append(BondCheckReporter(10, bonds_from="topology"))
    with pytest.raises(ValueError, match="the topology has no bonds"):
        bare.step(10)


def test_reporter_rejects_bad_settings():
    from forcefield_et.openmm import BondCheckReporter

    with pytest.raises(ValueError, match="report_interval must be >= 1"):
        BondCheckReporter(0)
    with pytest.raises(ValueError, match="max_bond_change must be a positive length"):
        BondCheckReporter(10, max_bond_change=-1.0)
    with pytest.raises(ValueError, match="bonds_from must be 'positions' or 'topology'"):
        BondCheckReporter(10, bonds_from="residues")


def _free_aspirin_simulation():
    """Aspirin from the bundled PDB with no forces at all (atoms drift at 300 K): a geometry for the
    reporters to read; Reference platform, Langevin, 0.5 fs."""
    openmm = require_openmm()
    from openmm import app, unit

    from tests.openmm.conftest import ASPIRIN_PDB

    pdb = app.PDBFile(str(ASPIRIN_PDB))
    system = openmm.System()
    for atom in pdb.topology.atoms():
        system.addParticle(atom.element.mass)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 5 / unit.picosecond, 0.5 * unit.femtosecond)
    integrator.setRandomNumberSeed(2)
    simulation = app.Simulation(pdb.topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(pdb.positions)
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, 3)
    return simulation


COMMITTEE = ["pretrained", "rmd17-aspirin"]  # bundled models of one architecture


def test_force_std_reporter_reports_the_committee_std_of_the_current_positions(tmp_path):
    from ase import Atoms
    from openmm import unit

    from forcefield_et import ETCalculator
    from forcefield_et.openmm import ForceStdReporter

    simulation = _free_aspirin_simulation()
    reporter = ForceStdReporter(COMMITTEE, 5, file=tmp_path / "std.csv")
    simulation.reporters.append(reporter)
    simulation.step(10)
    reporter.close()
    rows = (tmp_path / "std.csv").read_text().splitlines()
    assert rows[0] == "step,time_ps,max_force_std_eV_A" and [r.split(",")[0] for r in rows[1:]] == ["5", "10"]
    positions = simulation.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.angstrom)
    atoms = Atoms(numbers=[a.element.atomic_number for a in simulation.topology.atoms()], positions=positions)
    atoms.calc = ETCalculator(COMMITTEE, device="cpu")
    expected = float(atoms.calc.get_property("forces_std", atoms).max())
    assert reporter.last_max_force_std == pytest.approx(expected, rel=1e-5)
    assert float(rows[-1].split(",")[2]) == pytest.approx(expected, rel=1e-4)
    assert reporter.max_force_std_seen >= reporter.last_max_force_std > 0


def test_force_std_reporter_stops_the_simulation_beyond_the_limit():
    from forcefield_et.openmm import ForceStdReporter, UncertainForcesError

    simulation = _free_aspirin_simulation()
    simulation.reporters.append(ForceStdReporter(COMMITTEE, 5, max_force_std=1e-4))
    with pytest.raises(UncertainForcesError, match="above max_force_std") as caught:
        simulation.step(20)
    assert caught.value.step == 5 and simulation.currentStep == 5 and caught.value.force_std > 1e-4
    with pytest.raises(ValueError, match="needs a committee"):
        ForceStdReporter("pretrained", 5)


def test_python_force_with_a_committee_drives_openmm_with_the_committee_mean():
    openmm = require_openmm()
    if not hasattr(openmm, "PythonForce"):
        pytest.skip("openmm.PythonForce needs OpenMM >= 8.5")
    from openmm import unit

    from forcefield_et import ETCalculator, load_committee
    from forcefield_et.openmm import python_force
    from forcefield_et.units import EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM, EV_TO_KJ_PER_MOL

    simulation = _free_aspirin_simulation()
    numbers = [a.element.atomic_number for a in simulation.topology.atoms()]
    system = openmm.System()
    for atom in simulation.topology.atoms():
        system.addParticle(atom.element.mass)
    system.addForce(python_force(load_committee(COMMITTEE), numbers))
    context = openmm.Context(system, openmm.VerletIntegrator(0.0005), openmm.Platform.getPlatformByName("Reference"))
    positions = simulation.context.getState(getPositions=True).getPositions(asNumpy=True)
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True)
    from ase import Atoms

    atoms = Atoms(numbers=numbers, positions=positions.value_in_unit(unit.angstrom))
    atoms.calc = ETCalculator(COMMITTEE, device="cpu")
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / EV_TO_KJ_PER_MOL
    assert energy == pytest.approx(atoms.get_potential_energy(), abs=1e-3)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    np.testing.assert_allclose(forces / EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM, atoms.get_forces(), atol=1e-4)


def test_torch_force_refuses_a_committee_with_a_clear_error():
    from tests.openmm.conftest import require_openmmtorch

    require_openmmtorch()
    from forcefield_et import load_committee
    from forcefield_et.openmm import torch_force

    with pytest.raises(ValueError, match="python_force"):
        torch_force(load_committee(COMMITTEE), [6, 1])

"""OpenMM integration: TorchForce, PythonForce and the openmm-ml plugin agree with the bare potential.

TorchForce tests skip (with the exact error) when openmmtorch cannot be loaded; in the reference
environment (torch 2.9.1, openmm 8.6.1, openmm-torch 1.5) they all run.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from forcefield_et.openmm import OpenMMModule, python_force, torch_force
from forcefield_et.units import ANGSTROM_TO_NM, EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM, EV_TO_KJ_PER_MOL

from .conftest import require_openmm, require_openmmml, require_openmmtorch

RTOL = 1e-5


def _reference(model, z, pos, cell=None):
    """(energy kJ/mol, forces [N, 3] kJ/mol/nm) from the bare float64 potential."""
    out = model(z, pos, cell=None if cell is None else cell.unsqueeze(0))
    energy = float(out["energy"].detach().sum()) * EV_TO_KJ_PER_MOL
    return energy, out["forces"].detach().numpy() * EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM


def _evaluate_system(system, positions_angstrom, platform="Reference", groups=-1):
    """(energy kJ/mol, forces [N, 3] kJ/mol/nm) of ``system`` at ``positions_angstrom``."""
    openmm = require_openmm()
    from openmm import unit

    platform = openmm.Platform.getPlatformByName(platform)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform)
    context.setPositions(np.asarray(positions_angstrom) * ANGSTROM_TO_NM)
    state = context.getState(getEnergy=True, getForces=True, groups=groups)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    return energy, np.asarray(forces)


def _evaluate(force, positions_angstrom, platform="Reference", box_angstrom=None):
    """(energy kJ/mol, forces [N, 3] kJ/mol/nm) of a System of unit-mass particles holding ``force``."""
    openmm = require_openmm()
    system = openmm.System()
    for _ in range(len(positions_angstrom)):
        system.addParticle(1.0)
    if box_angstrom is not None:
        vectors = np.asarray(box_angstrom) * ANGSTROM_TO_NM
        system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) for row in vectors))
    system.addForce(force)
    return _evaluate_system(system, positions_angstrom, platform)


def _assert_agree(energy, forces, ref_energy, ref_forces, rtol=RTOL):
    assert abs(energy - ref_energy) <= rtol * max(abs(ref_energy), 1.0), (energy, ref_energy)
    scale = max(float(np.abs(ref_forces).max()), 1.0)
    assert float(np.abs(forces - ref_forces).max()) <= rtol * scale


def _make_force(kind, model, numbers, **kwargs):
    if kind == "torchforce":
        require_openmmtorch()
        return torch_force(model, numbers, **kwargs)
    openmm = require_openmm()
    if not hasattr(openmm, "PythonForce"):
        pytest.skip(f"openmm {openmm.__version__} has no PythonForce (needs >= 8.5)")
    return python_force(model, numbers, **kwargs)


@pytest.mark.parametrize(
    "kind, platform",
    [(kind, platform) for kind in ("torchforce", "pythonforce") for platform in ("Reference", "CPU")],
)
def test_aspirin_agrees_with_potential_float64(kind, platform, small_model, aspirin_frame):
    z, pos = aspirin_frame
    ref_energy, ref_forces = _reference(small_model, z, pos)
    force = _make_force(kind, small_model, z.tolist(), dtype="float64")
    energy, forces = _evaluate(force, pos.numpy(), platform=platform)
    _assert_agree(energy, forces, ref_energy, ref_forces)


def test_float32_module_is_close_to_float64(small_model, aspirin_frame):
    z, pos = aspirin_frame
    ref_energy, ref_forces = _reference(small_model, z, pos)
    module = OpenMMModule(small_model, z, dtype="float32")
    energy, forces = module(pos * ANGSTROM_TO_NM)
    assert energy.dtype == torch.float64 and forces.dtype == torch.float64  # back to the input dtype
    _assert_agree(float(energy), forces.numpy(), ref_energy, ref_forces, rtol=1e-4)
    assert next(small_model.parameters()).dtype == torch.float64  # the wrapped model is a copy


@pytest.mark.parametrize("kind", ["torchforce", "pythonforce"])
def test_water_box_periodic_agrees_with_cell(kind, small_model, water_box):
    z, pos, cell = water_box
    ref_energy, ref_forces = _reference(small_model, z, pos, cell)
    # Move one water by a lattice vector: OpenMM may pass unwrapped positions; the energy must not change.
    shifted = pos.clone()
    shifted[:3] += cell[0] - cell[2]
    for positions in (pos, shifted):
        force = _make_force(kind, small_model, z.tolist(), periodic=True, dtype="float64")
        assert force.usesPeriodicBoundaryConditions()
        energy, forces = _evaluate(force, positions.numpy(), platform="CPU", box_angstrom=cell.numpy())
        _assert_agree(energy, forces, ref_energy, ref_forces)


def test_scripted_module_saves_and_loads(tmp_path, small_model, aspirin_frame):
    openmmtorch = require_openmmtorch()
    z, pos = aspirin_frame
    ref_energy, ref_forces = _reference(small_model, z, pos)
    path = tmp_path / "module.pt"
    torch.jit.save(torch.jit.script(OpenMMModule(small_model, z, dtype="float64")), str(path))
    loaded = torch.jit.load(str(path))
    energy, forces = loaded(pos * ANGSTROM_TO_NM)
    _assert_agree(float(energy), forces.numpy(), ref_energy, ref_forces)
    force = openmmtorch.TorchForce(str(path))
    force.setOutputsForces(True)
    energy, forces = _evaluate(force, pos.numpy())
    _assert_agree(energy, forces, ref_energy, ref_forces)


@pytest.mark.parametrize("kind", ["torchforce", "pythonforce"])
def test_ml_subset_gives_zero_force_elsewhere(kind, small_model, aspirin_frame):
    z, pos = aspirin_frame
    # Two aspirins 2 nm apart; only the second (particles 21..41) is ML.
    positions = torch.cat([pos, pos + torch.tensor([20.0, 0.0, 0.0], dtype=pos.dtype)])
    numbers = z.tolist() * 2
    subset = list(range(len(z), 2 * len(z)))
    ref_energy, ref_forces = _reference(small_model, z, pos)
    force = _make_force(kind, small_model, numbers, atom_indices=subset, dtype="float64")
    energy, forces = _evaluate(force, positions.numpy())
    assert np.all(forces[: len(z)] == 0.0)
    _assert_agree(energy, forces[len(z):], ref_energy, ref_forces)


def test_module_rejects_wrong_particle_count(small_model, aspirin_frame):
    z, pos = aspirin_frame
    module = OpenMMModule(small_model, z, dtype="float64")
    with pytest.raises(ValueError, match="atom_indices"):
        module(torch.zeros(len(z) + 1, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="atom_indices"):
        OpenMMModule(small_model, z, atom_indices=[0, 1], dtype="float64")


def test_unsupported_element_is_named(small_model):
    with pytest.raises(ValueError, match=r"Na \(Z=11\)"):
        python_force(small_model, [1, 8, 11])


def test_import_error_has_install_hint(monkeypatch, small_model):
    monkeypatch.setitem(sys.modules, "openmmtorch", None)  # makes `import openmmtorch` fail
    with pytest.raises(ImportError, match=r'pip install "forcefield-et\[openmm\]"'):
        torch_force(small_model, [1, 1])
    monkeypatch.setitem(sys.modules, "openmm", None)
    with pytest.raises(ImportError, match="torch 2.9.1"):
        python_force(small_model, [1, 1])


# --------------------------------------------------------------------------- openmm-ml plugin


def _langevin():
    """LangevinMiddleIntegrator at 300 K, friction 1/ps, 0.5 fs."""
    openmm = require_openmm()
    from openmm import unit

    return openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1.0 / unit.picosecond, 0.5 * unit.femtosecond)


def test_plugin_is_registered_by_entry_point():
    MLPotential = require_openmmml()
    from forcefield_et.openmm.mlpotential import ForceFieldETPotentialImplFactory

    assert isinstance(MLPotential._implFactories.get("forcefield-et"), ForceFieldETPotentialImplFactory)


@pytest.mark.parametrize("implementation", ["torchforce", "pythonforce"])
def test_mlpotential_create_system_matches_potential(implementation, small_model_file, aspirin_pdb):
    MLPotential = require_openmmml()
    if implementation == "torchforce":
        require_openmmtorch()
    openmm = require_openmm()
    from openmm import unit

    from forcefield_et import load_model

    potential = MLPotential(
        "forcefield-et", model=str(small_model_file), dtype="float64", implementation=implementation
    )
    system = potential.createSystem(aspirin_pdb.topology)
    ml_forces = [f for f in system.getForces() if not isinstance(f, openmm.CMMotionRemover)]
    assert len(ml_forces) == 1 and not ml_forces[0].usesPeriodicBoundaryConditions()
    expected_type = "TorchForce" if implementation == "torchforce" else "PythonForce"
    assert ml_forces[0].getName() == expected_type
    pos = aspirin_pdb.getPositions(asNumpy=True).value_in_unit(unit.angstrom)
    z = torch.tensor([a.element.atomic_number for a in aspirin_pdb.topology.atoms()], dtype=torch.long)
    ref_energy, ref_forces = _reference(load_model(small_model_file, dtype="float64"), z, torch.tensor(pos))
    energy, forces = _evaluate_system(system, pos)
    _assert_agree(energy, forces, ref_energy, ref_forces)


def test_mlpotential_runs_a_committee_as_its_members_mean(tmp_path, small_model_file, aspirin_pdb):
    MLPotential = require_openmmml()
    from openmm import unit

    from forcefield_et import build_model, load_model, save_checkpoint

    torch.manual_seed(1)
    other = save_checkpoint(tmp_path / "other.pt", build_model(hidden_channels=32, num_layers=2, num_heads=4,
                                                               num_rbf=16).eval())
    members = [str(small_model_file), str(other)]
    system = MLPotential("forcefield-et", model=members, dtype="float64").createSystem(aspirin_pdb.topology)
    assert [f.getName() for f in system.getForces() if f.getName() in ("PythonForce", "TorchForce")] == [
        "PythonForce"]  # a committee runs in a PythonForce even where openmm-torch is installed
    pos = aspirin_pdb.getPositions(asNumpy=True).value_in_unit(unit.angstrom)
    z = torch.tensor([a.element.atomic_number for a in aspirin_pdb.topology.atoms()], dtype=torch.long)
    references = [_reference(load_model(m, dtype="float64"), z, torch.tensor(pos)) for m in members]
    energy, forces = _evaluate_system(system, pos)
    _assert_agree(energy, forces, float(np.mean([e for e, _ in references])),
                  np.mean([f for _, f in references], axis=0))
    with pytest.raises(ValueError, match="a committee runs with implementation='pythonforce'"):
        MLPotential("forcefield-et", model=members, implementation="torchforce").createSystem(aspirin_pdb.topology)


def test_mlpotential_langevin_1000_steps_finite(small_model_file, aspirin_pdb):
    MLPotential = require_openmmml()
    openmm = require_openmm()
    from openmm import unit

    system = MLPotential("forcefield-et", model=str(small_model_file)).createSystem(aspirin_pdb.topology)
    integrator = _langevin()
    integrator.setRandomNumberSeed(1)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(aspirin_pdb.positions)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    integrator.step(1000)
    state = context.getState(getEnergy=True, getPositions=True)
    assert math.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    assert math.isfinite(state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole))
    assert np.isfinite(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)).all()


def test_mlpotential_rejects_unsupported_elements(small_model_file):
    MLPotential = require_openmmml()
    from openmm import app

    topology = app.Topology()
    residue = topology.addResidue("ION", topology.addChain())
    topology.addAtom("NA", app.element.sodium, residue)
    topology.addAtom("O", app.element.oxygen, residue)
    with pytest.raises(ValueError, match=r"Na \(Z=11\)"):
        MLPotential("forcefield-et", model=str(small_model_file)).createSystem(topology)


def _aspirin_nonbonded_xml(topology) -> str:
    """A force-field template for the aspirin residue (AIN) with dummy nonbonded parameters
    (zero charges, generic Lennard-Jones) and no bonded terms: the ML potential replaces its
    intramolecular energy, and the MM force field only needs to describe aspirin-water contacts."""
    lj = {"C": (0.34, 0.36), "O": (0.30, 0.71), "H": (0.25, 0.07)}  # sigma nm, epsilon kJ/mol
    residue = next(topology.residues())
    atoms = "".join(f'<Atom name="{a.name}" type="AIN-{a.element.symbol}"/>' for a in residue.atoms())
    bonds = "".join(f'<Bond atomName1="{b[0].name}" atomName2="{b[1].name}"/>' for b in topology.bonds())
    types = "".join(
        f'<Type name="AIN-{s}" class="AIN-{s}" element="{s}" mass="{m}"/>'
        for s, m in (("C", 12.011), ("O", 15.999), ("H", 1.008))
    )
    nonbonded = "".join(
        f'<Atom type="AIN-{s}" charge="0" sigma="{sig}" epsilon="{eps}"/>' for s, (sig, eps) in lj.items()
    )
    return (
        f"<ForceField><AtomTypes>{types}</AtomTypes>"
        f'<Residues><Residue name="AIN">{atoms}{bonds}</Residue></Residues>'
        f'<NonbondedForce coulomb14scale="0.8333333333333334" lj14scale="0.5">{nonbonded}</NonbondedForce>'
        "</ForceField>"
    )


@pytest.mark.parametrize("implementation", ["torchforce", "pythonforce"])
def test_mixed_system_aspirin_in_tip3p_water(implementation, tmp_path, small_model_file, aspirin_pdb):
    """ML aspirin in a periodic TIP3P box (amber14/tip3p.xml), mechanical embedding, 20 steps."""
    MLPotential = require_openmmml()
    if implementation == "torchforce":
        require_openmmtorch()
    openmm = require_openmm()
    from openmm import app, unit

    xml = tmp_path / "aspirin_dummy.xml"
    xml.write_text(_aspirin_nonbonded_xml(aspirin_pdb.topology))
    forcefield = app.ForceField("amber14/tip3p.xml", str(xml))
    modeller = app.Modeller(aspirin_pdb.topology, aspirin_pdb.positions)
    modeller.addSolvent(forcefield, model="tip3p", boxSize=openmm.Vec3(2.0, 2.0, 2.0) * unit.nanometer)
    n_water = sum(1 for r in modeller.topology.residues() if r.name == "HOH")
    assert 150 < n_water < 300
    mm_system = forcefield.createSystem(
        modeller.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.8 * unit.nanometer, rigidWater=True
    )
    ml_atoms = [a.index for a in modeller.topology.atoms() if a.residue.name == "AIN"]
    assert ml_atoms == list(range(21))
    potential = MLPotential("forcefield-et", model=str(small_model_file), dtype="float64")
    system = potential.createMixedSystem(
        modeller.topology, mm_system, ml_atoms, forceGroup=1, implementation=implementation
    )
    ml_force = [f for f in system.getForces() if f.getForceGroup() == 1]
    assert len(ml_force) == 1 and ml_force[0].usesPeriodicBoundaryConditions()

    integrator = _langevin()
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(modeller.positions)

    # The 2 nm box keeps aspirin > 0.5 nm (the cutoff) from its periodic images, so the ML
    # energy and forces are those of the isolated molecule; water atoms get no ML force.
    from forcefield_et import load_model

    z = torch.tensor([a.element.atomic_number for a in aspirin_pdb.topology.atoms()], dtype=torch.long)
    pos = torch.tensor(modeller.getPositions().value_in_unit(unit.angstrom)[:21], dtype=torch.float64)
    ref_energy, ref_forces = _reference(load_model(small_model_file, dtype="float64"), z, pos)
    state = context.getState(getEnergy=True, getForces=True, groups={1})
    ml_energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    ml_forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    ml_forces = np.asarray(ml_forces)
    assert np.all(ml_forces[21:] == 0.0)
    _assert_agree(ml_energy, ml_forces[:21], ref_energy, ref_forces)

    integrator.step(20)
    state = context.getState(getEnergy=True, getPositions=True)
    assert math.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    assert np.isfinite(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)).all()


def test_pythonforce_system_interpolates_and_serialises(small_model_file, aspirin_pdb):
    """PythonForce pickles its callback: XmlSerializer round trips and interpolate=True work.

    (With openmm-torch 1.5 + openmm 8.6.1 here, copying or deserialising any TorchForce
    segfaults inside the plugin, so these two features need implementation="pythonforce".)"""
    MLPotential = require_openmmml()
    openmm = require_openmm()
    from openmm import unit

    potential = MLPotential("forcefield-et", model=str(small_model_file), implementation="pythonforce")
    topology = aspirin_pdb.topology
    mm_system = openmm.System()
    nonbonded = openmm.NonbondedForce()
    for atom in topology.atoms():
        mm_system.addParticle(atom.element.mass)
        nonbonded.addParticle(0.0, 0.3, 0.1)
    mm_system.addForce(nonbonded)
    mixed = potential.createMixedSystem(topology, mm_system, list(range(21)), interpolate=True)
    xml = openmm.XmlSerializer.serialize(potential.createSystem(topology))
    restored = openmm.XmlSerializer.deserialize(xml)

    energies = []
    for system, lam in ((mixed, 0.0), (mixed, 1.0), (restored, None)):
        platform = openmm.Platform.getPlatformByName("CPU")
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform)
        context.setPositions(aspirin_pdb.positions)
        if lam is not None:
            context.setParameter("lambda_interpolate", lam)
        energy = context.getState(getEnergy=True).getPotentialEnergy()
        energies.append(energy.value_in_unit(unit.kilojoule_per_mole))
    assert all(math.isfinite(e) for e in energies)
    assert energies[0] != pytest.approx(energies[1])  # lambda switches MM -> ML
    assert energies[1] == pytest.approx(energies[2], rel=1e-6)  # ML energy survives the XML round trip


@pytest.mark.parametrize("kind", ["torchforce", "pythonforce"])
def test_forces_set_the_thread_count(kind, small_model, monkeypatch):
    from forcefield_et import runtime

    monkeypatch.setattr(runtime, "_user_set_threads", False)  # earlier tests may have set torch's count
    monkeypatch.setattr(runtime, "_threads_set_here", None)
    monkeypatch.setattr(runtime, "_torch_threads_at_import", torch.get_num_threads())
    before = torch.get_num_threads()
    positions = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    try:
        force = _make_force(kind, small_model, [8, 1, 1], dtype="float64", threads=2)
        _evaluate(force, positions)
        assert torch.get_num_threads() == 2  # explicit threads=
        force = _make_force(kind, small_model, [8, 1, 1], dtype="float64")
        _evaluate(force, positions)
        assert torch.get_num_threads() == 1  # the rule for 3 ML atoms
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            _make_force(kind, small_model, [8, 1, 1], threads=-1)
    finally:
        torch.set_num_threads(before)

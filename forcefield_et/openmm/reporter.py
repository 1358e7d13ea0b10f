"""OpenMM reporters: :class:`BondCheckReporter` watches the covalent bonds of a simulation (the ASE
side's ``forcefield-et md --max-bond-change``); :class:`ForceStdReporter` reports a committee's
largest per-atom force std (``forcefield-et md --max-force-std``). Both go in ``Simulation.reporters``.

A machine-learned potential can pull a molecule apart without any error from OpenMM: energies
stay finite while a bond stretches to 2 Å. :class:`BondCheckReporter` takes the bonds of the
structure the simulation starts from (:mod:`forcefield_et.bonds`: covalent radii, minimum image under
PBC), and at every report measures the largest change of their lengths. Beyond
``max_bond_change`` it raises :class:`BrokenBondError`, which ends ``Simulation.step`` there,
naming the bonds that changed. Units: OpenMM's nm become Å at this edge (``forcefield_et.units``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple, Union

import numpy as np

from ..bonds import BondWatch
from ..units import NM_TO_ANGSTROM


class BrokenBondError(RuntimeError):
    """A bond changed length by more than the reporter's ``max_bond_change``. ``step`` is the
    simulation step and ``changes`` the :func:`forcefield_et.bonds.bond_changes` dict."""

    def __init__(self, message: str, step: int, changes: Dict[str, Any]) -> None:
        super().__init__(message)
        self.step = step
        self.changes = changes


class _CsvLogReporter:
    """The optional CSV log shared by the reporters: ``step,time_ps,<column>``, one row per report,
    flushed as it is written (the file is opened when the simulation first reports)."""

    _log_column = ""

    def __init__(self, file: Union[str, Path, None]) -> None:
        self._handle: Any = None
        self._path = Path(file) if file is not None else None

    def _open_log(self) -> None:
        if self._path is not None:
            self._handle = open(self._path, "w")  # noqa: SIM115 (kept open for the run, like OpenMM's reporters)
            self._handle.write(f"step,time_ps,{self._log_column}\n")

    def _log_row(self, step: int, state: Any, value: float) -> None:
        if self._handle is not None:
            from openmm import unit

            self._handle.write(f"{step},{state.getTime().value_in_unit(unit.picosecond):.6f},{value:.6f}\n")
            self._handle.flush()

    def close(self) -> None:
        """Close the CSV file (also done when the reporter is garbage-collected)."""
        if getattr(self, "_handle", None) is not None:
            self._handle.close()
            self._handle = None

    def __del__(self) -> None:
        self.close()


class BondCheckReporter(_CsvLogReporter):
    """Checks the bonds every ``report_interval`` steps.

    Args:
        report_interval: steps between checks.
        max_bond_change: Å; a larger change of any bond length raises :class:`BrokenBondError`
            (MDsim's collapse criterion is 0.5). None: only measure.
        file: optional CSV path; one row per check: step, time (ps), largest bond change (Å).
        bonds_from: ``"positions"`` (default: covalent radii on the starting structure, as
            ``forcefield-et md`` and the MD benchmark do) or ``"topology"`` (``Topology.bonds()``,
            e.g. from a PDB file's CONECT records or residue templates).

    ``max_change_A`` holds the largest change seen so far and ``bonds`` the checked pairs [B, 2]
    (0-based atom indices), found on the positions of the context when the simulation first
    consults the reporter, i.e. before its first step.
    """

    _log_column = "max_bond_change_A"

    def __init__(self, report_interval: int, max_bond_change: float | None = 0.5,
                 file: Union[str, Path, None] = None, bonds_from: str = "positions") -> None:
        super().__init__(file)
        if int(report_interval) < 1:
            raise ValueError(f"BondCheckReporter: report_interval must be >= 1, got {report_interval}")
        if max_bond_change is not None and not max_bond_change > 0:
            raise ValueError(
                f"BondCheckReporter: max_bond_change must be a positive length in Å, got {max_bond_change}")
        if bonds_from not in ("positions", "topology"):
            raise ValueError(f"BondCheckReporter: bonds_from must be 'positions' or 'topology', got {bonds_from!r}")
        self.bonds_from = bonds_from
        self.report_interval = int(report_interval)
        self.max_bond_change = max_bond_change
        self.max_change_A = 0.0
        self._watch: BondWatch | None = None
        self._periodic = False

    @property
    def bonds(self) -> np.ndarray | None:
        """The checked pairs [B, 2] (0-based atom indices); None before the simulation starts."""
        return None if self._watch is None else self._watch.bonds

    def describeNextReport(self, simulation: Any) -> Dict[str, Any]:  # noqa: N802 (OpenMM's name)
        if self._watch is None:  # OpenMM asks before its first step: the bonds of the starting structure
            self._start(simulation)
        steps = self.report_interval - simulation.currentStep % self.report_interval
        return {"steps": steps, "periodic": None, "include": ["positions"]}

    def report(self, simulation: Any, state: Any) -> None:
        if self._watch is None:
            self._start(simulation)
        positions, cell, _ = self._geometry(state)
        change = self._watch.change(positions, cell)
        self.max_change_A = max(self.max_change_A, change)
        step = int(simulation.currentStep)
        self._log_row(step, state, change)
        if self.max_bond_change is not None and change > self.max_bond_change:
            changes, reason = self._watch.broken(positions, self.max_bond_change, cell)
            raise BrokenBondError(f"step {step}: {reason}", step, changes)

    def _geometry(self, state: Any) -> Tuple[np.ndarray, np.ndarray | None, Tuple[bool, bool, bool] | None]:
        """Positions [N, 3], cell [3, 3] (the current box: a barostat may change it) and pbc, in Å."""
        from openmm import unit

        positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer) * NM_TO_ANGSTROM
        if not self._periodic:
            return positions, None, None
        cell = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer) * NM_TO_ANGSTROM
        return positions, cell, (True, True, True)

    def _start(self, simulation: Any) -> None:
        atoms = list(simulation.topology.atoms())
        if any(atom.element is None for atom in atoms):
            raise ValueError("BondCheckReporter: every atom of the topology needs an element")
        numbers = np.array([atom.element.atomic_number for atom in atoms])
        self._periodic = bool(simulation.system.usesPeriodicBoundaryConditions())
        positions, cell, pbc = self._geometry(simulation.context.getState(getPositions=True))
        bonds = None  # found from covalent radii
        if self.bonds_from == "topology":
            pairs = sorted({tuple(sorted((a.index, b.index))) for a, b in simulation.topology.bonds()})
            if not pairs:
                raise ValueError("BondCheckReporter: bonds_from='topology', but the topology has no bonds")
            bonds = np.array(pairs, dtype=np.int64)
        self._watch = BondWatch(numbers, positions, cell, pbc, bonds)
        self._open_log()


class UncertainForcesError(RuntimeError):
    """A committee's per-atom force std passed :class:`ForceStdReporter`'s ``max_force_std``.
    ``step`` is the simulation step, ``atom`` the 0-based index of the most uncertain atom and
    ``force_std`` its std (eV/Å)."""

    def __init__(self, message: str, step: int, atom: int, force_std: float) -> None:
        super().__init__(message)
        self.step = step
        self.atom = atom
        self.force_std = force_std


class ForceStdReporter(_CsvLogReporter):
    """Evaluates a committee every ``report_interval`` steps and reports its largest per-atom
    force std (eV/Å; ``forces_std`` of :class:`~forcefield_et.ETCalculator`), the OpenMM side of
    ``forcefield-et md --max-force-std``. The simulation may be driven by any force (e.g. the
    committee's first member as a TorchForce): the committee runs only at reports.

    Args:
        committee: a committee directory or ``committee.json``, a list of checkpoints, a
            :class:`~forcefield_et.model.Committee`, or an ``ETCalculator`` holding a committee.
        report_interval: steps between evaluations.
        max_force_std: eV/Å; a larger std on any atom raises :class:`UncertainForcesError`, which
            ends ``Simulation.step`` there. None: only measure.
        file: optional CSV path; one row per report: step, time (ps), largest force std (eV/Å).
        device, dtype: for the committee when it is not already a calculator.

    ``last_max_force_std`` holds the latest value (eV/Å), ``max_force_std_seen`` the largest so far.
    """

    _log_column = "max_force_std_eV_A"

    def __init__(self, committee: Any, report_interval: int, max_force_std: float | None = None,
                 file: Union[str, Path, None] = None, device: str = "cpu", dtype: str = "float32") -> None:
        from ..calculators.ase import ETCalculator

        super().__init__(file)
        if int(report_interval) < 1:
            raise ValueError(f"ForceStdReporter: report_interval must be >= 1, got {report_interval}")
        if max_force_std is not None and not max_force_std > 0:
            raise ValueError(f"ForceStdReporter: max_force_std must be a positive force in eV/Å, got {max_force_std}")
        self.calculator = committee if isinstance(committee, ETCalculator) else ETCalculator(
            committee, device=device, dtype=dtype)
        if not self.calculator.is_committee:
            raise ValueError(
                "ForceStdReporter: needs a committee (several checkpoints); a single model has no force std"
            )
        self.report_interval = int(report_interval)
        self.max_force_std = max_force_std
        self.last_max_force_std: float | None = None
        self.max_force_std_seen = 0.0
        self._atoms: Any = None

    def describeNextReport(self, simulation: Any) -> Dict[str, Any]:  # noqa: N802 (OpenMM's name)
        steps = self.report_interval - simulation.currentStep % self.report_interval
        return {"steps": steps, "periodic": False, "include": ["positions"]}

    def report(self, simulation: Any, state: Any) -> None:
        from openmm import unit

        if self._atoms is None:
            self._start(simulation)
        self._atoms.positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer) * NM_TO_ANGSTROM
        if self._atoms.pbc.all():
            box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer) * NM_TO_ANGSTROM
            self._atoms.cell = box
        std = np.asarray(self.calculator.get_property("forces_std", self._atoms))
        atom = int(np.argmax(std))
        value = float(std[atom])
        self.last_max_force_std = value
        self.max_force_std_seen = max(self.max_force_std_seen, value)
        step = int(simulation.currentStep)
        self._log_row(step, state, value)
        if self.max_force_std is not None and value > self.max_force_std:
            name = f"{self._atoms.get_chemical_symbols()[atom]}{atom}"
            raise UncertainForcesError(
                f"step {step}: the committee's force std on atom {name} is {value:.3g} eV/Å, above max_force_std "
                f"{self.max_force_std:g} eV/Å", step, atom, value)

    def _start(self, simulation: Any) -> None:
        from ase import Atoms

        atoms = list(simulation.topology.atoms())
        if any(atom.element is None for atom in atoms):
            raise ValueError("ForceStdReporter: every atom of the topology needs an element")
        periodic = bool(simulation.system.usesPeriodicBoundaryConditions())
        self._atoms = Atoms(numbers=[atom.element.atomic_number for atom in atoms], pbc=periodic)
        self._atoms.calc = self.calculator
        self._open_log()


__all__ = ["BondCheckReporter", "BrokenBondError", "ForceStdReporter", "UncertainForcesError"]

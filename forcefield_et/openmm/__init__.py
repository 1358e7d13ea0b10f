"""OpenMM integration: run a forcefield_et potential as an OpenMM Force.

- :func:`torch_force`: an ``openmmtorch.TorchForce`` (fast path; needs openmm-torch built for
  your torch);
- :func:`python_force`: an ``openmm.PythonForce`` (OpenMM >= 8.5, no plugin);
- :class:`OpenMMModule`: the TorchScript-able nm / kJ/mol wrapper both use;
- :class:`BondCheckReporter`: a ``Simulation`` reporter that stops the run when a covalent bond
  breaks (:class:`BrokenBondError`);
- :class:`ForceStdReporter`: a reporter that evaluates a committee at each report and stops the run
  when its per-atom force std passes a limit (:class:`UncertainForcesError`);
- ``MLPotential('forcefield-et', model=...)`` from openmm-ml (plugin registered via the
  ``openmmml.potentials`` entry point, implemented in :mod:`forcefield_et.openmm.mlpotential`).

Importing this package needs only torch; openmm and openmmtorch are imported when a Force is
created, and a missing or broken install raises ImportError with the install hint
``pip install "forcefield-et[openmm]"`` and the verified version matrix (:data:`VERSION_MATRIX`).
Units at this interface: positions and box vectors in nm, energies in kJ/mol, forces in kJ/mol/nm.
"""

from __future__ import annotations

from .forces import (
    INSTALL_HINT,
    VERSION_MATRIX,
    PythonForceComputation,
    python_force,
    require_openmm,
    require_openmmtorch,
    torch_force,
)
from .module import OpenMMModule
from .reporter import BondCheckReporter, BrokenBondError, ForceStdReporter, UncertainForcesError

__all__ = [
    "BondCheckReporter",
    "BrokenBondError",
    "ForceStdReporter",
    "INSTALL_HINT",
    "VERSION_MATRIX",
    "OpenMMModule",
    "PythonForceComputation",
    "python_force",
    "require_openmm",
    "require_openmmtorch",
    "torch_force",
    "UncertainForcesError",
]

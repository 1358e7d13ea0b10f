"""OpenMM Force objects for a forcefield_et potential: ``TorchForce`` and ``PythonForce``.

- :func:`torch_force` scripts an :class:`~forcefield_et.openmm.OpenMMModule` and wraps it in an
  ``openmmtorch.TorchForce`` (needs the openmm-torch plugin built against your torch).
- :func:`python_force` gives the same physics through ``openmm.PythonForce`` (OpenMM >= 8.5),
  calling the potential from Python at every step through the inference engine
  (:class:`forcefield_et.inference.Evaluator`, as the ASE calculator does); it needs no plugin.

Both take positions in nm from OpenMM and return kJ/mol and kJ/mol/nm.
"""

from __future__ import annotations

import logging
import os
from typing import Any, List, Sequence, Tuple, Union

import numpy as np
import torch

from ..domain import DomainCheck
from ..inference import Evaluator
from ..model.committee import Committee
from ..runtime import apply_threads, choose_threads
from ..units import EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM, EV_TO_KJ_PER_MOL, NM_TO_ANGSTROM
from .module import OpenMMModule

__all__ = [
    "INSTALL_HINT",
    "VERSION_MATRIX",
    "PythonForceComputation",
    "check_atomic_numbers",
    "python_force",
    "require_openmm",
    "require_openmmtorch",
    "resolve_model",
    "torch_force",
]

INSTALL_HINT = (
    'pip install "forcefield-et[openmm]"  (or: conda install -c conda-forge openmm openmm-torch openmm-ml)'
)
VERSION_MATRIX = (
    "Verified: torch 2.9.1 + openmm 8.6.1 + openmm-torch 1.5: TorchForce and PythonForce both work "
    "(Reference and CPU platforms); torch >= 2.10: TorchForce crashes ('set_stride is not allowed', "
    "openmm-torch issue #175) while PythonForce works; CPU-only torch 2.13 wheel: openmmtorch fails to "
    "import, use PythonForce. PythonForce needs openmm >= 8.5."
)

# a Potential or Committee, a bundled name or checkpoint path, a committee directory or its committee.json,
# or a list of names/paths (a committee)
ModelLike = Union[torch.nn.Module, str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]]]


def require_openmm() -> Any:
    """Import and return the ``openmm`` module; ImportError with an install hint if unavailable."""
    try:
        import openmm
    except Exception as error:  # a broken binary install raises OSError etc., not only ImportError
        raise ImportError(
            f"forcefield_et.openmm needs OpenMM (>= 8.5), which could not be imported "
            f"({type(error).__name__}: {error}). Install it with: {INSTALL_HINT}. {VERSION_MATRIX}"
        ) from error
    return openmm


def require_openmmtorch() -> Any:
    """Import and return ``openmmtorch``; ImportError naming the original error if it cannot load.

    openmm-torch is a compiled plugin linked against one torch version; with any other torch
    it fails to import (or crashes), in which case use :func:`python_force` instead.
    """
    require_openmm()
    # openmmtorch imports the deprecated simtk.openmm shim, which logs a warning on the root logger.
    quiet = _DropSimtkWarning()
    logging.getLogger().addFilter(quiet)
    try:
        import openmmtorch
    except Exception as error:
        raise ImportError(
            f"TorchForce needs the openmm-torch plugin, which could not be loaded "
            f"({type(error).__name__}: {error}). Install a build that matches torch {torch.__version__} "
            f"with: {INSTALL_HINT}, or use forcefield_et.openmm.python_force (no plugin needed). "
            f"{VERSION_MATRIX}"
        ) from error
    finally:
        logging.getLogger().removeFilter(quiet)
    _retry_torch_platform_plugins()
    return openmmtorch


_retried_plugins: set = set()


def _retry_torch_platform_plugins() -> None:
    """Load openmm-torch's platform plugins that failed when ``openmm`` was imported before torch.

    OpenMM loads its plugins at ``import openmm``; openmm-torch's (libOpenMMTorchReference.so, ...)
    link against CUDA libraries (libnvrtc) that only torch's own import puts in the process. A script
    that imports openmm first therefore has no TorchForce kernels ("No Platform supports all the
    requested kernels"). torch is imported by now, so a second load of those plugins succeeds.
    """
    import openmm

    for failure in openmm.Platform.getPluginLoadFailures():
        if "OpenMMTorch" not in failure or not failure.startswith("Error loading library "):
            continue
        path = failure[len("Error loading library ") :].split(": ", 1)[0]
        if path in _retried_plugins:
            continue
        _retried_plugins.add(path)
        try:
            openmm.Platform.loadPluginLibrary(path)
        except Exception:  # e.g. the OpenCL plugin without libOpenCL: that platform stays unavailable
            pass


class _DropSimtkWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "simtk.openmm' is deprecated" not in record.getMessage()


def resolve_model(model: ModelLike, dtype: Union[str, torch.dtype, None] = None) -> torch.nn.Module:
    """A Potential or Committee as is; a committee (a list of names/paths, a committee directory or
    ``committee.json``) as a :class:`~forcefield_et.model.Committee`; else a bundled model name /
    checkpoint path loaded in ``dtype`` (:func:`forcefield_et.registry.resolve_model`)."""
    from ..registry import resolve_model as resolve

    return resolve(model, dtype=dtype)


def check_atomic_numbers(model: torch.nn.Module, atomic_numbers: Sequence[int]) -> List[int]:
    """Validate atomic numbers against the model's supported elements; ValueError names the others."""
    from ..elements import symbol

    numbers = [int(z) for z in atomic_numbers]
    if not numbers:
        raise ValueError("no atoms: atomic_numbers is empty")
    supported = getattr(model, "elements", None)
    if supported is not None:
        unsupported = sorted({z for z in numbers if z not in set(supported)})
        if unsupported:
            names = ", ".join(f"{symbol(z)} (Z={z})" for z in unsupported)
            known = " ".join(symbol(z) for z in supported)
            raise ValueError(f"the model does not support element(s) {names}; supported elements: {known}")
    return numbers


def _ml_atoms(
    model: torch.nn.Module, atomic_numbers: Sequence[int], atom_indices: Sequence[int] | None
) -> Tuple[List[int], List[int] | None]:
    """(atomic numbers of the ML atoms, their indices or None). ``atomic_numbers`` may be given
    per ML atom (same length as ``atom_indices``) or for the whole system."""
    numbers = [int(z) for z in atomic_numbers]
    if atom_indices is None:
        return _checked_in_domain(model, numbers), None
    indices = [int(i) for i in atom_indices]
    if not indices:
        raise ValueError("atom_indices is empty: select at least one ML atom")
    if len(numbers) != len(indices):
        if max(indices) >= len(numbers) or min(indices) < 0:
            raise ValueError(
                f"atomic_numbers has {len(numbers)} entries: give one per ML atom ({len(indices)}) "
                f"or one per system particle (> {max(indices)})"
            )
        numbers = [numbers[i] for i in indices]
    return _checked_in_domain(model, numbers), indices


def _checked_in_domain(model: torch.nn.Module, numbers: List[int]) -> List[int]:
    """check_atomic_numbers, plus a DomainWarning when the ML atoms are outside the model's training domain."""
    numbers = check_atomic_numbers(model, numbers)
    metadata = getattr(model, "metadata", None)
    name = (metadata or {}).get("name") or getattr(model, "checkpoint_path", None) or type(model).__name__
    DomainCheck(metadata, str(name))(numbers, stacklevel=5)
    return numbers


def torch_force(
    model: ModelLike,
    atomic_numbers: Sequence[int],
    atom_indices: Sequence[int] | None = None,
    periodic: bool = False,
    dtype: Union[str, torch.dtype] = "float32",
    force_group: int | None = None,
    threads: int | None = None,
) -> Any:
    """An ``openmmtorch.TorchForce`` computing the potential (energy kJ/mol, forces kJ/mol/nm).

    Args:
        model: a Potential, or a bundled model name / checkpoint path.
        atomic_numbers: atomic numbers of the ML atoms ([M], in ``atom_indices`` order), or of
            every particle of the system ([N_total]).
        atom_indices: particle indices of the ML atoms (ML/MM); None: every particle is ML.
            Particles outside the subset get zero force from this Force.
        periodic: use the periodic box vectors of the Context (the model sees the same cell).
        dtype: precision the model runs in ("float32" or "float64").
        force_group: OpenMM force group (0..31); None leaves the default (0).
        threads: torch CPU threads of this process, which the TorchForce's libtorch shares; None
            or 0: the package's rule for the number of ML atoms (:func:`forcefield_et.runtime.choose_threads`).
            Set here, when the force is created.

    The module is scripted with ``torch.jit.script`` and the force outputs forces directly
    (``setOutputsForces(True)``), so OpenMM does no extra backward pass.
    """
    openmmtorch = require_openmmtorch()
    potential = resolve_model(model, dtype)
    if isinstance(potential, Committee):
        raise ValueError("torch_force takes a single model; run a committee with python_force, or watch its "
                         "spread with ForceStdReporter")
    numbers, indices = _ml_atoms(potential, atomic_numbers, atom_indices)
    apply_threads(len(numbers), requested=threads or None)
    module = torch.jit.script(OpenMMModule(potential, numbers, indices, dtype=dtype))
    force = openmmtorch.TorchForce(module)
    force.setOutputsForces(True)
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    if force_group is not None:
        force.setForceGroup(int(force_group))
    return force


class PythonForceComputation:
    """Callback for ``openmm.PythonForce``: State (positions nm, box nm) -> (energy kJ/mol,
    forces [M, 3] kJ/mol/nm as a float64 NumPy array). It only converts units; the model call, with
    the thread count, neighbour list and memory plan of each call, is the evaluator's
    (:class:`forcefield_et.inference.Evaluator`). Picklable, so a System holding it can be
    serialised with ``XmlSerializer``.

    Args:
        evaluator: the inference engine holding the model.
        atomic_numbers: atomic numbers of the M atoms the callback sees, in their order.
        periodic: pass the Context's box vectors to the model as its cell.
    """

    def __init__(self, evaluator: Evaluator, atomic_numbers: Sequence[int], periodic: bool) -> None:
        self.evaluator = evaluator
        self.atomic_numbers = np.asarray(atomic_numbers, dtype=np.int64)
        self.periodic = bool(periodic)

    def __call__(self, state: Any) -> Tuple[float, np.ndarray]:
        from openmm import unit

        positions = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=np.float64)
        box = None
        if self.periodic:
            vectors = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
            box = np.asarray(vectors, dtype=np.float64) * NM_TO_ANGSTROM
        output = self.evaluator.evaluate(self.atomic_numbers, positions * NM_TO_ANGSTROM, box)
        energy = float(output["energy"].sum()) * EV_TO_KJ_PER_MOL
        forces = output["forces"].cpu().numpy().astype(np.float64) * EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM
        return energy, forces


def python_force(
    model: ModelLike,
    atomic_numbers: Sequence[int],
    atom_indices: Sequence[int] | None = None,
    periodic: bool = False,
    dtype: Union[str, torch.dtype] = "float32",
    force_group: int | None = None,
    device: Union[str, torch.device] = "cpu",
    threads: int | None = None,
) -> Any:
    """An ``openmm.PythonForce`` computing the potential; same arguments and physics as
    :func:`torch_force`, without openmm-torch (OpenMM >= 8.5). ``model`` may also be a committee
    (see :func:`resolve_model`): the force is then the members' mean.

    With ``atom_indices`` the force is restricted to those particles with
    ``PythonForce.setParticles``, so OpenMM passes only their positions to the callback.
    ``device`` is the torch device the model runs on; ``threads`` the torch CPU threads of each
    call (None or 0: the package's rule for the number of ML atoms).
    """
    openmm = require_openmm()
    if not hasattr(openmm, "PythonForce"):
        raise ImportError(
            f"openmm.PythonForce needs OpenMM >= 8.5 (found {openmm.__version__}). "
            f"Upgrade with: {INSTALL_HINT}"
        )
    choose_threads(1, requested=threads or None)  # a bad setting fails when the force is made
    potential = resolve_model(model, dtype)
    numbers, indices = _ml_atoms(potential, atomic_numbers, atom_indices)
    # The callback sees only the selected particles (setParticles below), in their order.
    evaluator = Evaluator(potential, device=device, dtype=dtype, threads=threads or None, owner="PythonForce")
    computation = PythonForceComputation(evaluator, numbers, periodic)
    force = openmm.PythonForce(computation)
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    if indices is not None:
        force.setParticles(indices)
    if force_group is not None:
        force.setForceGroup(int(force_group))
    return force

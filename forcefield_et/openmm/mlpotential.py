"""openmm-ml plugin: ``MLPotential('forcefield-et', model=...)``.

Registered through the entry point (``pyproject.toml``)::

    [project.entry-points."openmmml.potentials"]
    forcefield-et = "forcefield_et.openmm.mlpotential:ForceFieldETPotentialImplFactory"

openmm-ml loads every entry point of that group when ``openmmml`` is first imported and
registers ``Factory()`` under the entry-point name. Usage::

    from openmmml import MLPotential
    potential = MLPotential("forcefield-et", model="pretrained")      # or a checkpoint path
    system = potential.createSystem(topology)                        # whole system ML
    mixed = potential.createMixedSystem(topology, mm_system, ml_atoms)  # ML/MM (mechanical embedding)

Options (``MLPotential(...)`` keywords; ``dtype`` and ``implementation`` may also be given to
``createSystem`` / ``createMixedSystem`` to override them for that call):

- ``model``: bundled model name (default ``"pretrained"``), checkpoint path, or a Potential; or a
  committee (a list of names/paths, a committee directory or its ``committee.json``), whose mean
  energy and forces drive the system (PythonForce; watch its spread with ``ForceStdReporter``);
- ``dtype``: ``"float32"`` (default) or ``"float64"``;
- ``implementation``: ``"torchforce"`` (default when openmm-torch imports and the model is a single
  one) or ``"pythonforce"`` (the default otherwise).

Atomic numbers come from the topology's elements; atoms without an element or with an element
the model does not support raise ValueError naming them. The force is periodic when the
topology has box vectors (or the MM system is periodic). The potential is short-ranged (a
cutoff of a few Å), so ``getMLLongRange()`` is False and mechanical embedding in a periodic
MM system needs no ``mlLongRange`` option.
"""

from __future__ import annotations

from typing import Any, Iterable, List, Union

IMPLEMENTATIONS = ("torchforce", "pythonforce")


class ForceFieldETPotentialImplFactory:
    """Creates :class:`ForceFieldETPotentialImpl` objects for ``MLPotential('forcefield-et', ...)``.

    It implements openmm-ml's ``MLPotentialImplFactory`` interface (``createImpl``) without
    inheriting from it on purpose: openmm-ml imports this module while ``openmmml`` itself is
    still being imported (its entry-point loop), and if this module is imported first it
    imports ``openmmml``, which imports this module again. Defining the factory before any
    ``openmmml`` import keeps both orders working.
    """

    def createImpl(
        self,
        name: str,
        model: Union[str, Any] = "pretrained",
        dtype: str = "float32",
        implementation: str | None = None,
        **args: Any,
    ) -> ForceFieldETPotentialImpl:
        """A potential implementation for ``name`` with the given ``model``, ``dtype`` and
        ``implementation`` (see the module docstring)."""
        return ForceFieldETPotentialImpl(
            name, model=model, dtype=dtype, implementation=implementation, **args
        )


try:  # openmm-ml is optional; without it the classes stay importable (for docs and tests).
    from openmmml.mlpotential import MLPotentialImpl as _ImplBase
except ImportError:  # pragma: no cover - exercised only without openmm-ml
    _ImplBase = object  # type: ignore[misc,assignment]


def _resolve_implementation(implementation: str | None) -> str:
    if implementation is None:
        try:
            from .forces import require_openmmtorch

            require_openmmtorch()
            return "torchforce"
        except ImportError:
            return "pythonforce"
    key = str(implementation).lower().replace("_", "").replace("-", "")
    if key not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    return key


def topology_atomic_numbers(topology: Any, atoms: Iterable[int] | None = None) -> List[int]:
    """Atomic numbers of ``atoms`` (all atoms when None) of an OpenMM Topology.

    Raises ValueError naming the atoms that have no element (virtual sites, extra particles).
    """
    all_atoms = list(topology.atoms())
    selected = all_atoms if atoms is None else [all_atoms[int(i)] for i in atoms]
    missing = [f"{a.name} (index {a.index}, residue {a.residue.name})" for a in selected if a.element is None]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise ValueError(
            f"forcefield-et: atoms without an element cannot be modelled: {shown}. "
            "Exclude them from the ML atoms."
        )
    return [int(a.element.atomic_number) for a in selected]


class ForceFieldETPotentialImpl(_ImplBase):
    """openmm-ml ``MLPotentialImpl`` for forcefield_et potentials.

    Args:
        name: the registered name ("forcefield-et").
        model: bundled model name, checkpoint path, or a Potential instance; or a committee (a list
            of names/paths, a committee directory or ``committee.json``, or a Committee).
        dtype: "float32" or "float64": precision the model runs in.
        implementation: "torchforce", "pythonforce", or None (TorchForce when openmm-torch
            can be imported, else PythonForce).
        threads: (keyword) torch CPU threads; None or 0: the package's rule for the number of ML
            atoms (:func:`forcefield_et.runtime.choose_threads`).
        device: (keyword, PythonForce only) torch device the model runs on.
    """

    def __init__(
        self,
        name: str,
        model: Union[str, Any] = "pretrained",
        dtype: str = "float32",
        implementation: str | None = None,
        **args: Any,
    ) -> None:
        from ..dtypes import resolve_dtype
        from .forces import resolve_model

        self.name = name
        self.dtype = resolve_dtype(dtype)
        self.implementation = None if implementation is None else _resolve_implementation(implementation)
        self.device = args.get("device")
        self.threads = args.get("threads")
        # Load now so that a wrong name or path fails when the MLPotential is created.
        self.model = resolve_model(model, self.dtype)

    def addForces(
        self,
        topology: Any,
        system: Any,
        atoms: Iterable[int] | None,
        forceGroup: int,
        dtype: str | None = None,
        implementation: str | None = None,
        **args: Any,
    ) -> None:
        """Add one TorchForce or PythonForce for ``atoms`` (all atoms when None) to ``system``."""
        from ..dtypes import resolve_dtype
        from ..model import Committee
        from .forces import check_atomic_numbers, python_force, torch_force

        atom_list = None if atoms is None else [int(i) for i in atoms]
        numbers = topology_atomic_numbers(topology, atom_list)
        try:
            check_atomic_numbers(self.model, numbers)
        except ValueError as error:
            raise ValueError(f"forcefield-et: {error}") from None
        periodic = topology.getPeriodicBoxVectors() is not None or system.usesPeriodicBoundaryConditions()
        run_dtype = resolve_dtype(dtype) if dtype is not None else self.dtype
        requested = implementation if implementation is not None else self.implementation
        chosen = _resolve_implementation(requested)
        if chosen == "torchforce" and isinstance(self.model, Committee):
            if requested is not None:
                raise ValueError("forcefield-et: a committee runs with implementation='pythonforce' "
                                 "(a TorchForce holds a single model)")
            chosen = "pythonforce"
        threads = args.get("threads", self.threads)
        if chosen == "torchforce":
            force = torch_force(self.model, numbers, atom_list, periodic=periodic, dtype=run_dtype, threads=threads)
        else:
            device = args.get("device", self.device) or "cpu"
            force = python_force(
                self.model, numbers, atom_list, periodic=periodic, dtype=run_dtype, device=device, threads=threads
            )
        force.setForceGroup(int(forceGroup))
        system.addForce(force)

    def getMLLongRange(self) -> bool:
        """The potential is local (finite cutoff): no long-range interactions."""
        return False


def register() -> None:
    """Register the factory with openmm-ml by hand (only needed when the package is not
    installed, so that its entry point is missing)."""
    from openmmml import MLPotential

    MLPotential.registerImplFactory("forcefield-et", ForceFieldETPotentialImplFactory())


__all__ = [
    "ForceFieldETPotentialImpl",
    "ForceFieldETPotentialImplFactory",
    "register",
    "topology_atomic_numbers",
]

"""ASE calculator: ``atoms.calc = ETCalculator("pretrained")``.

Follows ``ase.calculators.calculator.Calculator`` conventions: ``implemented_properties``,
results cached until ``system_changes``, energy in eV, forces in eV/Å, stress in eV/Å³ (Voigt
order xx, yy, zz, yz, xz, xy) for periodic systems. A committee of models
(``ETCalculator(["a.pt", "b.pt", ...])`` or a committee directory) gives the members' mean and
adds ``energy_std`` (eV) and ``forces_std`` (per atom, eV/Å); see :mod:`forcefield_et.model.committee`.

The calculator translates ``Atoms`` to arrays and the results back; the model calls, neighbour
lists, memory plans and threads are the inference engine's (:class:`forcefield_et.inference.Evaluator`).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Sequence, Union

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from ..domain import DomainCheck
from ..elements import symbol, unsupported_elements
from ..inference import Evaluator, NonFiniteError, centred, converted_model
from ..model import Committee, Potential
from ..periodicity import ModelCell, model_cell

logger = logging.getLogger(__name__)

__all__ = ["ETCalculator", "NonFiniteError", "converted_model", "model_positions"]


def model_positions(atoms: Atoms) -> np.ndarray:
    """Positions [N, 3] (Å, float64) as the model gets them: a non-periodic structure is centred
    on its mean position first (see :func:`forcefield_et.inference.centred`)."""
    return centred(atoms.get_positions(), bool(atoms.pbc.any()))


def _periodic_axes(atoms: Atoms) -> str:
    return "".join("abc"[k] for k in np.flatnonzero(atoms.get_pbc()))


def _full_stress_to_voigt(stress: np.ndarray) -> np.ndarray:
    return np.array([stress[0, 0], stress[1, 1], stress[2, 2], stress[1, 2], stress[0, 2], stress[0, 1]])


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.cpu().numpy().astype(np.float64)


class _EngineSetting:
    """A calculator attribute that lives on its evaluator (class access gives the default)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, calc: ETCalculator | None, owner: type) -> Any:
        return getattr(Evaluator, self.name, None) if calc is None else getattr(calc.engine, self.name)

    def __set__(self, calc: ETCalculator, value: Any) -> None:
        setattr(calc.engine, self.name, value)


class ETCalculator(Calculator):
    """Equivariant Transformer potential as an ASE calculator.

    Args:
        model: bundled model name (``"pretrained"``, ``"rmd17-aspirin"``, ...), a checkpoint
            path, or a :class:`Potential` instance; or a committee: a list of names/paths, a
            committee directory or its ``committee.json`` (``forcefield-et finetune --committee``),
            or a :class:`~forcefield_et.model.Committee`. A committee's results are the members'
            mean energy, forces (and stress) plus ``energy_std`` (eV) and ``forces_std`` [N] (eV/Å,
            per atom: sqrt(mean over members of |F_m - F_mean|^2)).
        device: ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``.
        dtype: ``"float32"`` (default, fast) or ``"float64"`` (for tight energy conservation
            and finite-difference checks).
        compile: energy and forces as one ``torch.compile``d graph (``Potential.compile_energy``:
            dynamic shapes; the first call compiles, later calls are faster); ``"auto"``: where the
            model supports it (a heads committee runs eagerly).
            Modifies the model instance passed in when it is already in ``dtype`` on ``device``.
        neighbor_list: ``"torch"`` (the model's own TorchScript radius graph), ``"matscipy"``
            (matscipy's C neighbour list, periodic structures on CPU only), or ``"auto"``:
            matscipy for periodic structures of at least ``MATSCIPY_MIN_ATOMS`` atoms on CPU when
            matscipy is installed (measured 2-10x faster there, see docs/benchmarks.md).
        edge_chunking: ``"auto"`` (default): on CPU, from ``MEMORY_CHECK_MIN_ATOMS`` atoms on,
            all edges at once when the call fits in the available memory, else the model's
            memory-saving edge-chunked mode (``EDGE_CHUNK_SIZE`` edges per chunk, about 1.3x the
            time per call; see ``Potential.set_edge_chunking``), else a MemoryError; ``None``: never
            chunk; an int: always chunk with this many edges per chunk. After each call ``last_path`` is
            ``"all_edges"`` or ``"chunked"`` and ``last_memory_plan`` the
            :class:`~forcefield_et.runtime.MemoryPlan` (None where memory was not checked).
        threads: torch CPU threads for the calls (process-wide). None or 0 (default): the
            package's rule (:func:`~forcefield_et.runtime.apply_threads`: ``FORCEFIELD_ET_THREADS``
            when set; a count set with ``torch.set_num_threads`` after importing forcefield_et is
            kept; else 1 for molecules of up to about 100 atoms, more for larger systems, never
            more than the cores available or ``OMP_NUM_THREADS``).
        tune_allocator: opt in to the process-wide glibc malloc thresholds that keep large systems
            fast on CPU (:func:`forcefield_et.runtime.keep_freed_memory`); off by default.

    A structure outside the model's training domain (elements its training data lacked, or, for
    a model fitted to one molecule, another composition) gets one
    :class:`~forcefield_et.domain.DomainWarning` per composition.

    A :class:`Potential` passed in is used as it is when its weights already have ``dtype`` and
    ``device`` (so calculators of one dtype share it); otherwise the calculator works on a converted
    copy, and the module passed in is left unchanged.
    """

    # settings of the inference engine, readable and settable here
    MATSCIPY_MIN_ATOMS = _EngineSetting("MATSCIPY_MIN_ATOMS")
    MEMORY_CHECK_MIN_ATOMS = _EngineSetting("MEMORY_CHECK_MIN_ATOMS")  # from this size on, memory is checked
    EDGE_CHUNK_SIZE = _EngineSetting("EDGE_CHUNK_SIZE")  # edges per chunk when edge_chunking="auto" chunks
    threads = _EngineSetting("threads")
    neighbor_list = _EngineSetting("neighbor_list")
    edge_chunking = _EngineSetting("edge_chunking")
    last_path = _EngineSetting("last_path")
    last_memory_plan = _EngineSetting("last_memory_plan")
    _forward = _EngineSetting("model_call")  # the model call (tests intercept it)
    _evaluate = _EngineSetting("run")

    implemented_properties = ["energy", "free_energy", "forces", "stress"]
    committee_properties = ["energy_std", "forces_std"]  # added for a committee
    default_parameters: Dict[str, Any] = {}

    def __init__(
        self,
        model: Union[str, os.PathLike, Potential, Committee, Sequence[Union[str, os.PathLike]]] = "pretrained",
        device: Union[str, torch.device] = "auto",
        dtype: Union[str, torch.dtype] = "float32",
        compile: bool | str = False,
        neighbor_list: str = "auto",
        edge_chunking: Union[str, int, None] = "auto",
        threads: int | None = None,
        tune_allocator: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.engine = Evaluator(
            model, device=device, dtype=dtype, neighbor_list=neighbor_list, edge_chunking=edge_chunking,
            threads=threads, compile=compile, owner="ETCalculator", log=logger, tune_allocator=tune_allocator,
        )
        self.model = self.engine.model
        self.model_name = self.engine.name
        self.device, self.dtype = self.engine.device, self.engine.dtype
        self.is_committee = self.engine.is_committee
        if self.is_committee:
            self.implemented_properties = self.implemented_properties + self.committee_properties
        self.elements: List[int] = self.engine.elements
        self.cutoff: float = self.engine.cutoff
        self._domain_check = DomainCheck(getattr(self.model, "metadata", None), self.model_name)
        self._numbers_cache: np.ndarray | None = None
        self.n_calls = 0

    # ------------------------------------------------------------------ checks
    def check_atoms(self, atoms: Atoms) -> ModelCell:
        """Raise a clear error for input the model cannot evaluate; returns the cell the model gets."""
        numbers = atoms.get_atomic_numbers()
        if len(numbers) == 0:
            raise ValueError("ETCalculator: the structure has no atoms")
        problem = unsupported_elements(numbers, self.elements, "ETCalculator", f"model {self.model_name!r}")
        if problem:
            raise ValueError(problem)
        positions = atoms.get_positions()
        finite = np.isfinite(positions).all(axis=1)
        if not finite.all():
            raise ValueError(
                f"ETCalculator: non-finite (NaN/inf) positions for atoms {np.flatnonzero(~finite).tolist()}"
            )
        return self._model_cell(atoms)

    def _model_cell(self, atoms: Atoms) -> ModelCell:
        """The fully periodic cell the model gets (a slab's or a wire's completed; see
        :mod:`forcefield_et.periodicity`); raises ValueError for an invalid cell."""
        return model_cell(atoms.get_positions(), atoms.get_cell().array, atoms.get_pbc(), self.engine.cutoff)

    # ------------------------------------------------------------------ ASE API
    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> List[str]:
        """The system changes since the last calculation, as ASE's ``compare_atoms`` names them.
        ASE runs this on every property read (an MD step reads several); at ASE's default ``tol``
        this compares exactly, which is as strict and several times cheaper than its ``allclose``."""
        previous = self.atoms
        if previous is None or tol > 1e-15 or self.ignored_changes:
            return super().check_state(atoms, tol)
        changes = [name for name, a, b in (("cell", previous.cell.array, atoms.cell.array),
                                           ("pbc", previous.pbc, atoms.pbc)) if not np.array_equal(a, b)]
        watched = set(all_changes) - {"cell", "pbc"}
        mine, theirs = previous.arrays, atoms.arrays
        changes += [name for name in all_changes if name in watched and (name in mine) != (name in theirs)]
        changes += [name for name in all_changes if name in watched and name in mine and name in theirs
                    and not np.array_equal(mine[name], theirs[name])]
        return changes

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        if "stress" in properties and not atoms.pbc.any():
            raise PropertyNotImplementedError("ETCalculator: stress needs a periodic structure with a cell")
        periodicity = self.check_atoms(atoms)
        if "stress" in properties and periodicity.stress_volume is None:
            raise PropertyNotImplementedError(
                f"ETCalculator: stress of a structure periodic along {_periodic_axes(atoms)} only needs a cell "
                "with a volume (give the non-periodic directions lattice vectors, e.g. the vacuum)"
            )
        numbers = atoms.get_atomic_numbers()
        if self._numbers_cache is None or not np.array_equal(numbers, self._numbers_cache):
            self._numbers_cache = numbers.copy()
            self._domain_check(numbers)
        output = self.engine.evaluate(numbers, atoms.get_positions(), atoms.get_cell().array, atoms.get_pbc())
        self.n_calls += 1
        self.results = self._results(output, 0, numbers)

    def _results(self, output: Dict[str, torch.Tensor], k: int, numbers: np.ndarray) -> Dict[str, Any]:
        """ASE results of structure ``k`` of the engine's (per-structure) output."""
        energy = float(output["energy"][k])
        forces = _numpy(output["forces"])
        self._check_finite(energy, forces, numbers)
        results: Dict[str, Any] = {"energy": energy, "free_energy": energy, "forces": forces}
        if "forces_std" in output:
            results["energy_std"] = float(output["energy_std"][k])
            results["forces_std"] = _numpy(output["forces_std"])
        if "stress" in output:
            results["stress"] = _full_stress_to_voigt(_numpy(output["stress"][k]))
        return results

    def _use_matscipy(self, n_atoms: int) -> bool:
        """Whether a periodic structure of ``n_atoms`` atoms gets matscipy's neighbour list."""
        return self.engine.use_matscipy(n_atoms)

    def _check_finite(self, energy: float, forces: np.ndarray, numbers: np.ndarray) -> None:
        bad_atoms = np.flatnonzero(~np.isfinite(forces).all(axis=1))
        if np.isfinite(energy) and len(bad_atoms) == 0:
            return
        details = ", ".join(f"{i} ({symbol(int(numbers[i]))})" for i in bad_atoms[:20])
        raise NonFiniteError(
            f"ETCalculator: non-finite energy/forces at call {self.n_calls} (energy={energy}); "
            f"offending atoms: {details or 'energy only'}. The structure has probably exploded: "
            "check the time step, temperature and starting geometry."
        )

    # ------------------------------------------------------------------ batches
    def batch_evaluate(self, structures: Sequence[Atoms], batch_size: int = 64) -> List[Dict[str, Any]]:
        """Energies and forces (and stress for periodic structures) of many structures in
        batched passes: returns one dict per structure with ``energy`` (eV), ``forces``
        [n, 3] (eV/Å), if periodic, ``stress`` (Voigt, eV/Å³), and for a committee
        ``energy_std`` (eV) and ``forces_std`` [n] (eV/Å)."""
        arrays = []
        for atoms in structures:
            self.check_atoms(atoms)
            self._domain_check(atoms.get_atomic_numbers())
            arrays.append((atoms.get_atomic_numbers(), atoms.get_positions(), atoms.get_cell().array, atoms.get_pbc()))
        outputs = self.engine.evaluate_structures(arrays, batch_size=batch_size)
        results = []
        for (numbers, *_), output in zip(arrays, outputs):
            entry = self._results(output, 0, numbers)
            del entry["free_energy"]
            results.append(entry)
        return results

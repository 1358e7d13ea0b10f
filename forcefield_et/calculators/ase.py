"""ASE calculator: ``atoms.calc = ETCalculator("pretrained")``.

Follows ``ase.calculators.calculator.Calculator`` conventions: ``implemented_properties``,
results cached until ``system_changes``, energy in eV, forces in eV/Å, stress in eV/Å³ (Voigt
order xx, yy, zz, yz, xz, xy) for periodic systems. A committee of models
(``ETCalculator(["a.pt", "b.pt", ...])`` or a committee directory) gives the members' mean and
adds ``energy_std`` (eV) and ``forces_std`` (per atom, eV/Å); see :mod:`forcefield_et.model.committee`.
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Any, Dict, List, Sequence, Union

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from ..domain import DomainCheck
from ..dtypes import resolve_dtype
from ..elements import symbol
from ..model import Committee, Potential
from ..neighbors import edges_per_structure, radius_graph
from ..registry import committee_members, load_committee, load_model
from ..runtime import (
    DEFAULT_EDGE_CHUNK_SIZE,
    MemoryPlan,
    apply_threads,
    choose_threads,
    keep_freed_memory,
    plan_batches,
    plan_memory,
)

logger = logging.getLogger(__name__)



def model_positions(atoms: Atoms) -> np.ndarray:
    """Positions [N, 3] (Å, float64) as the model gets them: a non-periodic structure is centred
    on its mean position first (energies and forces are translation invariant), so that a molecule
    far from the origin keeps its float32 precision."""
    positions = atoms.get_positions()
    if atoms.pbc.any():
        return positions
    return positions - positions.mean(axis=0)

def converted_model(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """``model`` itself when all its floating-point weights already are on ``device`` in ``dtype``,
    else a converted copy: the caller's module (which another calculator may be using in another
    dtype) is never converted in place."""
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    if all(t.dtype == dtype and t.device == device for t in tensors):
        return model
    # compiled callables are not copied: a calculator compiles its own copy (compile=True)
    memo = {id(getattr(model, name)): None for name in ("_compiled_energy", "_compiled_training")
            if getattr(model, name, None) is not None}
    return copy.deepcopy(model, memo).to(device=device, dtype=dtype)


class NonFiniteError(FloatingPointError):
    """The model produced NaN/inf energies or forces (e.g. an MD run that has exploded)."""


def _resolve_device(device: Union[str, torch.device]) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("ETCalculator: device 'cuda' requested but CUDA is not available; use 'cpu' or 'auto'")
    return device


def _full_stress_to_voigt(stress: np.ndarray) -> np.ndarray:
    return np.array([stress[0, 0], stress[1, 1], stress[2, 2], stress[1, 2], stress[0, 2], stress[0, 1]])


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
            dynamic shapes; the first call compiles, later calls are faster).
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

    A structure outside the model's training domain (elements its training data lacked, or, for
    a model fitted to one molecule, another composition) gets one
    :class:`~forcefield_et.domain.DomainWarning` per composition.

    A :class:`Potential` passed in is used as it is when its weights already have ``dtype`` and
    ``device`` (so calculators of one dtype share it); otherwise the calculator works on a converted
    copy, and the module passed in is left unchanged.
    """

    MATSCIPY_MIN_ATOMS = 100
    MEMORY_CHECK_MIN_ATOMS = 500  # from this size on, the memory a call needs is checked first
    EDGE_CHUNK_SIZE = DEFAULT_EDGE_CHUNK_SIZE  # edges per chunk when edge_chunking="auto" chunks

    implemented_properties = ["energy", "free_energy", "forces", "stress"]
    committee_properties = ["energy_std", "forces_std"]  # added for a committee
    default_parameters: Dict[str, Any] = {}

    def __init__(
        self,
        model: Union[str, os.PathLike, Potential, Committee, Sequence[Union[str, os.PathLike]]] = "pretrained",
        device: Union[str, torch.device] = "auto",
        dtype: Union[str, torch.dtype] = "float32",
        compile: bool = False,
        neighbor_list: str = "auto",
        edge_chunking: Union[str, int, None] = "auto",
        threads: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
            raise ValueError(f"ETCalculator: threads must be None, 0 (automatic) or a positive int, got {threads!r}")
        self.threads = threads or None
        choose_threads(1, requested=self.threads)  # a bad FORCEFIELD_ET_THREADS fails here, not at the first call
        if not (
            edge_chunking is None
            or edge_chunking == "auto"
            or (isinstance(edge_chunking, int) and not isinstance(edge_chunking, bool) and edge_chunking > 0)
        ):
            raise ValueError(
                f"ETCalculator: edge_chunking must be 'auto', None or a positive int, got {edge_chunking!r}"
            )
        self.edge_chunking = edge_chunking
        self.last_path: str | None = None
        self.last_memory_plan: MemoryPlan | None = None
        if neighbor_list not in ("auto", "torch", "matscipy"):
            raise ValueError(
                f"ETCalculator: neighbor_list must be 'auto', 'torch' or 'matscipy', got {neighbor_list!r}"
            )
        self.neighbor_list = neighbor_list
        self.device = _resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        if self.device.type == "cpu":
            keep_freed_memory()  # large systems: no page-fault storm per call (see runtime.py)
        if isinstance(model, torch.nn.Module):
            self.model_name = type(model).__name__
            self.model = converted_model(model, self.device, self.dtype).eval()
        elif isinstance(model, (list, tuple)):
            self.model_name = f"committee of {len(model)}"
            self.model = load_committee(model, device=self.device, dtype=self.dtype)
        elif committee_members(model) is not None:
            self.model_name = str(model)
            self.model = load_committee(model, device=self.device, dtype=self.dtype)
        else:
            self.model_name = str(model)
            self.model = load_model(model, device=self.device, dtype=self.dtype)
        self.is_committee = isinstance(self.model, Committee)
        if self.is_committee:
            self.implemented_properties = self.implemented_properties + self.committee_properties
        self.elements: List[int] = list(self.model.elements)
        self.cutoff: float = float(self.model.cutoff)
        if compile:
            self.model.compile_energy()
        self._forward = self.model  # the model call (one place, so that tests can intercept it)
        self._supported = np.zeros(max(self.elements) + 1, dtype=bool)
        self._supported[self.elements] = True
        self._domain_check = DomainCheck(getattr(self.model, "metadata", None), self.model_name)
        self._numbers_cache: np.ndarray | None = None
        self._z_tensor: torch.Tensor | None = None
        self.n_calls = 0

    # ------------------------------------------------------------------ checks
    def check_atoms(self, atoms: Atoms) -> None:
        """Raise a clear error for input the model cannot evaluate."""
        numbers = atoms.get_atomic_numbers()
        if len(numbers) == 0:
            raise ValueError("ETCalculator: the structure has no atoms")
        bad = sorted({int(z) for z in numbers if z >= len(self._supported) or not self._supported[z]})
        if bad:
            names = ", ".join(f"{symbol(z)} (Z={z})" for z in bad)
            supported = " ".join(symbol(z) for z in self.elements)
            raise ValueError(
                f"ETCalculator: element(s) {names} not supported by model {self.model_name!r}; supported: {supported}"
            )
        positions = atoms.get_positions()
        finite = np.isfinite(positions).all(axis=1)
        if not finite.all():
            raise ValueError(
                f"ETCalculator: non-finite (NaN/inf) positions for atoms {np.flatnonzero(~finite).tolist()}"
            )
        pbc = atoms.get_pbc()
        if pbc.any() and not pbc.all():
            raise NotImplementedError(
                f"ETCalculator: mixed periodicity pbc={pbc.tolist()} is not supported; use all-periodic or none"
            )
        if pbc.all():
            cell = atoms.get_cell().array
            if abs(np.linalg.det(cell)) < 1e-6:
                raise ValueError("ETCalculator: periodic structure without a valid cell (zero or degenerate volume)")

    # ------------------------------------------------------------------ ASE API
    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        if "stress" in properties and not atoms.pbc.all():
            raise PropertyNotImplementedError("ETCalculator: stress needs a periodic structure with a cell")
        self.check_atoms(atoms)
        numbers = atoms.get_atomic_numbers()
        if self._numbers_cache is None or not np.array_equal(numbers, self._numbers_cache):
            self._numbers_cache = numbers.copy()
            self._z_tensor = torch.as_tensor(numbers, dtype=torch.long, device=self.device)
            self._domain_check(numbers)
        if self.device.type == "cpu":
            apply_threads(len(atoms), requested=self.threads)
        pos = torch.as_tensor(model_positions(atoms), dtype=self.dtype, device=self.device)
        cell = None
        if atoms.pbc.all():
            cell = torch.as_tensor(atoms.get_cell().array, dtype=self.dtype, device=self.device).unsqueeze(0)
        edges = None
        fixed_chunk = self.edge_chunking if isinstance(self.edge_chunking, int) else None
        if cell is not None and self._use_matscipy(len(atoms)):
            edges = self._matscipy_edges(atoms)
        elif (len(atoms) >= self.MEMORY_CHECK_MIN_ATOMS and self.device.type == "cpu") or fixed_chunk is not None:
            edges = radius_graph(pos, self.cutoff, None, cell)
        self.last_memory_plan = None
        chunk = fixed_chunk
        if edges is not None and self.device.type == "cpu":
            self.last_memory_plan = self._plan_memory(len(atoms), edges[0].shape[1], pos.element_size())
            chunk = self.last_memory_plan.edge_chunk_size
        if chunk is not None and (edges is None or edges[0].shape[1] <= chunk):
            chunk = None  # one chunk holds every edge: the model takes all edges at once
        path = "all_edges" if chunk is None else "chunked"
        if edges is not None:  # INFO when the path changes (e.g. an MD run's first step), else DEBUG
            logger.log(
                logging.INFO if path != self.last_path else logging.DEBUG,
                "ETCalculator: %d atoms, %d edges: %s path%s", len(atoms), edges[0].shape[1], path,
                f" ({chunk} edges per chunk)" if chunk is not None else "",
            )
        self.last_path = path
        previous = self.model.edge_chunk_size
        self.model.set_edge_chunking(chunk)
        try:
            output = self._evaluate(self._z_tensor, pos, None, cell, len(atoms), edges)
        finally:
            self.model.set_edge_chunking(previous)
        energy = float(output["energy"][0].detach())
        forces = output["forces"].detach().cpu().numpy().astype(np.float64)
        self.n_calls += 1
        self._check_finite(energy, forces, numbers)
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}
        if "forces_std" in output:
            self.results["energy_std"] = float(output["energy_std"][0].detach())
            self.results["forces_std"] = output["forces_std"].detach().cpu().numpy().astype(np.float64)
        if cell is not None:
            self.results["stress"] = _full_stress_to_voigt(
                output["stress"][0].detach().cpu().numpy().astype(np.float64)
            )

    def _plan_memory(self, n_atoms: int, n_edges: int, itemsize: int) -> MemoryPlan:
        """The memory plan of one call on CPU (raises MemoryError when no allowed path fits)."""
        hyper = self.model.hyperparameters
        if self.edge_chunking == "auto":
            chunk, paths = self.EDGE_CHUNK_SIZE, ("all_edges", "chunked")
        elif self.edge_chunking is None:
            chunk, paths = self.EDGE_CHUNK_SIZE, ("all_edges",)
        else:
            chunk, paths = int(self.edge_chunking), ("chunked",)
        return plan_memory(
            n_atoms, n_edges, hyper["num_layers"], hyper["hidden_channels"], itemsize,
            num_rbf=hyper["num_rbf"], edge_chunk_size=chunk, paths=paths,
        )

    def _use_matscipy(self, n_atoms: int) -> bool:
        if self.neighbor_list == "torch" or self.device.type != "cpu":
            return False
        try:
            import matscipy.neighbours  # noqa: F401
        except ImportError:
            if self.neighbor_list == "matscipy":
                raise ImportError("ETCalculator: neighbor_list='matscipy' needs `pip install matscipy`") from None
            return False
        return self.neighbor_list == "matscipy" or n_atoms >= self.MATSCIPY_MIN_ATOMS

    def _matscipy_edges(self, atoms: Atoms):
        """(edge_index [2, E], shifts [E, 3]) from matscipy, in the model's (i, j, S) convention."""
        from matscipy.neighbours import neighbour_list

        i, j, shifts = neighbour_list("ijS", atoms, self.cutoff)
        edge_index = torch.as_tensor(np.stack([i, j]), dtype=torch.long, device=self.device)
        return edge_index, torch.as_tensor(shifts, dtype=self.dtype, device=self.device)

    def _evaluate(self, z, pos, batch, cell, n_atoms: int, edges=None) -> Dict[str, torch.Tensor]:
        try:
            if edges is not None:
                return self.model.forward_with_neighbors(z, pos, batch, cell, edges[0], edges[1])
            return self._forward(z, pos, batch, cell)
        except torch.cuda.OutOfMemoryError as error:
            raise MemoryError(f"ETCalculator: out of GPU memory for {n_atoms} atoms; use a smaller system") from error
        except RuntimeError as error:
            if "memory" in str(error).lower() and "alloc" in str(error).lower():
                raise MemoryError(f"ETCalculator: out of memory for {n_atoms} atoms: {error}") from error
            raise

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
        results: List[Dict[str, Any] | None] = [None] * len(structures)
        for atoms in structures:
            self.check_atoms(atoms)
            self._domain_check(atoms.get_atomic_numbers())
        groups = {False: [], True: []}
        for index, atoms in enumerate(structures):
            groups[bool(atoms.pbc.all())].append(index)
        hyper = self.model.hyperparameters
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        for periodic, indices in groups.items():
            edge_counts: List[int] = []
            for start in range(0, len(indices), batch_size):
                part = [structures[i] for i in indices[start : start + batch_size]]
                _, pos, batch, cell, _ = self._batch_tensors(part)
                edge_counts += edges_per_structure(pos, self.cutoff, batch, cell).tolist()
            ranges = plan_batches(
                edge_counts, batch_size, hyper["num_layers"], hyper["hidden_channels"], itemsize,
                check_memory=self.device.type == "cpu",
            )
            for start, stop in ranges:
                chunk = indices[start:stop]
                self._batch_chunk([structures[i] for i in chunk], chunk, periodic, results)
        return results  # type: ignore[return-value]

    def _batch_tensors(self, chunk: List[Atoms]):
        """z [N], pos [N, 3] Å, batch [N], cell [B, 3, 3] Å (None unless periodic) and the
        atomic numbers (numpy) of a list of structures, on the calculator's device and dtype."""
        counts = [len(a) for a in chunk]
        if self.device.type == "cpu":
            apply_threads(int(sum(counts)), requested=self.threads)
        numbers = np.concatenate([a.get_atomic_numbers() for a in chunk])
        z = torch.as_tensor(numbers, dtype=torch.long, device=self.device)
        pos = torch.as_tensor(np.concatenate([model_positions(a) for a in chunk]), dtype=self.dtype, device=self.device)
        batch = torch.repeat_interleave(
            torch.arange(len(chunk), device=self.device), torch.as_tensor(counts, device=self.device)
        )
        cell = None
        if chunk[0].pbc.all():
            cell = torch.as_tensor(np.stack([a.get_cell().array for a in chunk]), dtype=self.dtype, device=self.device)
        return z, pos, batch, cell, numbers

    def _batch_chunk(self, chunk: List[Atoms], indices: List[int], periodic: bool, results: List) -> None:
        counts = [len(a) for a in chunk]
        z, pos, batch, cell, numbers = self._batch_tensors(chunk)
        output = self._evaluate(z, pos, batch, cell, int(sum(counts)))
        energies = output["energy"].detach().cpu().numpy().astype(np.float64)
        forces = output["forces"].detach().cpu().numpy().astype(np.float64)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        for k, index in enumerate(indices):
            f = forces[offsets[k] : offsets[k + 1]]
            self._check_finite(float(energies[k]), f, numbers[offsets[k] : offsets[k + 1]])
            entry: Dict[str, Any] = {"energy": float(energies[k]), "forces": f}
            if "forces_std" in output:
                entry["energy_std"] = float(output["energy_std"][k].detach())
                entry["forces_std"] = (
                    output["forces_std"][offsets[k] : offsets[k + 1]].detach().cpu().numpy().astype(np.float64)
                )
            if periodic:
                entry["stress"] = _full_stress_to_voigt(output["stress"][k].detach().cpu().numpy().astype(np.float64))
            results[index] = entry

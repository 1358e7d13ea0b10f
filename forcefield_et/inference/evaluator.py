"""The inference engine: one :class:`Evaluator` calls the model for every interface.

The ASE calculator, the OpenMM ``PythonForce``, :func:`forcefield_et.evaluation.predict`, the
trainer's helpers and the benchmarks hand it arrays in Å (or tensors) and get the model's outputs
back as detached tensors in eV, eV/Å and eV/Å³; they only translate units, arrays and results.
The evaluator owns what a call needs besides the numbers:

- the model in its device and dtype (a bundled name, a checkpoint path, a :class:`Potential`, or a
  :class:`~forcefield_et.model.Committee` and its ``energy_std``/``forces_std``);
- torch's CPU thread count (:func:`forcefield_et.runtime.apply_threads`);
- the neighbour list: the model's own TorchScript radius graph, or matscipy's for large periodic
  systems on CPU;
- memory: a plan per call (:func:`forcefield_et.runtime.plan_memory`) that picks all edges at once
  or the edge-chunked strategy (:mod:`forcefield_et.model.chunked`), and batches of frames that
  fit (:func:`forcefield_et.runtime.plan_batches`).

Process-wide allocator tuning is not part of a call: opt in with ``tune_allocator=True`` (or call
:func:`forcefield_et.runtime.keep_freed_memory` once).
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Any, Callable, Dict, List, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .. import runtime
from ..dtypes import resolve_dtype
from ..model import Committee, Potential
from ..model.chunked import edge_chunking as _edge_chunking
from ..neighbors import edges_per_structure, radius_graph
from ..periodicity import ModelCell, PbcLike, model_cell
from ..runtime import DEFAULT_EDGE_CHUNK_SIZE, MemoryPlan, apply_threads, choose_threads

logger = logging.getLogger(__name__)

ModelSpec = Union[str, "os.PathLike[str]", Potential, Committee, Sequence[Union[str, "os.PathLike[str]"]]]
Outputs = Dict[str, Tensor]
NEIGHBOR_LISTS = ("auto", "torch", "matscipy")


class NonFiniteError(FloatingPointError):
    """The model produced NaN/inf energies or forces (e.g. an MD run that has exploded)."""


def converted_model(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """``model`` itself when all its floating-point weights already are on ``device`` in ``dtype``,
    else a converted copy: the caller's module (which another interface may be using in another
    dtype) is never converted in place."""
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    if all(t.dtype == dtype and t.device == device for t in tensors):
        return model
    # compiled callables are not copied: an evaluator compiles its own copy (compile=True)
    memo = {id(getattr(model, name)): None for name in ("_compiled_energy", "_compiled_training")
            if getattr(model, name, None) is not None}
    return copy.deepcopy(model, memo).to(device=device, dtype=dtype)


def load_for_inference(model: ModelSpec, device: torch.device, dtype: torch.dtype) -> Tuple[torch.nn.Module, str]:
    """(module in eval mode on ``device`` in ``dtype``, display name) for a bundled name, checkpoint
    path, committee directory or list of members, or a module (converted only when needed)."""
    from ..registry import resolve_model

    if isinstance(model, torch.nn.Module):
        return converted_model(model, device, dtype).eval(), type(model).__name__
    name = f"committee of {len(model)}" if isinstance(model, (list, tuple)) else str(model)
    return resolve_model(model, dtype=dtype, device=device), name


def resolve_device(device: Union[str, torch.device], owner: str = "Evaluator") -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or a torch.device -> torch.device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{owner}: device 'cuda' requested but CUDA is not available; use 'cpu' or 'auto'")
    return device


def centred(positions: np.ndarray, periodic: bool) -> np.ndarray:
    """Positions [N, 3] (Å, float64) as the model gets them: a non-periodic structure is centred on
    its mean position (energies and forces are translation invariant), so that a molecule far from
    the origin keeps its float32 precision."""
    return positions if periodic else positions - positions.mean(axis=0)


def detached(output: Outputs) -> Outputs:
    """The outputs without their autograd graph."""
    return {key: value.detach() for key, value in output.items()}


class Evaluator:
    """Energy, forces and stress of a potential (or committee) for single structures and batches.

    Args:
        model: bundled model name, checkpoint path, :class:`Potential` or committee (a list of
            names/paths, a committee directory or ``committee.json``, or a :class:`Committee`). A
            module already in ``dtype`` on ``device`` is used as it is, otherwise a converted copy.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"`` or a torch.device.
        dtype: ``"float32"`` or ``"float64"`` (or a torch dtype).
        neighbor_list: ``"torch"`` (the model's radius graph), ``"matscipy"`` (periodic structures on
            CPU) or ``"auto"``: matscipy for periodic structures of at least ``MATSCIPY_MIN_ATOMS``
            atoms on CPU when it is installed.
        edge_chunking: ``"auto"``: on CPU, from ``MEMORY_CHECK_MIN_ATOMS`` atoms on, all edges at once
            when the call fits in the available memory, else the edge-chunked strategy
            (``EDGE_CHUNK_SIZE`` edges per chunk), else MemoryError; ``None``: never chunk; an int:
            always chunk with this many edges per chunk.
        threads: torch CPU threads of the calls (None or 0: :func:`forcefield_et.runtime.apply_threads`).
        compile: ``torch.compile`` the energy and its gradient (``Potential.compile_energy``); ``"auto"``:
            where the model supports it (a heads committee is evaluated eagerly). ``compiled`` says
            which was done.
        name: the model's name in messages (default: the name or path given, or the class name).
        owner: the interface named in errors and log records (e.g. ``"ETCalculator"``).
        log: the logger of the path records (INFO when the path of a call changes).
        tune_allocator: opt in to :func:`forcefield_et.runtime.keep_freed_memory` (process-wide
            glibc malloc thresholds that keep large systems fast on CPU).
        eval_mode: put the model in eval mode (False: leave its mode, e.g. for the trainer's helpers).
        manage_threads: set torch's CPU thread count for each call (False: leave the count its
            caller chose, e.g. the trainer's).

    After each single-structure call ``last_path`` is ``"all_edges"`` or ``"chunked"`` and
    ``last_memory_plan`` the :class:`~forcefield_et.runtime.MemoryPlan` (None where memory was not
    checked).
    """

    MATSCIPY_MIN_ATOMS = 100
    MEMORY_CHECK_MIN_ATOMS = 500  # from this size on, the memory a call needs is checked first
    EDGE_CHUNK_SIZE = DEFAULT_EDGE_CHUNK_SIZE  # edges per chunk when edge_chunking="auto" chunks

    def __init__(
        self,
        model: ModelSpec = "pretrained",
        device: Union[str, torch.device] = "auto",
        dtype: Union[str, torch.dtype] = "float32",
        neighbor_list: str = "auto",
        edge_chunking: Union[str, int, None] = "auto",
        threads: int | None = None,
        compile: bool | str = False,
        name: str | None = None,
        owner: str = "Evaluator",
        log: logging.Logger | None = None,
        tune_allocator: bool = False,
        eval_mode: bool = True,
        manage_threads: bool = True,
    ) -> None:
        self.owner = owner
        self.log = log if log is not None else logger
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
            raise ValueError(f"{owner}: threads must be None, 0 (automatic) or a positive int, got {threads!r}")
        self.threads = threads or None
        self.manage_threads = bool(manage_threads)
        choose_threads(1, requested=self.threads)  # a bad FORCEFIELD_ET_THREADS fails here, not at the first call
        if not (
            edge_chunking is None
            or edge_chunking == "auto"
            or (isinstance(edge_chunking, int) and not isinstance(edge_chunking, bool) and edge_chunking > 0)
        ):
            raise ValueError(f"{owner}: edge_chunking must be 'auto', None or a positive int, got {edge_chunking!r}")
        self.edge_chunking = edge_chunking
        if neighbor_list not in NEIGHBOR_LISTS:
            raise ValueError(f"{owner}: neighbor_list must be 'auto', 'torch' or 'matscipy', got {neighbor_list!r}")
        self.neighbor_list = neighbor_list
        self.device = resolve_device(device, owner)
        self.dtype = resolve_dtype(dtype)
        if tune_allocator and self.device.type == "cpu":
            runtime.keep_freed_memory()
        if isinstance(model, torch.nn.Module) and not eval_mode:
            self.model, default_name = converted_model(model, self.device, self.dtype), type(model).__name__
        else:
            self.model, default_name = load_for_inference(model, self.device, self.dtype)
        self.name = name if name is not None else default_name
        self.is_committee = isinstance(self.model, Committee)
        self.elements: List[int] = list(self.model.elements)
        self.cutoff: float = float(self.model.cutoff)
        if compile not in (True, False, "auto"):
            raise ValueError(f"{owner}: compile must be True, False or 'auto', got {compile!r}")
        if compile == "auto":
            compile = bool(getattr(self.model, "supports_compiled_inference", True))
        self.compiled = bool(compile)
        if compile:
            self.model.compile_energy()
        # The model call (one attribute, so that tests and interfaces can intercept it).
        self.model_call: Callable[..., Outputs] = self.model
        self.last_path: str | None = None
        self.last_memory_plan: MemoryPlan | None = None
        self._numbers: np.ndarray | None = None
        self._z: Tensor | None = None

    @classmethod
    def wrap(cls, model: torch.nn.Module, **options: Any) -> Evaluator:
        """An evaluator on ``model`` as it is: its device, dtype and train/eval mode, never a copy
        and, unless ``manage_threads=True``, torch's thread count as it is (e.g. for the trainer's
        helpers on the model being trained)."""
        reference = next(t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point())
        options.setdefault("manage_threads", False)
        return cls(model, device=reference.device, dtype=reference.dtype, eval_mode=False, **options)

    @property
    def itemsize(self) -> int:
        """Bytes per value of the model's dtype."""
        return torch.empty((), dtype=self.dtype).element_size()

    # ------------------------------------------------------------------ the model call
    def run(
        self, z: Tensor, pos: Tensor, batch: Tensor | None, cell: Tensor | None, n_atoms: int,
        edges: Tuple[Tensor, Tensor] | None = None,
    ) -> Outputs:
        """One model call on tensors already on the device in the dtype: z [N], pos [N, 3] Å, batch
        [N] (None: one structure), cell [B, 3, 3] Å (None: no PBC), optional neighbour list
        (edge_index [2, E], shifts [E, 3]). Out-of-memory errors become MemoryError."""
        try:
            with torch.enable_grad():
                if edges is not None:
                    return self.model.forward_with_neighbors(z, pos, batch, cell, edges[0], edges[1])
                return self.model_call(z, pos, batch, cell)
        except torch.cuda.OutOfMemoryError as error:
            raise MemoryError(f"{self.owner}: out of GPU memory for {n_atoms} atoms; use a smaller system") from error
        except RuntimeError as error:
            if "memory" in str(error).lower() and "alloc" in str(error).lower():
                raise MemoryError(f"{self.owner}: out of memory for {n_atoms} atoms: {error}") from error
            raise

    # ------------------------------------------------------------------ one structure
    def evaluate(
        self, numbers: Union[np.ndarray, Sequence[int]], positions: np.ndarray, cell: np.ndarray | None = None,
        pbc: PbcLike = None,
    ) -> Outputs:
        """One structure: atomic numbers [N], positions [N, 3] (Å, float64), cell [3, 3] (Å, rows
        a, b, c; None: not periodic), pbc [3] bool (None: every direction periodic where a cell is
        given; a slab or a wire goes through :func:`~forcefield_et.periodicity.model_cell`).
        Returns detached tensors: ``energy`` [1] (eV), ``forces`` [N, 3] (eV/Å), ``stress``
        [1, 3, 3] (eV/Å³, periodic structures whose cell has a volume); a committee adds
        ``energy_std`` [1] (eV) and ``forces_std`` [N] (eV/Å). Picks the neighbour list and the
        memory path of the call (see the class docstring)."""
        periodicity = model_cell(positions, cell, pbc, self.cutoff, self.owner)
        output = self._evaluate_periodic(numbers, positions, periodicity.cell)
        return _with_stress_of(output, periodicity)

    def _evaluate_periodic(
        self, numbers: Union[np.ndarray, Sequence[int]], positions: np.ndarray, cell: np.ndarray | None
    ) -> Outputs:
        """:meth:`evaluate` for a cell periodic in every direction (or None)."""
        numbers = np.asarray(numbers)
        n_atoms = len(numbers)
        if self._numbers is None or not np.array_equal(numbers, self._numbers):
            self._numbers = numbers.copy()
            self._z = torch.as_tensor(numbers, dtype=torch.long, device=self.device)
        if self.manage_threads and self.device.type == "cpu":
            apply_threads(n_atoms, requested=self.threads)
        periodic = cell is not None
        positions = np.asarray(positions, dtype=np.float64)
        pos = torch.as_tensor(centred(positions, periodic), dtype=self.dtype, device=self.device)
        cell_t = None
        if periodic:
            cell_t = torch.as_tensor(np.asarray(cell), dtype=self.dtype, device=self.device).unsqueeze(0)
        edges = None
        fixed_chunk = self.edge_chunking if isinstance(self.edge_chunking, int) else None
        if cell_t is not None and self.use_matscipy(n_atoms):
            edges = self.matscipy_edges(positions, np.asarray(cell))
        elif (n_atoms >= self.MEMORY_CHECK_MIN_ATOMS and self.device.type == "cpu") or fixed_chunk is not None:
            edges = radius_graph(pos, self.cutoff, None, cell_t)
        self.last_memory_plan = None
        chunk = fixed_chunk
        if edges is not None and self.device.type == "cpu":
            self.last_memory_plan = self.plan_memory(n_atoms, edges[0].shape[1])
            chunk = self.last_memory_plan.edge_chunk_size
        if chunk is not None and (edges is None or edges[0].shape[1] <= chunk):
            chunk = None  # one chunk holds every edge: the model takes all edges at once
        path = "all_edges" if chunk is None else "chunked"
        if edges is not None:  # INFO when the path changes (e.g. an MD run's first step), else DEBUG
            self.log.log(
                logging.INFO if path != self.last_path else logging.DEBUG,
                "%s: %d atoms, %d edges: %s path%s", self.owner, n_atoms, edges[0].shape[1], path,
                f" ({chunk} edges per chunk)" if chunk is not None else "",
            )
        self.last_path = path
        with _edge_chunking(self.model, chunk):
            output = self.run(self._z, pos, None, cell_t, n_atoms, edges)
        return detached(output)

    def plan_memory(self, n_atoms: int, n_edges: int) -> MemoryPlan:
        """The memory plan of one call on CPU (raises MemoryError when no allowed path fits)."""
        hyper = self.model.hyperparameters
        if self.edge_chunking == "auto":
            chunk, paths = self.EDGE_CHUNK_SIZE, ("all_edges", "chunked")
        elif self.edge_chunking is None:
            chunk, paths = self.EDGE_CHUNK_SIZE, ("all_edges",)
        else:
            chunk, paths = int(self.edge_chunking), ("chunked",)
        return runtime.plan_memory(
            n_atoms, n_edges, hyper["num_layers"], hyper["hidden_channels"], self.itemsize,
            num_rbf=hyper["num_rbf"], edge_chunk_size=chunk, paths=paths,
        )

    def use_matscipy(self, n_atoms: int) -> bool:
        """Whether a periodic structure of ``n_atoms`` atoms gets matscipy's neighbour list."""
        if self.neighbor_list == "torch" or self.device.type != "cpu":
            return False
        try:
            import matscipy.neighbours  # noqa: F401
        except ImportError:
            if self.neighbor_list == "matscipy":
                raise ImportError(f"{self.owner}: neighbor_list='matscipy' needs `pip install matscipy`") from None
            return False
        return self.neighbor_list == "matscipy" or n_atoms >= self.MATSCIPY_MIN_ATOMS

    def matscipy_edges(self, positions: np.ndarray, cell: np.ndarray) -> Tuple[Tensor, Tensor]:
        """(edge_index [2, E], shifts [E, 3]) of a periodic structure (positions [N, 3] and cell
        [3, 3] in Å) from matscipy, in the model's (i, j, S) convention."""
        from matscipy.neighbours import neighbour_list

        i, j, shifts = neighbour_list(
            "ijS", positions=positions, cell=cell, pbc=np.array([True, True, True]), cutoff=self.cutoff
        )
        edge_index = torch.as_tensor(np.stack([i, j]), dtype=torch.long, device=self.device)
        return edge_index, torch.as_tensor(shifts, dtype=self.dtype, device=self.device)

    # ------------------------------------------------------------------ batches
    def batch_ranges(self, edge_counts: Sequence[int], batch_size: int) -> List[Tuple[int, int]]:
        """Consecutive frame ranges (start, stop) of at most ``batch_size`` frames whose all-edges
        call fits in the available memory (:func:`forcefield_et.runtime.plan_batches`; on a GPU
        the frame count only)."""
        hyper = self.model.hyperparameters
        return runtime.plan_batches(
            edge_counts, batch_size, hyper["num_layers"], hyper["hidden_channels"], self.itemsize,
            check_memory=self.device.type == "cpu",
        )

    def edge_counts(self, pos: Tensor, batch: Tensor, cell: Tensor | None) -> Tensor:
        """Directed neighbour pairs per structure [B] of a batch (pos [N, 3] Å, batch [N], cell [B, 3, 3])."""
        return edges_per_structure(
            pos.to(self.device), self.cutoff, batch.to(self.device), None if cell is None else cell.to(self.device)
        ).cpu()

    def evaluate_batch(self, z: Tensor, pos: Tensor, batch: Tensor, cell: Tensor | None = None) -> Outputs:
        """One batched call: z [N], pos [N, 3] Å, batch [N] (structure index), cell [B, 3, 3] Å or None,
        moved to the device (in the dtype of ``pos``). Returns detached ``energy`` [B], ``forces``
        [N, 3], ``stress`` [B, 3, 3] (with a cell), and for a committee ``energy_std`` [B] and
        ``forces_std`` [N]. All edges at once; the caller sizes the batch (:meth:`batch_ranges`)."""
        z, pos, batch = z.to(self.device), pos.to(self.device), batch.to(self.device)
        if cell is not None:
            cell = cell.to(self.device)
        n_atoms = int(z.shape[0])
        if self.manage_threads and self.device.type == "cpu":
            apply_threads(n_atoms, requested=self.threads)
        return detached(self.run(z, pos, batch, cell, n_atoms))

    def evaluate_structures(
        self, structures: Sequence[Tuple[Any, ...]], batch_size: int = 64
    ) -> List[Outputs]:
        """Many structures, each (numbers [n], positions [n, 3] Å, cell [3, 3] Å or None) or (numbers,
        positions, cell, pbc [3]), in batched passes that fit in memory; periodic and non-periodic
        structures go in separate batches. Returns one dict per structure, as :meth:`evaluate`
        (energy [1], forces [n, 3], ...)."""
        periodicities = [model_cell(s[1], s[2], s[3] if len(s) > 3 else None, self.cutoff, self.owner)
                         for s in structures]
        structures = [(s[0], s[1], p.cell) for s, p in zip(structures, periodicities)]
        outputs = self._evaluate_structures(structures, batch_size)
        return [_with_stress_of(output, p) for output, p in zip(outputs, periodicities)]

    def _evaluate_structures(
        self, structures: Sequence[Tuple[np.ndarray, np.ndarray, np.ndarray | None]], batch_size: int
    ) -> List[Outputs]:
        """:meth:`evaluate_structures` for cells periodic in every direction (or None)."""
        results: List[Outputs | None] = [None] * len(structures)
        groups: Dict[bool, List[int]] = {False: [], True: []}
        for index, (_, _, cell) in enumerate(structures):
            groups[cell is not None].append(index)
        for indices in groups.values():
            counts: List[int] = []
            for start in range(0, len(indices), batch_size):
                part = [structures[i] for i in indices[start : start + batch_size]]
                _, pos, batch, cell = self._batch_tensors(part)
                counts += self.edge_counts(pos, batch, cell).tolist()
            for start, stop in self.batch_ranges(counts, batch_size):
                chunk = indices[start:stop]
                z, pos, batch, cell = self._batch_tensors([structures[i] for i in chunk])
                output = detached(self.run(z, pos, batch, cell, int(z.shape[0])))
                sizes = [len(structures[i][0]) for i in chunk]
                offsets = np.concatenate([[0], np.cumsum(sizes)])
                for k, index in enumerate(chunk):
                    results[index] = _structure_outputs(output, k, int(offsets[k]), int(offsets[k + 1]))
        return results  # type: ignore[return-value]

    def _batch_tensors(
        self, structures: Sequence[Tuple[np.ndarray, np.ndarray, np.ndarray | None]]
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """z [N], pos [N, 3] Å, batch [N], cell [B, 3, 3] Å (None unless periodic) of a list of
        structures, on the device in the dtype (non-periodic ones centred)."""
        counts = [len(numbers) for numbers, _, _ in structures]
        if self.manage_threads and self.device.type == "cpu":
            apply_threads(int(sum(counts)), requested=self.threads)
        z = torch.as_tensor(np.concatenate([numbers for numbers, _, _ in structures]), dtype=torch.long,
                            device=self.device)
        pos = torch.as_tensor(
            np.concatenate([centred(np.asarray(p, dtype=np.float64), c is not None) for _, p, c in structures]),
            dtype=self.dtype, device=self.device,
        )
        batch = torch.repeat_interleave(
            torch.arange(len(structures), device=self.device), torch.as_tensor(counts, device=self.device)
        )
        cell = None
        if structures[0][2] is not None:
            cell = torch.as_tensor(np.stack([c for _, _, c in structures]), dtype=self.dtype, device=self.device)
        return z, pos, batch, cell

    def predict(
        self, data: Any, batch_size: int = 32, progress: bool = False, keys: Sequence[str] = ("energy", "forces")
    ) -> Dict[str, np.ndarray]:
        """Predictions for every frame of a :class:`~forcefield_et.data.conformations.ConformationSet`
        (or its ``TensorConformations``), in batches of at most ``batch_size`` frames that fit in the
        available memory: ``energy`` [F] (eV) and ``forces`` [A, 3] (eV/Å), as float64 NumPy arrays
        (``keys`` selects which)."""
        from tqdm.auto import tqdm

        tensors = self.tensors(data)
        parts: Dict[str, List[Tensor]] = {key: [] for key in keys}
        for frames in tqdm(self.memory_batches(tensors, batch_size), desc="evaluate", unit="batch",
                           disable=not progress):
            batch = tensors.gather(frames)
            out = self.evaluate_batch(batch["z"], batch["pos"], batch["batch"], batch.get("cell"))
            for key in keys:
                parts[key].append(out[key].double().cpu())
        return {key: torch.cat(values).numpy() for key, values in parts.items()}

    def tensors(self, data: Any) -> Any:
        """``data`` as ``TensorConformations`` in the model's dtype (as it is when it already is one)."""
        from ..training.batching import TensorConformations

        return data if isinstance(data, TensorConformations) else TensorConformations(data, self.dtype, self.cutoff)

    def memory_batches(self, tensors: Any, batch_size: int) -> List[Tensor]:
        """Frame indices of consecutive batches of a ``TensorConformations``: at most ``batch_size``
        frames each, and small enough for the available memory (from each frame's neighbour pairs)."""
        counts = []
        for start in range(0, tensors.n_frames, batch_size):
            batch = tensors.gather(torch.arange(start, min(start + batch_size, tensors.n_frames)))
            counts.append(self.edge_counts(batch["pos"], batch["batch"], batch.get("cell")))
        edge_counts = torch.cat(counts).tolist() if counts else []
        return [torch.arange(start, stop) for start, stop in self.batch_ranges(edge_counts, batch_size)]


def _with_stress_of(output: Outputs, periodicity: ModelCell) -> Outputs:
    """The output with the model's stress converted to the structure's own cell (a slab's or a wire's),
    or without stress where the structure's cell has no volume."""
    if not periodicity.replaced or "stress" not in output:
        return output
    factor = periodicity.stress_factor()
    output = dict(output)
    if factor is None:
        del output["stress"]
    else:
        output["stress"] = output["stress"] * factor
    return output


def _structure_outputs(output: Outputs, k: int, first: int, stop: int) -> Outputs:
    """Structure ``k`` (atoms first..stop) of a batched output: per-structure entries [1, ...],
    per-atom entries [n, ...] (member arrays of a committee are left out)."""
    per_structure = ("energy", "energy_std", "stress")
    per_atom = ("forces", "forces_std")
    result = {key: output[key][k : k + 1] for key in per_structure if key in output}
    result.update({key: output[key][first:stop] for key in per_atom if key in output})
    return result


__all__ = ["Evaluator", "NonFiniteError", "centred", "converted_model", "load_for_inference", "resolve_device"]

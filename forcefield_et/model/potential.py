"""The potential: structure -> neighbours -> ET -> energy -> autograd forces (and stress).

``Potential.forward(z, pos, batch=None, cell=None)`` returns ``{'energy': [B] eV,
'forces': [N, 3] eV/Å}`` plus ``'stress': [B, 3, 3] eV/Å³`` when a cell is given. Forces are
F = -dE/dr (conservative by construction); stress is (1/V) dE/d(strain). The module is
TorchScript-compatible (``torch.jit.script``) and works in float32 or float64.
``Potential.set_edge_chunking(8192)`` trades time for memory on large systems (eager inference only).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..neighbors import radius_graph
from .et import EquivariantTransformer
from .heads import EnergyHead, sum_per_structure
from .priors import ZBLRepulsion

DEFAULT_ELEMENTS = (1, 6, 7, 8, 9, 16, 17)  # H C N O F S Cl
DEFAULT_HYPERPARAMETERS: Dict[str, Any] = {
    "hidden_channels": 128,
    "num_layers": 6,
    "num_heads": 8,
    "num_rbf": 32,
    "cutoff": 5.0,
    "elements": list(DEFAULT_ELEMENTS),
    "zbl": False,
}
MAX_ATOMIC_NUMBER = 118
MIN_DISTANCE = 0.01  # Å; closer pairs are rejected as overlapping atoms


class Potential(nn.Module):
    """Equivariant Transformer interatomic potential with autograd forces.

    Args:
        hidden_channels: feature width F.
        num_layers: attention layers.
        num_heads: attention heads.
        num_rbf: radial basis functions.
        cutoff: cutoff radius in Å.
        elements: supported atomic numbers; any other element is rejected with an error.
        zbl: add the ZBL screened nuclear repulsion (:class:`~forcefield_et.model.priors.ZBLRepulsion`)
            to the learned energy: False (off), True (switched off at the covalent radii sum), or a
            number that scales that switching distance. It has no weights, so it can be switched on
            for fine-tuning.
    """

    def __init__(
        self,
        hidden_channels: int = 128,
        num_layers: int = 6,
        num_heads: int = 8,
        num_rbf: int = 32,
        cutoff: float = 5.0,
        elements: Sequence[int] = DEFAULT_ELEMENTS,
        zbl: bool | float = False,
    ) -> None:
        super().__init__()
        elements = sorted({int(e) for e in elements})
        if not elements or elements[0] < 1 or elements[-1] > MAX_ATOMIC_NUMBER:
            raise ValueError(f"elements must be atomic numbers in 1..{MAX_ATOMIC_NUMBER}, got {elements}")
        self.hyperparameters: Dict[str, Any] = {
            "hidden_channels": int(hidden_channels),
            "num_layers": int(num_layers),
            "num_heads": int(num_heads),
            "num_rbf": int(num_rbf),
            "cutoff": float(cutoff),
            "elements": elements,
        }
        if zbl:  # absent when off, so that the cards of models without the prior stay as they were
            self.hyperparameters["zbl"] = zbl if isinstance(zbl, bool) else float(zbl)
        self.cutoff = float(cutoff)
        self.min_distance = MIN_DISTANCE
        self.elements: List[int] = elements
        lookup = torch.full((MAX_ATOMIC_NUMBER + 1,), -1, dtype=torch.long)
        lookup[torch.tensor(elements)] = torch.arange(len(elements))
        self.register_buffer("element_index", lookup)
        self.representation = EquivariantTransformer(
            len(elements), hidden_channels, num_layers, num_heads, num_rbf, cutoff
        )
        self.head = EnergyHead(hidden_channels, len(elements))
        self.use_zbl = bool(zbl)
        self.zbl = ZBLRepulsion(elements, 1.0 if isinstance(zbl, bool) else float(zbl))
        # Eager inference only (see compile_energy): a CompiledEnergyGradient, or None. Not in the state dict.
        self._compiled_energy: Any = None
        # Eager training only (see compile_training): a CompiledEnergyGradient, or None. Not in the state dict.
        self._compiled_training: Any = None

    def _check_inputs(self, z: Tensor, pos: Tensor, batch: Tensor, cell: Tensor | None) -> None:
        if z.dim() != 1 or z.dtype != torch.long:
            raise ValueError("Potential: z must be a 1-D torch.long tensor of atomic numbers [N]")
        if pos.dim() != 2 or pos.shape[1] != 3 or pos.shape[0] != z.shape[0]:
            raise ValueError("Potential: pos must have shape [N, 3] (Å) with N == len(z)")
        if pos.dtype != self.head.scale.dtype:
            raise ValueError(
                "Potential: pos dtype does not match the model dtype (use model.double() or model.float())"
            )
        if batch.dim() != 1 or batch.shape[0] != z.shape[0] or batch.dtype != torch.long:
            raise ValueError("Potential: batch must be a 1-D torch.long tensor [N]")
        if z.shape[0] == 0:
            raise ValueError("Potential: empty structure (no atoms)")
        if not bool(torch.isfinite(pos).all()):
            raise ValueError("Potential: positions contain NaN or inf")
        if bool((z < 1).any()) or bool((z >= self.element_index.shape[0]).any()):
            raise ValueError("Potential: atomic numbers must lie in 1..118")
        if bool((self.element_index[z] < 0).any()):
            raise ValueError("Potential: structure contains an element the model does not support")
        if cell is not None:
            if cell.dim() != 3 or cell.shape[1] != 3 or cell.shape[2] != 3:
                raise ValueError("Potential: cell must have shape [B, 3, 3] (Å, lattice vectors as rows)")
            if not bool(torch.isfinite(cell).all()):
                raise ValueError("Potential: cell contains NaN or inf")
            if bool((torch.abs(torch.linalg.det(cell)) < 1e-6).any()):
                raise ValueError("Potential: cell is degenerate (zero volume)")

    def forward(
        self, z: Tensor, pos: Tensor, batch: Tensor | None = None, cell: Tensor | None = None
    ) -> Dict[str, Tensor]:
        """z [N] long, pos [N, 3] Å, batch [N] long (None: one structure), cell [B, 3, 3] Å
        (None: no PBC). Returns energy [B] eV, forces [N, 3] eV/Å, and stress [B, 3, 3] eV/Å³
        when a cell is given."""
        batch, cell = self._prepare(z, pos, batch, cell)
        edge_index, shifts = radius_graph(pos.detach(), self.cutoff, batch, cell)
        return self._evaluate(z, pos, batch, cell, edge_index, shifts)

    @torch.jit.export
    def forward_with_neighbors(
        self, z: Tensor, pos: Tensor, batch: Tensor | None, cell: Tensor | None, edge_index: Tensor, shifts: Tensor
    ) -> Dict[str, Tensor]:
        """As :meth:`forward`, with a neighbour list computed elsewhere (e.g. matscipy for large
        periodic systems on CPU). ``edge_index`` [2, E] holds every ordered pair (i, j) within the
        cutoff, ``shifts`` [E, 3] integer cell shifts: edge vector = pos[j] - pos[i] + shifts @ cell.
        Pairs beyond the cutoff contribute nothing; missing pairs are the caller's responsibility."""
        batch, cell = self._prepare(z, pos, batch, cell)
        if edge_index.dim() != 2 or edge_index.shape[0] != 2 or shifts.shape[0] != edge_index.shape[1]:
            raise ValueError("Potential: edge_index must be [2, E] and shifts [E, 3]")
        return self._evaluate(z, pos, batch, cell, edge_index, shifts.to(pos.dtype))

    def _prepare(
        self, z: Tensor, pos: Tensor, batch: Tensor | None, cell: Tensor | None
    ) -> Tuple[Tensor, Tensor | None]:
        if batch is None:
            batch = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
        if cell is not None and cell.dim() == 2:
            cell = cell.unsqueeze(0)
        self._check_inputs(z, pos, batch, cell)
        if cell is not None and cell.shape[0] != int(batch.max()) + 1:
            raise ValueError("Potential: cell must hold one [3, 3] cell per structure in the batch")
        return batch, cell

    def _evaluate(
        self, z: Tensor, pos: Tensor, batch: Tensor, cell: Tensor | None, edge_index: Tensor, shifts: Tensor
    ) -> Dict[str, Tensor]:
        n_structures = int(batch.max()) + 1
        inputs, edge_vectors, cell = self._differentiable_geometry(pos, batch, cell, edge_index, shifts)
        pos = inputs[0]
        element = self.element_index[z]
        edge_gradient: Tensor | None = None
        if torch.jit.is_scripting():  # TorchScript keeps only this branch
            atom_energy = self._atom_energies(element, edge_index, edge_vectors)
        elif (
            self._compiled_training is not None
            and self.training
            and self.representation.edge_chunk_size is None
            and edge_index.shape[1] > 0
        ):
            atom_energy, edge_gradient = self._compiled_training(element, edge_index, edge_vectors)
        elif (
            self._compiled_energy is not None
            and not self.training
            and self.representation.edge_chunk_size is None
            and edge_index.shape[1] > 0
        ):
            # inference: energy and dE/d(edge vectors) in one compiled graph, without an autograd tape
            with torch.no_grad():
                atom_energy, edge_gradient = self._compiled_energy(element, edge_index, edge_vectors.detach())
        else:
            atom_energy = self._atom_energies(element, edge_index, edge_vectors)
        energy = sum_per_structure(atom_energy, batch, n_structures)

        if edge_gradient is None:
            grads = torch.autograd.grad([energy.sum()], inputs, create_graph=self.training, allow_unused=True)
        else:  # the compiled graph gave dE/d(edge vectors): chain it to the positions (and strain)
            seed: List[Optional[Tensor]] = [edge_gradient]
            grads = torch.autograd.grad(
                [edge_vectors], inputs, grad_outputs=seed, create_graph=self.training, allow_unused=True
            )
        grad_pos = grads[0]
        forces = -grad_pos if grad_pos is not None else torch.zeros_like(pos)
        result: Dict[str, Tensor] = {"energy": energy, "forces": forces}
        if cell is not None:
            grad_strain = grads[1]
            if grad_strain is None:
                grad_strain = torch.zeros_like(cell)
            volume = torch.abs(torch.linalg.det(cell.detach()))
            result["stress"] = grad_strain / volume.view(-1, 1, 1)
        return result

    def _differentiable_geometry(
        self, pos: Tensor, batch: Tensor, cell: Optional[Tensor], edge_index: Tensor, shifts: Tensor
    ) -> Tuple[List[Tensor], Tensor, Optional[Tensor]]:
        """The inputs that forces (and stress) differentiate, ``[positions]`` or ``[positions, strain]``,
        the edge vectors [E, 3] (Å) built from them, and the (strained) cell. A homogeneous strain is
        applied to positions and cell, so that dE/d(strain) gives the virial."""
        if not pos.requires_grad:
            pos = pos.detach().requires_grad_(True)
        inputs: List[Tensor] = [pos]
        positions = pos
        if cell is not None:
            strain = torch.zeros_like(cell).requires_grad_(True)
            symmetric = 0.5 * (strain + strain.transpose(1, 2))
            positions = pos + torch.bmm(pos.unsqueeze(1), symmetric[batch]).squeeze(1)
            cell = cell + torch.bmm(cell, symmetric)
            inputs.append(strain)
            edge_vectors = positions.index_select(0, edge_index[1]) - positions.index_select(0, edge_index[0])
            edge_cells = cell.index_select(0, batch.index_select(0, edge_index[0]))
            edge_vectors = edge_vectors + torch.bmm(shifts.unsqueeze(1), edge_cells).squeeze(1)
        else:
            edge_vectors = positions.index_select(0, edge_index[1]) - positions.index_select(0, edge_index[0])
        if edge_vectors.shape[0] > 0:
            if bool((edge_vectors.detach().pow(2).sum(-1) < self.min_distance * self.min_distance).any()):
                raise ValueError("Potential: two atoms are at the same position (closer than 0.01 Å)")
        return inputs, edge_vectors, cell

    def _atom_features(self, element: Tensor, edge_index: Tensor, edge_vectors: Tensor) -> Tuple[Tensor, Tensor]:
        """Scalar features of the atoms [N, F] and of one isolated atom per supported element
        [n_elements, F], from element indices [N], edges [2, E] and edge vectors [E, 3] (Å)."""
        # The isolated (edge-free) atoms ride along in the same pass: their features define the
        # energy zero of each element (see EnergyHead).
        n_atoms = element.shape[0]
        references = torch.arange(len(self.elements), device=element.device)
        x_all, _ = self.representation(torch.cat([element, references]), edge_index, edge_vectors, False)
        return x_all[:n_atoms], x_all[n_atoms:]

    def _atom_energies(self, element: Tensor, edge_index: Tensor, edge_vectors: Tensor) -> Tensor:
        """Per-atom energies [N] (eV) from element indices [N], edges [2, E] and edge vectors [E, 3] (Å)."""
        x, x_isolated = self._atom_features(element, edge_index, edge_vectors)
        energies = self.head.atom_energies(x, element, x_isolated)
        if self.use_zbl:
            energies = energies + self.zbl(element, edge_index, edge_vectors, element.shape[0])
        return energies

    @torch.jit.unused
    def compile_energy(self, enabled: bool = True, **compile_options: Any) -> None:
        """Compile inference (eval mode, no edge chunking): the energy and its gradient with respect
        to the edge vectors are traced into one graph (:mod:`forcefield_et.model.compiled_training`)
        and compiled with ``torch.compile`` (inductor, dynamic numbers of atoms and edges); the
        forces (and stress) follow from that gradient by the chain rule through the edge vectors,
        without an autograd tape over the network. The neighbour list, the input checks and the
        memory-saving chunked path stay eager; training mode uses :meth:`compile_training`.

        The first call traces and compiles (about a minute on a small CPU); results equal the eager
        ones to float rounding. ``enabled=False`` restores eager. ``compile_options`` go to
        ``torch.compile``."""
        if not enabled:
            self._compiled_energy = None
            return
        from .compiled_training import CompiledEnergyGradient

        self._compiled_energy = CompiledEnergyGradient(self, differentiable=False, **compile_options)

    @torch.jit.unused
    def compile_training(self, enabled: bool = True, **compile_options: Any) -> None:
        """Compile the training-mode energy and force computation (eager, ``model.train()``, no edge
        chunking): the energy and its gradient with respect to the edge vectors run as one
        inductor graph whose backward gives the weight gradients of a force loss
        (:mod:`forcefield_et.model.compiled_training`). The first training call traces and compiles
        (about a minute on a small CPU); results equal the eager double backward to float rounding.
        ``enabled=False`` restores eager."""
        if not enabled:
            self._compiled_training = None
            return
        from .compiled_training import CompiledEnergyGradient

        self._compiled_training = CompiledEnergyGradient(self, **compile_options)

    @torch.jit.unused
    def set_zbl(self, enabled: bool | float) -> None:
        """Switch the ZBL repulsion prior on (True, or a scale of its switching distance) or off
        (recorded in ``hyperparameters``)."""
        self.use_zbl = bool(enabled)
        if self.use_zbl:
            scale = 1.0 if isinstance(enabled, bool) else float(enabled)
            self.zbl = ZBLRepulsion(self.elements, scale).to(self.head.scale.device)
            self.hyperparameters["zbl"] = enabled if isinstance(enabled, bool) else scale
        else:
            self.hyperparameters.pop("zbl", None)

    @torch.jit.unused
    def set_edge_chunking(self, edge_chunk_size: int | None) -> None:
        """Memory-saving inference mode for large systems: with ``edge_chunk_size`` (edges per
        chunk, e.g. 8192) every layer's edge-level work runs over chunks of that many edges under
        activation checkpointing (the strategy in :mod:`forcefield_et.model.chunked`; the inference
        engine, :class:`forcefield_et.inference.Evaluator`, sets it per call from its memory plan), so
        that the backward pass keeps one chunk's [chunk, 3, F] messages
        instead of all [E, 3, F] ones (about 1.3-1.5x the time per call; results equal up to float
        rounding). ``None`` (the default) restores the all-edges path. Only structures with more
        edges than one chunk are chunked. Eager inference only: in ``train()`` mode the forward
        raises RuntimeError, and ``torch.jit.script`` always compiles the all-edges path."""
        self.representation.set_edge_chunking(edge_chunk_size)

    @property
    @torch.jit.unused
    def edge_chunk_size(self) -> int | None:
        """Edges per chunk of the memory-saving mode, or None (all edges at once)."""
        return self.representation.edge_chunk_size

    @torch.jit.unused
    def supported_symbols(self) -> List[str]:
        """Chemical symbols of the supported elements."""
        from ..elements import symbol

        return [symbol(z) for z in self.elements]


def build_model(**hyperparameters: Any) -> Potential:
    """Build a freshly initialised :class:`Potential`.

    Defaults: 128 hidden channels, 6 layers, 8 heads, 32 RBF, cutoff 5 Å, elements
    H C N O F S Cl. Unknown keyword arguments raise a TypeError.
    """
    unknown = set(hyperparameters) - set(DEFAULT_HYPERPARAMETERS)
    if unknown:
        raise TypeError(
            f"build_model: unknown hyperparameters {sorted(unknown)}; known: {sorted(DEFAULT_HYPERPARAMETERS)}"
        )
    config = {**DEFAULT_HYPERPARAMETERS, **hyperparameters}
    return Potential(**config)

"""A committee of output heads: one ET representation, K energy heads.

:class:`HeadCommittee` is one checkpoint that evaluates the Equivariant Transformer once and K
energy heads (:class:`~forcefield_et.model.heads.EnergyHead`) on its features. Each head's forces
are -dE_k/dr (one backward pass per head through the shared representation, batched), and the
result is what a :class:`~forcefield_et.model.Committee` of K checkpoints returns: the mean energy
and forces, ``energy_std`` [B] (eV), ``forces_std`` [N] (eV/Å, per atom sqrt(mean_k |F_k -
F_mean|^2)), ``member_energies`` [K, B] and ``member_forces`` [K, N, 3]. It is a subclass of both
:class:`Committee` (so that every committee consumer accepts it: ``ETCalculator``, ``forcefield-et
md --max-force-std``, ``select``, ``ForceStdReporter``) and :class:`Potential` (same input checks,
neighbour lists, edge chunking and checkpoint layout, plus ``extra_heads.<k>.*`` weights and the
metadata entry ``committee_heads``). A single :class:`Potential` is not changed by any of this.

Training (:func:`forcefield_et.training.committee.train_head_committee`, ``forcefield-et finetune
--committee K --committee-kind heads``): in ``train()`` mode with ``structure_heads`` set (one head
index per structure of the batch), structure b's energy and forces come from head
``structure_heads[b]`` only, so that each head learns from its own frames while the representation
learns from all of them, at the cost of one model.
"""

from __future__ import annotations

from typing import Any, Dict, List

import torch
from torch import Tensor, nn

from ..neighbors import radius_graph
from .committee import Committee, combine_members
from .heads import EnergyHead, sum_per_structure
from .potential import Potential


class HeadCommittee(Committee, Potential):
    """K energy heads on one ET representation (see the module docstring).

    Args:
        n_heads: K >= 2.
        **hyperparameters: the :class:`Potential` hyperparameters of the shared representation.
    """

    def __init__(self, n_heads: int, **hyperparameters: Any) -> None:
        if isinstance(n_heads, bool) or not isinstance(n_heads, int) or n_heads < 2:
            raise ValueError(f"HeadCommittee: needs at least 2 heads, got {n_heads!r}")
        Potential.__init__(self, **hyperparameters)
        hidden = self.hyperparameters["hidden_channels"]
        self.extra_heads = nn.ModuleList([EnergyHead(hidden, len(self.elements)) for _ in range(n_heads - 1)])
        self.n_heads = int(n_heads)
        self.metadata: Dict[str, Any] = {}
        self.source: str | None = None
        # train() mode only: the head of each structure of the next batch ([B] long), or None
        self.structure_heads: Tensor | None = None

    @classmethod
    def from_potential(cls, potential: Potential, n_heads: int, head_noise: float = 0.1,
                       seed: int = 0) -> HeadCommittee:
        """A committee whose representation is ``potential``'s and whose K heads are copies of its
        energy head with independent Gaussian noise added to every MLP weight and bias (standard
        deviation ``head_noise`` times that tensor's own standard deviation; generator seeded by
        ``seed`` and the head index). ``head_noise=0`` gives K identical heads."""
        model = cls(n_heads, **potential.hyperparameters)
        model.load_state_dict(potential.state_dict(), strict=False)
        for head in model.extra_heads:
            head.load_state_dict(potential.head.state_dict())
        model = model.to(device=potential.head.scale.device, dtype=potential.head.scale.dtype)
        if head_noise > 0:
            with torch.no_grad():
                for k, head in enumerate(model.all_heads()):
                    generator = torch.Generator().manual_seed(int(seed) * 1000 + k)
                    for tensor in head.mlp.parameters():
                        scale = float(tensor.std()) if tensor.numel() > 1 else float(tensor.abs().max())
                        noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
                        tensor.add_((head_noise * max(scale, 1e-3) * noise).to(tensor))
        model.metadata = dict(getattr(potential, "metadata", {}) or {})
        return model.train(potential.training)

    def all_heads(self) -> List[EnergyHead]:
        """The K energy heads (head 0 is ``head``, the one a :class:`Potential` has)."""
        return [self.head, *self.extra_heads]

    def __len__(self) -> int:
        return self.n_heads

    # the Committee API, on the shared representation
    @property
    def edge_chunk_size(self) -> int | None:
        return self.representation.edge_chunk_size

    def set_edge_chunking(self, edge_chunk_size: int | None) -> None:
        Potential.set_edge_chunking(self, edge_chunk_size)

    supports_compiled_inference = False  # Evaluator(compile="auto") evaluates it eagerly

    def compile_energy(self, enabled: bool = True, **compile_options: Any) -> None:
        if enabled:
            raise NotImplementedError("HeadCommittee: compiled inference is not available; evaluate it eagerly")

    def compile_training(self, enabled: bool = True, **compile_options: Any) -> None:
        if enabled:
            raise NotImplementedError("HeadCommittee: compiled training is not available; train it eagerly")

    def forward(
        self, z: Tensor, pos: Tensor, batch: Tensor | None = None, cell: Tensor | None = None
    ) -> Dict[str, Tensor]:
        """As :meth:`Committee.forward` (eval mode) or :meth:`Potential.forward` with each structure
        on its own head (train mode with ``structure_heads`` set)."""
        batch, cell = self._prepare(z, pos, batch, cell)
        edge_index, shifts = radius_graph(pos.detach(), self.cutoff, batch, cell)
        return self._evaluate(z, pos, batch, cell, edge_index, shifts)

    def forward_with_neighbors(
        self, z: Tensor, pos: Tensor, batch: Tensor | None, cell: Tensor | None, edge_index: Tensor, shifts: Tensor
    ) -> Dict[str, Tensor]:
        return Potential.forward_with_neighbors(self, z, pos, batch, cell, edge_index, shifts)

    def _evaluate(
        self, z: Tensor, pos: Tensor, batch: Tensor, cell: Tensor | None, edge_index: Tensor, shifts: Tensor
    ) -> Dict[str, Tensor]:
        n_structures = int(batch.max()) + 1
        inputs, edge_vectors, cell = self._differentiable_geometry(pos, batch, cell, edge_index, shifts)
        pos = inputs[0]
        element = self.element_index[z]
        n_atoms = element.shape[0]
        x, x_isolated = self._atom_features(element, edge_index, edge_vectors)
        atom_energies = torch.stack([head.atom_energies(x, element, x_isolated) for head in self.all_heads()])
        if self.use_zbl:
            atom_energies = atom_energies + self.zbl(element, edge_index, edge_vectors, n_atoms)
        energies = sum_per_structure(atom_energies.t(), batch, n_structures).t()  # [K, B]

        if self.training and self.structure_heads is not None:  # each structure on its own head
            heads = self.structure_heads.to(device=energies.device, dtype=torch.long)
            if heads.shape != (n_structures,) or bool((heads < 0).any()) or bool((heads >= self.n_heads).any()):
                raise ValueError(f"HeadCommittee: structure_heads must be [{n_structures}] head indices in "
                                 f"0..{self.n_heads - 1}")
            energy = energies.gather(0, heads.unsqueeze(0)).squeeze(0)
            grads = torch.autograd.grad([energy.sum()], inputs, create_graph=True, allow_unused=True)
            result = self._result(energy, grads, pos, cell)
            return result

        # every head: one batched backward pass (K vector-Jacobian products through the shared graph)
        totals = energies.sum(1)
        if self.representation.edge_chunk_size is None:
            seed = torch.eye(self.n_heads, dtype=totals.dtype, device=totals.device)
            grads = torch.autograd.grad([totals], inputs, grad_outputs=[seed], create_graph=self.training,
                                        allow_unused=True, is_grads_batched=True)
            per_head = [self._result(energies[k], [g[k] if g is not None else None for g in grads], pos, cell)
                        for k in range(self.n_heads)]
        else:  # the chunked path's custom backward is not batched: one pass per head
            per_head = []
            for k in range(self.n_heads):
                grads = torch.autograd.grad([totals[k]], inputs, retain_graph=k < self.n_heads - 1,
                                            create_graph=self.training, allow_unused=True)
                per_head.append(self._result(energies[k], grads, pos, cell))
        return combine_members(per_head)

    @staticmethod
    def _result(energy: Tensor, grads: Any, pos: Tensor, cell: Tensor | None) -> Dict[str, Tensor]:
        grad_pos = grads[0]
        result: Dict[str, Tensor] = {"energy": energy,
                                     "forces": -grad_pos if grad_pos is not None else torch.zeros_like(pos)}
        if cell is not None:
            grad_strain = grads[1] if grads[1] is not None else torch.zeros_like(cell)
            volume = torch.abs(torch.linalg.det(cell.detach()))
            result["stress"] = grad_strain / volume.view(-1, 1, 1)
        return result


__all__ = ["HeadCommittee"]

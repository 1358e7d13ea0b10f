"""A committee of potentials: the mean prediction and the spread of its members.

A committee is M potentials of one architecture (cutoff, elements), typically fine-tuned from
one start with different seeds. :class:`Committee` evaluates every member on one neighbour list
and returns the members' mean energy and forces (forces stay conservative: the mean force is
-d(mean energy)/dr) together with their spread, a measure of how unsure the model is:

- ``energy_std`` [B] (eV): sqrt(mean_m (E_m - E_mean)^2) per structure;
- ``forces_std`` [N] (eV/Å): per atom, sqrt(mean_m |F_m - F_mean|^2), the root-mean-square
  length of the members' deviation vectors from the mean force (population standard deviation
  over members, all three components together).
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import torch
from torch import Tensor, nn

from ..neighbors import radius_graph
from .potential import Potential


class Committee(nn.Module):
    """M :class:`Potential` members evaluated on one neighbour list.

    ``forward(z, pos, batch=None, cell=None)`` returns ``energy`` [B] (eV) and ``forces`` [N, 3]
    (eV/Å), the member means, ``stress`` [B, 3, 3] (eV/Å³, mean) when a cell is given,
    ``energy_std`` [B] (eV), ``forces_std`` [N] (eV/Å) (see the module docstring), and the
    members' own ``member_energies`` [M, B] and ``member_forces`` [M, N, 3].

    Args:
        members: at least two potentials with the same cutoff and elements.
    """

    def __init__(self, members: Sequence[Potential]) -> None:
        super().__init__()
        members = list(members)
        if len(members) < 2:
            raise ValueError(f"Committee: needs at least 2 members, got {len(members)}")
        first = members[0]
        for index, member in enumerate(members[1:], start=1):
            if float(member.cutoff) != float(first.cutoff) or list(member.elements) != list(first.elements):
                raise ValueError(
                    f"Committee: member {index} has cutoff {member.cutoff} Å and elements {member.elements}, member 0 "
                    f"has {first.cutoff} Å and {first.elements}; committee members must share both"
                )
        self.members = nn.ModuleList(members)
        self.cutoff = float(first.cutoff)
        self.elements: List[int] = list(first.elements)
        self.hyperparameters: Dict[str, Any] = dict(first.hyperparameters)
        self.metadata: Dict[str, Any] = {"committee": [getattr(m, "metadata", {}) for m in members]}
        self.source: str | None = None  # the committee file or directory it was loaded from, if any

    def __len__(self) -> int:
        return len(self.members)

    @property
    def edge_chunk_size(self) -> int | None:
        """Edges per chunk of the members' memory-saving mode (None: all edges at once)."""
        return self.members[0].edge_chunk_size

    def set_edge_chunking(self, edge_chunk_size: int | None) -> None:
        """Set every member's edge chunking (see :meth:`Potential.set_edge_chunking`)."""
        for member in self.members:
            member.set_edge_chunking(edge_chunk_size)

    def compile_energy(self, enabled: bool = True, **compile_options: Any) -> None:
        """``torch.compile`` every member's energy part (see :meth:`Potential.compile_energy`)."""
        for member in self.members:
            member.compile_energy(enabled, **compile_options)

    def forward(
        self, z: Tensor, pos: Tensor, batch: Tensor | None = None, cell: Tensor | None = None
    ) -> Dict[str, Tensor]:
        """z [N] long, pos [N, 3] Å, batch [N] long (None: one structure), cell [B, 3, 3] Å (None:
        no PBC). One neighbour list for all members; returns the dict described in the class docstring."""
        batch, cell = self.members[0]._prepare(z, pos, batch, cell)
        edge_index, shifts = radius_graph(pos.detach(), self.cutoff, batch, cell)
        return self.forward_with_neighbors(z, pos, batch, cell, edge_index, shifts)

    def forward_with_neighbors(
        self, z: Tensor, pos: Tensor, batch: Tensor | None, cell: Tensor | None, edge_index: Tensor, shifts: Tensor
    ) -> Dict[str, Tensor]:
        """As :meth:`forward`, with a neighbour list computed elsewhere (see
        :meth:`Potential.forward_with_neighbors`)."""
        outputs = [member.forward_with_neighbors(z, pos, batch, cell, edge_index, shifts) for member in self.members]
        return combine_members(outputs)


def combine_members(outputs: Sequence[Dict[str, Tensor]]) -> Dict[str, Tensor]:
    """Mean and spread of member outputs (each with ``energy`` [B], ``forces`` [N, 3] and
    optionally ``stress`` [B, 3, 3]); see :class:`Committee` for the keys returned."""
    energies = torch.stack([o["energy"] for o in outputs])  # [M, B]
    forces = torch.stack([o["forces"] for o in outputs])  # [M, N, 3]
    mean_energy = energies.mean(0)
    mean_forces = forces.mean(0)
    result: Dict[str, Tensor] = {
        "energy": mean_energy,
        "forces": mean_forces,
        "energy_std": (energies - mean_energy).pow(2).mean(0).sqrt(),
        "forces_std": (forces - mean_forces).pow(2).sum(-1).mean(0).sqrt(),
        "member_energies": energies,
        "member_forces": forces,
    }
    if all("stress" in o for o in outputs):
        result["stress"] = torch.stack([o["stress"] for o in outputs]).mean(0)
    return result


__all__ = ["Committee", "combine_members"]

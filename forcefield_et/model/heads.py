"""Output heads: per-atom features -> energies and molecular properties."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn


def _mlp(hidden_channels: int, out_channels: int = 1) -> nn.Sequential:
    mlp = nn.Sequential(
        nn.Linear(hidden_channels, hidden_channels // 2),
        nn.SiLU(),
        nn.Linear(hidden_channels // 2, out_channels),
    )
    for layer in (mlp[0], mlp[2]):
        nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(layer.bias)
    return mlp


def sum_per_structure(values: Tensor, batch: Tensor, n_structures: int) -> Tensor:
    """Sum per-atom ``values`` [N] or [N, k] over the atoms of each structure (``batch`` [N]
    gives each atom's structure index) -> [B] or [B, k], same dtype and device."""
    shape = [n_structures] + list(values.shape[1:])
    return torch.zeros(shape, dtype=values.dtype, device=values.device).index_add_(0, batch, values)


class EnergyHead(nn.Module):
    """E_b = sum_{i in b} (scale * (MLP(x_i) - MLP(x_iso[element_i])) + shift + E0[element_i]), in eV.

    ``x_iso`` are the features of an isolated atom of each element, so that a single atom, or
    atoms farther apart than the cutoff, get exactly the reference energy shift + E0.

    ``scale`` and ``shift`` standardise the network output (eV); ``atomic_energies`` [n_elements]
    are per-element reference energies E0 (eV). All three are buffers stored in checkpoints.
    """

    def __init__(self, hidden_channels: int, num_elements: int) -> None:
        super().__init__()
        self.mlp = _mlp(hidden_channels)
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("shift", torch.tensor(0.0))
        self.register_buffer("atomic_energies", torch.zeros(num_elements))

    def forward(
        self, x: Tensor, element: Tensor, batch: Tensor, n_structures: int, x_isolated: Optional[Tensor] = None
    ) -> Tensor:
        """x [N, F], element [N], batch [N], x_isolated [n_elements, F] -> energies [B] (eV)."""
        return sum_per_structure(self.atom_energies(x, element, x_isolated), batch, n_structures)

    def atom_energies(self, x: Tensor, element: Tensor, x_isolated: Optional[Tensor] = None) -> Tensor:
        """Per-atom energies [N] (eV); their sum over each structure is :meth:`forward`."""
        if x_isolated is None:
            output = self.mlp(x).squeeze(-1)
        else:  # one MLP call for the atoms and the isolated-atom references
            both = self.mlp(torch.cat([x, x_isolated], dim=0)).squeeze(-1)
            output = both[: x.shape[0]] - both[x.shape[0] :].index_select(0, element)
        return output * self.scale + self.shift + self.atomic_energies.index_select(0, element)


class ScalarPropertyHead(nn.Module):
    """A molecular scalar property (e.g. QM9 U0, HOMO): sum or mean over atoms of an MLP."""

    def __init__(self, hidden_channels: int, num_elements: int, reduce: str = "sum") -> None:
        super().__init__()
        if reduce not in ("sum", "mean"):
            raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
        self.reduce = reduce
        self.mlp = _mlp(hidden_channels)
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("shift", torch.tensor(0.0))
        self.register_buffer("atomic_offsets", torch.zeros(num_elements))

    def forward(self, x: Tensor, vec: Tensor, element: Tensor, pos: Tensor, batch: Tensor, n_structures: int) -> Tensor:
        per_atom = self.mlp(x).squeeze(-1) * self.scale + self.atomic_offsets[element]
        total = sum_per_structure(per_atom, batch, n_structures)
        if self.reduce == "mean":
            total = total / sum_per_structure(torch.ones_like(per_atom), batch, n_structures)
        return total + self.shift


class DipoleHead(nn.Module):
    """Dipole-moment vector [B, 3] (units of the training data, e.g. e·Å or Debye-scaled):
    mu = sum_i q_i (r_i - r_centre) + sum_i W v_i, with charges q_i from an MLP, neutralised per
    molecule, plus an equivariant term from the vector features."""

    def __init__(self, hidden_channels: int) -> None:
        super().__init__()
        self.charge_mlp = _mlp(hidden_channels)
        self.vector_proj = nn.Linear(hidden_channels, 1, bias=False)
        self.register_buffer("scale", torch.tensor(1.0))

    def forward(self, x: Tensor, vec: Tensor, element: Tensor, pos: Tensor, batch: Tensor, n_structures: int) -> Tensor:
        charges = self.charge_mlp(x).squeeze(-1)
        counts = sum_per_structure(torch.ones_like(charges), batch, n_structures)
        charges = charges - (sum_per_structure(charges, batch, n_structures) / counts)[batch]
        centre = sum_per_structure(pos, batch, n_structures) / counts.unsqueeze(-1)
        atomic = charges.unsqueeze(-1) * (pos - centre[batch]) + self.vector_proj(vec).squeeze(-1)
        return sum_per_structure(atomic, batch, n_structures) * self.scale

"""Physical priors added to the learned energy.

:class:`ZBLRepulsion` is the Ziegler-Biersack-Littmark universal screened nuclear repulsion
(ZBL 1985), switched off smoothly at the sum of the two atoms' covalent radii (as in MACE's
``ZBLBasis``) times ``radius_scale``. It keeps atoms apart where the training data has no frames (fused or nearly fused
pairs), and vanishes, with its first and second derivatives, beyond bonding distances.

    E_ij = k_e Z_i Z_j / r * phi(r / a) * s(r / r_c),   a = 0.46850 Å / (Z_i^0.23 + Z_j^0.23),
    phi(x) = 0.18175 e^-3.19980x + 0.50986 e^-0.94229x + 0.28022 e^-0.40290x + 0.02817 e^-0.20162x,
    s(x) = 1 - 28 x^6 + 48 x^7 - 21 x^8 for x < 1 (else 0),  r_c = radius_scale (r_cov,i + r_cov,j).

With ``radius_scale`` 1 the prior still acts at the equilibrium length of short bonds (aromatic
C-C, C=O), which the network then has to cancel; a smaller scale (e.g. 0.75) confines it to
strongly compressed pairs.

Energies in eV, distances in Å. The module has no trainable parameters and nothing in the state
dict: its tables are rebuilt from the element list.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

COULOMB_EV_A = 14.399645  # e^2 / (4 pi eps0) in eV·Å
ZBL_LENGTH_A = 0.46850  # 0.8854 * Bohr radius, Å
ZBL_COEFFICIENTS = (0.18175, 0.50986, 0.28022, 0.02817)
ZBL_EXPONENTS = (3.19980, 0.94229, 0.40290, 0.20162)


def covalent_radii(atomic_numbers: Sequence[int]) -> list:
    """Covalent radii (Å, Cordero et al. 2008, as tabulated by ASE) of the given elements."""
    from ase.data import covalent_radii as table

    return [float(table[int(z)]) for z in atomic_numbers]


class ZBLRepulsion(nn.Module):
    """Per-atom ZBL repulsion energies [N] (eV) from element indices and edge vectors."""

    def __init__(self, elements: Sequence[int], radius_scale: float = 1.0) -> None:
        super().__init__()
        if not 0 < radius_scale < float("inf"):
            raise ValueError(f"ZBL radius_scale must be positive, got {radius_scale}")
        table = {
            "atomic_number": [float(z) for z in elements],
            "covalent_radius": [radius_scale * r for r in covalent_radii(elements)],
            "coefficients": list(ZBL_COEFFICIENTS),
            "exponents": list(ZBL_EXPONENTS),
        }
        for name, values in table.items():  # float64 here; the model's .float()/.double() casts them
            self.register_buffer(name, torch.tensor(values, dtype=torch.float64), persistent=False)
        self.screening_length = ZBL_LENGTH_A
        self.coulomb = COULOMB_EV_A

    def pair_energies(self, element_i: Tensor, element_j: Tensor, distances: Tensor) -> Tensor:
        """Energy [E] (eV) of each ordered pair; element indices [E], distances [E] in Å."""
        dtype = distances.dtype
        z_i = self.atomic_number.to(dtype).index_select(0, element_i)
        z_j = self.atomic_number.to(dtype).index_select(0, element_j)
        screening = self.screening_length / (z_i.pow(0.23) + z_j.pow(0.23))
        x = (distances / screening).unsqueeze(-1)
        phi = (self.coefficients.to(dtype) * torch.exp(-self.exponents.to(dtype) * x)).sum(-1)
        r_cut = self.covalent_radius.to(dtype).index_select(0, element_i) + self.covalent_radius.to(
            dtype
        ).index_select(0, element_j)
        u = torch.clamp(distances / r_cut, max=1.0)
        switch = 1.0 - 28.0 * u.pow(6) + 48.0 * u.pow(7) - 21.0 * u.pow(8)
        return self.coulomb * z_i * z_j / distances * phi * switch

    def forward(self, element: Tensor, edge_index: Tensor, edge_vectors: Tensor, n_atoms: int) -> Tensor:
        """element [N'] indices (N' >= n_atoms), edge_index [2, E], edge_vectors [E, 3] Å ->
        per-atom energies [n_atoms] (eV), each pair's energy split evenly between its two atoms
        (both orderings of a pair are in the edge list)."""
        distances = torch.linalg.norm(edge_vectors, dim=-1)
        i, j = edge_index[0], edge_index[1]
        energy = self.pair_energies(element.index_select(0, i), element.index_select(0, j), distances)
        out = torch.zeros(n_atoms, dtype=edge_vectors.dtype, device=edge_vectors.device)
        return out.index_add(0, i, 0.5 * energy)

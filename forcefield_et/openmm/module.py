"""A TorchScript-able wrapper that exposes a :class:`~forcefield_et.Potential` in OpenMM units.

OpenMM works in nm and kJ/mol; the potential in Å and eV. :class:`OpenMMModule` converts at
the edge (constants from :mod:`forcefield_et.units` only), selects the ML atoms of a larger
system (ML/MM) and scatters their forces back, so that it can be handed to
``openmmtorch.TorchForce`` (with ``setOutputsForces(True)``) or called from an
``openmm.PythonForce`` callback.
"""

from __future__ import annotations

import copy
from typing import Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..dtypes import resolve_dtype
from ..units import EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM, EV_TO_KJ_PER_MOL, NM_TO_ANGSTROM

__all__ = ["OpenMMModule"]


class OpenMMModule(nn.Module):
    """OpenMM-facing wrapper of a potential: nm in, kJ/mol and kJ/mol/nm out.

    ``forward(positions [N_total, 3] nm, boxvectors [3, 3] nm or None) -> (energy [] kJ/mol,
    forces [N_total, 3] kJ/mol/nm)``. Only the atoms in ``atom_indices`` (all atoms when
    None) are passed to the potential; every other atom gets a zero force. Outputs have the
    dtype of ``positions``; the potential runs in ``dtype``.

    Args:
        model: the potential (a :class:`~forcefield_et.Potential`); it is copied, never modified.
        atomic_numbers: atomic numbers of the ML atoms ([M], in ``atom_indices`` order).
        atom_indices: indices of the ML atoms in the OpenMM system ([M]); None: the whole
            system is ML and N_total must equal M.
        dtype: "float32" or "float64" (or a torch dtype); None keeps the model's dtype.

    Box vectors are rows (a, b, c) as OpenMM passes them; the model sees the same lattice in Å.
    """

    def __init__(
        self,
        model: nn.Module,
        atomic_numbers: Union[Sequence[int], Tensor],
        atom_indices: Union[Sequence[int], Tensor] | None = None,
        dtype: Union[str, torch.dtype] | None = None,
    ) -> None:
        super().__init__()
        model = copy.deepcopy(model).eval()
        if dtype is not None:
            model = model.to(resolve_dtype(dtype))
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        reference = next(iter(model.parameters()), None)
        model_dtype = reference.dtype if reference is not None else torch.get_default_dtype()
        self.model = model

        numbers = torch.as_tensor(atomic_numbers, dtype=torch.long).reshape(-1)
        if numbers.numel() == 0:
            raise ValueError("OpenMMModule: atomic_numbers is empty")
        if atom_indices is None:
            indices = torch.arange(numbers.shape[0], dtype=torch.long)
            use_subset = False
        else:
            indices = torch.as_tensor(atom_indices, dtype=torch.long).reshape(-1)
            if indices.shape[0] != numbers.shape[0]:
                raise ValueError(
                    f"OpenMMModule: {indices.shape[0]} atom_indices but {numbers.shape[0]} atomic_numbers; "
                    "give one atomic number per ML atom, in atom_indices order"
                )
            if bool((indices < 0).any()):
                raise ValueError("OpenMMModule: atom_indices must be non-negative")
            if torch.unique(indices).shape[0] != indices.shape[0]:
                raise ValueError("OpenMMModule: atom_indices contains duplicates")
            use_subset = True
        self.register_buffer("atomic_numbers", numbers)
        self.register_buffer("atom_indices", indices)
        # An empty tensor whose dtype is the model's compute dtype (follows .double()/.float()).
        self.register_buffer("dtype_reference", torch.zeros(0, dtype=model_dtype))
        self.use_subset: bool = use_subset
        self.num_ml_atoms: int = int(numbers.shape[0])
        self.min_total_atoms: int = int(indices.max()) + 1
        self.length_scale: float = NM_TO_ANGSTROM
        self.energy_scale: float = EV_TO_KJ_PER_MOL
        self.force_scale: float = EV_PER_ANGSTROM_TO_KJ_PER_MOL_PER_NM

    def forward(self, positions: Tensor, boxvectors: Tensor | None = None) -> Tuple[Tensor, Tensor]:
        """positions [N_total, 3] nm, boxvectors [3, 3] nm (rows a, b, c; None: no PBC) ->
        (energy [] kJ/mol, forces [N_total, 3] kJ/mol/nm), both in the dtype of ``positions``."""
        if positions.dim() != 2 or positions.shape[1] != 3:
            raise ValueError("OpenMMModule: positions must have shape [N, 3] (nm)")
        n_total = positions.shape[0]
        if self.use_subset:
            if n_total < self.min_total_atoms:
                raise ValueError(
                    "OpenMMModule: the system has " + str(n_total)
                    + " particles but atom_indices refers to index " + str(self.min_total_atoms - 1)
                )
        elif n_total != self.num_ml_atoms:
            raise ValueError(
                "OpenMMModule: got " + str(n_total) + " positions for " + str(self.num_ml_atoms)
                + " atoms; pass atom_indices to apply the potential to a subset"
            )
        out_dtype = positions.dtype
        compute_dtype = self.dtype_reference.dtype
        pos = positions.detach()
        if self.use_subset:
            pos = pos.index_select(0, self.atom_indices)
        if boxvectors is None:  # centred in the input precision first: translation changes nothing
            pos = pos - pos.mean(dim=0, keepdim=True)
        pos = (pos.to(compute_dtype) * self.length_scale).contiguous()
        cell: Tensor | None = None
        if boxvectors is not None:
            cell = (boxvectors.detach().to(compute_dtype) * self.length_scale).reshape(1, 3, 3)
        result = self.model(self.atomic_numbers, pos, None, cell)
        energy = (result["energy"].sum().detach() * self.energy_scale).to(out_dtype)
        ml_forces = (result["forces"].detach() * self.force_scale).to(out_dtype)
        if self.use_subset:
            forces = torch.zeros_like(positions, dtype=out_dtype).detach()
            forces = forces.index_copy(0, self.atom_indices, ml_forces)
        else:
            forces = ml_forces
        return energy, forces

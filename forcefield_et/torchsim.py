"""torch-sim interface: the ET as a torch-sim model, for MD, relaxation and single points of many
systems in one batched model call (``torch_sim.integrate``, ``optimize``, ``static``).

    import torch_sim as ts
    from forcefield_et.torchsim import ETTorchSimModel

    model = ETTorchSimModel("rmd17-aspirin", dtype="float32")
    final = ts.integrate(system=[atoms] * 16, model=model, integrator=ts.nvt_langevin,
                         n_steps=1000, temperature=500, timestep=0.0005)   # ps

torch-sim works in Å, eV and ps (its "metal" units), as the model does. The model reads a
``SimState`` (or its dict): positions [N, 3] Å, ``cell`` [B, 3, 3] Å (torch-sim's column
convention: lattice vectors in the columns), ``pbc``, ``atomic_numbers`` [N] and ``system_idx``
[N]; it returns ``energy`` [B] eV, ``forces`` [N, 3] eV/Å and, with ``compute_stress``,
``stress`` [B, 3, 3] eV/Å³ (ASE's sign: the strain derivative of the energy over the volume; NaN
for states that are not periodic). Every call goes through :class:`~forcefield_et.inference.Evaluator`, the
inference layer of the ASE calculator and the OpenMM forces, and its results are detached.

Needs torch-sim (``pip install forcefield-et[torchsim]``); ``import forcefield_et`` does not import it.
"""

from __future__ import annotations

from typing import Any, Dict, Union

import torch

try:
    import torch_sim as ts
    from torch_sim.models.interface import ModelInterface
except ImportError as error:  # pragma: no cover - exercised only where torch-sim is missing
    raise ImportError(
        "forcefield_et.torchsim needs torch-sim: pip install 'forcefield-et[torchsim]' "
        "(or pip install torch-sim-atomistic)"
    ) from error

from .dtypes import resolve_dtype
from .elements import unsupported_elements
from .inference import Evaluator
from .model import Potential


class ETTorchSimModel(ModelInterface):
    """A forcefield_et model (bundled name, checkpoint path, :class:`Potential` or committee) as a
    torch-sim ``ModelInterface``.

    Args:
        model: what :class:`~forcefield_et.inference.Evaluator` accepts (default: ``"pretrained"``).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or a torch.device.
        dtype: ``"float32"`` (fastest), ``"float64"`` or a torch dtype; torch-sim states are kept
            in this dtype.
        compute_stress: return ``stress`` (barostats and cell optimisers need it; NaN for
            molecules).
        threads: torch CPU threads per call (None: the package's rule for the atoms in the call).
    """

    def __init__(
        self,
        model: Union[str, Potential, Any] = "pretrained",
        device: Union[str, torch.device] = "auto",
        dtype: Union[str, torch.dtype] = "float64",
        compute_stress: bool = True,
        threads: int | None = None,
    ) -> None:
        super().__init__()
        self.evaluator = Evaluator(model, device=device, dtype=resolve_dtype(dtype), threads=threads,
                                   owner="ETTorchSimModel")
        self._device = self.evaluator.device
        self._dtype = self.evaluator.dtype
        self._compute_stress = bool(compute_stress)
        self._compute_forces = True  # forces come with every call (autograd of the energy)
        self._memory_scales_with = "n_atoms_x_density"  # a radial cutoff: edges grow with density
        self._checked_numbers: torch.Tensor | None = None

    @property
    def cutoff(self) -> float:
        """The model's cutoff (Å)."""
        return self.evaluator.cutoff

    def forward(self, state: Union[ts.SimState, Dict[str, torch.Tensor]], **kwargs: Any) -> Dict[str, torch.Tensor]:
        """``energy`` [B] (eV), ``forces`` [N, 3] (eV/Å) and, with ``compute_stress``, ``stress``
        [B, 3, 3] (eV/Å³; NaN for a state that is not periodic: a molecule has no stress) of every
        system of ``state``."""
        if isinstance(state, dict):
            state = ts.SimState(**state, masses=torch.ones_like(state["positions"][:, 0]))
        if state.atomic_numbers is None:
            raise ValueError("ETTorchSimModel: the state has no atomic_numbers")
        self._check_elements(state.atomic_numbers)
        system_idx = state.system_idx
        if system_idx is None:
            system_idx = torch.zeros(state.positions.shape[0], dtype=torch.long, device=state.positions.device)
        periodic = _periodic(state.pbc)
        cell = state.row_vector_cell if periodic else None  # rows a, b, c, as the model takes them
        output = self.evaluator.evaluate_batch(
            state.atomic_numbers.long(),
            state.positions.to(self._dtype),
            system_idx,
            None if cell is None else cell.to(self._dtype),
        )
        result = {"energy": output["energy"], "forces": output["forces"]}
        if self._compute_stress:  # torch-sim's runners expect it whenever compute_stress is set
            result["stress"] = output["stress"] if periodic else torch.full(
                (output["energy"].shape[0], 3, 3), float("nan"), dtype=self._dtype, device=self._device
            )
        for key in ("energy_std", "forces_std"):  # a committee's spread
            if key in output:
                result[key] = output[key]
        return result

    def _check_elements(self, atomic_numbers: torch.Tensor) -> None:
        """ValueError naming the elements of the state that the model does not support."""
        if self._checked_numbers is not None and torch.equal(atomic_numbers, self._checked_numbers):
            return
        problem = unsupported_elements(atomic_numbers.unique().tolist(), self.evaluator.elements, "ETTorchSimModel",
                                       "the model")
        if problem:
            raise ValueError(problem)
        self._checked_numbers = atomic_numbers.clone()


def _periodic(pbc: Any) -> bool:
    """Whether a torch-sim ``pbc`` (a bool, or one per direction) means a fully periodic cell."""
    flags = torch.as_tensor(pbc).reshape(-1)
    if bool(flags.all()):
        return True
    if not bool(flags.any()):
        return False
    raise NotImplementedError(
        f"ETTorchSimModel: pbc={flags.tolist()}: periodic in some directions only; torch-sim states are "
        "periodic in all three or none (the ASE calculator handles slabs and wires)"
    )

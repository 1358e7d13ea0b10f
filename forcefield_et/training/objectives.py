"""Force-centric training objectives (Feng et al. 2023, arXiv 2308.14759).

- ``forces`` (off-equilibrium data): MSE between predicted and reference forces; no energy
  term, because energies from different sources/levels of theory are not comparable.
- ``equilibrium`` (optimised geometries, no forces): each frame is either
  * zero-force regularised: L0 = mean ||F(x_eq)||², or
  * force-denoised: x~ = x_eq + eps, eps ~ N(0, sigma²), target F = -k * eps (the restoring force
    of an isotropic harmonic well; equivalent to denoising score matching with k = k_B T / sigma²).
  A fraction ``denoise_fraction`` of the equilibrium frames in each batch is denoised.
- ``energy_forces`` (fine-tuning): energy_weight * ((E - E_ref)/N)² + force_weight * MSE(F), plus,
  for periodic frames with a stress label, stress_weight * MSE((σ - σ_ref) V / N): the stress enters
  as the virial per atom (eV/atom), on the scale of the energy per atom.
- ``energy`` (e.g. QM9 U0 without forces): ((E - E_ref)/N)².

Each term is a sum over the local batch divided by a count that the caller may have summed
over all data-parallel workers, so that gradients summed over workers equal the
single-process gradient exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import torch
from torch import Tensor

from .batching import ENERGY, ENERGY_FORCES, EQUILIBRIUM, FORCES


@dataclass
class ObjectiveConfig:
    """Weights and constants of the force-centric objectives (units: Å, eV)."""

    zero_force_weight: float = 1.0
    denoise_weight: float = 1.0
    denoise_fraction: float = 0.5
    sigma: float = 0.04  # Å, std of the denoising perturbation
    k: float = 10.0  # eV/Å², stiffness of the harmonic restoring force
    energy_weight: float = 1.0  # per-atom energy MSE weight (eV² per atom²)
    force_weight: float = 10.0  # force MSE weight in energy_forces objectives
    stress_weight: float = 1.0  # virial-per-atom MSE weight (eV² per atom²), periodic frames with a stress label

    def __post_init__(self) -> None:
        for name in ("zero_force_weight", "denoise_weight", "sigma", "k", "energy_weight", "force_weight",
                     "stress_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"objective {name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.denoise_fraction <= 1.0:
            raise ValueError(f"denoise_fraction must be in [0, 1], got {self.denoise_fraction}")


def prepare_equilibrium(batch: Dict[str, Tensor], config: ObjectiveConfig, generator: torch.Generator) -> None:
    """In place: perturb a ``denoise_fraction`` of the equilibrium frames and set their force
    targets to -k * eps; set the others' targets to zero (zero-force). Adds per-frame
    ``denoised`` flags."""
    frame_objective = batch["objective"]
    eq_frames = frame_objective == EQUILIBRIUM
    n_frames = frame_objective.shape[0]
    denoised = torch.zeros(n_frames, dtype=torch.bool)
    if bool(eq_frames.any()) and config.denoise_fraction > 0:
        draw = torch.rand(n_frames, generator=generator, dtype=torch.float64)
        denoised = eq_frames & (draw < config.denoise_fraction)
    batch["denoised"] = denoised
    atom_eq = eq_frames[batch["batch"]]
    forces = batch["forces"].clone()
    forces[atom_eq] = 0.0
    atom_noised = denoised[batch["batch"]]
    if bool(atom_noised.any()):
        eps = torch.randn(int(atom_noised.sum()), 3, generator=generator, dtype=torch.float64) * config.sigma
        eps = eps.to(batch["pos"].dtype)
        pos = batch["pos"].clone()
        pos[atom_noised] = pos[atom_noised] + eps
        forces[atom_noised] = -config.k * eps
        batch["pos"] = pos
    batch["forces"] = forces


def loss_terms(batch: Dict[str, Tensor], n_sources: int) -> Dict[str, Tuple[Tensor, Tensor]]:
    """Masks that define each term, per source: returns, for each term name, the per-atom
    (or per-frame) mask and the source index of each element. Used to count denominators."""
    atom_source = batch["source"][batch["batch"]]
    atom_objective = batch["objective"][batch["batch"]]
    atom_denoised = batch["denoised"][batch["batch"]]
    stressed = batch["objective"] == ENERGY_FORCES
    if "stress" in batch:
        stressed = stressed & torch.isfinite(batch["stress"]).flatten(1).all(-1)
    else:
        stressed = torch.zeros_like(stressed)
    return {
        "forces": (atom_objective == FORCES, atom_source),
        "zero_force": ((atom_objective == EQUILIBRIUM) & ~atom_denoised, atom_source),
        "denoise": ((atom_objective == EQUILIBRIUM) & atom_denoised, atom_source),
        "ef_forces": (atom_objective == ENERGY_FORCES, atom_source),
        "energy": ((batch["objective"] == ENERGY_FORCES) | (batch["objective"] == ENERGY), batch["source"]),
        "stress": (stressed, batch["source"]),
    }


def count_terms(batch: Dict[str, Tensor], n_sources: int) -> Tensor:
    """Counts [n_terms, n_sources] of atoms (force terms) or frames (energy term) per source."""
    masks = loss_terms(batch, n_sources)
    counts = torch.zeros(len(masks), n_sources, dtype=torch.float64, device=batch["source"].device)
    for t, (mask, source) in enumerate(masks.values()):
        counts[t] = torch.bincount(source[mask], minlength=n_sources).to(torch.float64)
    return counts


TERM_NAMES = ("forces", "zero_force", "denoise", "ef_forces", "energy", "stress")


def compute_loss(
    output: Dict[str, Tensor],
    batch: Dict[str, Tensor],
    source_weights: Tensor,
    config: ObjectiveConfig,
    counts: Tensor,
) -> Tuple[Tensor, Dict[str, float]]:
    """Total loss and its parts (floats, for logging).

    ``counts`` [n_terms, n_sources] are the denominators (summed over workers for DDP).
    """
    n_sources = source_weights.shape[0]
    masks = loss_terms(batch, n_sources)
    term_weight = {
        "forces": 1.0,
        "zero_force": config.zero_force_weight,
        "denoise": config.denoise_weight,
        "ef_forces": config.force_weight,
        "energy": config.energy_weight,
        "stress": config.stress_weight,
    }
    total = output["forces"].new_zeros(())
    parts: Dict[str, float] = {}
    for t, name in enumerate(TERM_NAMES):
        mask, source = masks[name]
        if not bool(mask.any()):
            continue
        # Select before subtracting: unlabelled entries (NaN targets, e.g. the forces of an
        # energy-only source) must not enter the graph, or 0 * NaN = NaN reaches the gradients.
        if name == "energy":
            predicted = output["energy"][mask]
            target = batch["energy"][mask].to(predicted.dtype)
            per_element = ((predicted - target) / batch["n_atoms"][mask].to(predicted.dtype)).pow(2)
        elif name == "stress":
            predicted = output["stress"][mask]
            target = batch["stress"][mask].to(predicted.dtype)
            volume_per_atom = torch.linalg.det(batch["cell"][mask]).abs() / batch["n_atoms"][mask]
            per_element = ((predicted - target) * volume_per_atom.to(predicted.dtype).view(-1, 1, 1)).pow(2)
            per_element = per_element.flatten(1).mean(-1)
        else:
            per_element = (output["forces"][mask] - batch["forces"][mask]).pow(2).sum(-1) / 3.0
        denom = counts[t].clamp(min=1.0).to(per_element.dtype)[source[mask]]
        weights = source_weights.to(per_element.dtype)[source[mask]] * term_weight[name]
        term = (per_element * weights / denom).sum()
        total = total + term
        parts[name] = float(term.detach())
    return total, parts

"""Radial features of interatomic distances: cosine cutoff and exponential-normal RBF."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class CosineCutoff(nn.Module):
    """Smooth cutoff f(r) = 0.5 (cos(pi r / r_c) + 1) for r < r_c, else 0. r in Å, output [E]."""

    def __init__(self, cutoff: float) -> None:
        super().__init__()
        self.cutoff = float(cutoff)

    def forward(self, distances: Tensor) -> Tensor:
        value = 0.5 * (torch.cos(distances * (math.pi / self.cutoff)) + 1.0)
        return value * (distances < self.cutoff).to(distances.dtype)


EXPONENT_LIMIT = 60.0  # exp(-60) = 8.8e-27


class ExpNormalSmearing(nn.Module):
    """Exponential-normal radial basis (Unke & Meuwly, PhysNet; used by the ET):

    phi_k(r) = f_cut(r) * exp(-beta_k (exp(-alpha r) - mu_k)^2),  alpha = 5 / r_c.
    Means and widths are trainable. Input [E] distances in Å, output [E, num_rbf].
    """

    def __init__(self, cutoff: float = 5.0, num_rbf: int = 32, trainable: bool = True) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        self.num_rbf = int(num_rbf)
        self.alpha = 5.0 / self.cutoff
        self.exponent_limit = EXPONENT_LIMIT
        self.cutoff_fn = CosineCutoff(cutoff)
        start = math.exp(-self.alpha * self.cutoff)
        means = torch.linspace(start, 1.0, self.num_rbf)
        betas = torch.full((self.num_rbf,), (2.0 / self.num_rbf * (1.0 - start)) ** -2)
        if trainable:
            self.means = nn.Parameter(means)
            self.betas = nn.Parameter(betas)
        else:
            self.register_buffer("means", means)
            self.register_buffer("betas", betas)

    def forward(self, distances: Tensor) -> Tensor:
        d = distances.unsqueeze(-1)
        exponent = self.betas * (torch.exp(-self.alpha * d) - self.means) ** 2
        # Gaussians more than sqrt(2 * EXPONENT_LIMIT) widths from their centre are set to zero (their
        # value, below 1e-26, is far under float32 and float64 resolution of the features): in float32
        # they would be subnormal numbers, and matrix products with subnormal inputs run tens of times
        # slower on x86 CPUs.
        basis = torch.exp(-exponent) * (exponent < self.exponent_limit).to(distances.dtype)
        return self.cutoff_fn(d) * basis

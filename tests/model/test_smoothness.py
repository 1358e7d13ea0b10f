"""Energy and forces are continuous when a neighbour crosses the cutoff sphere.

A discontinuity there breaks energy conservation in MD: every scalar *and vector* message must
vanish smoothly at the cutoff (the cosine cutoff has zero value and slope at r_c).
"""

from __future__ import annotations

import numpy as np
import torch

from forcefield_et import build_model


def _scan(model, distances):
    """A bent C-H-O fragment whose O is pulled along x across the cutoff of the C atom."""
    z = torch.tensor([6, 1, 8, 1])
    energies, forces = [], []
    for d in distances:
        pos = torch.tensor(
            [[0.0, 0.0, 0.0], [0.0, 1.09, 0.0], [d, 0.3, 0.2], [d + 0.6, 1.0, 0.2]], dtype=torch.float64
        )
        out = model(z, pos)
        energies.append(float(out["energy"].detach()))
        forces.append(out["forces"].detach().numpy())
    return np.array(energies), np.array(forces)


def test_energy_and_forces_continuous_across_the_cutoff():
    torch.manual_seed(3)
    model = build_model(hidden_channels=32, num_layers=3, num_heads=4, num_rbf=16).double().eval()
    # Biases start at zero, which hides filters that do not vanish at r_c (silu(0) = 0); trained
    # models have non-zero biases, so randomise them.
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0.0, 0.5)
    cutoff = model.cutoff
    # The O atom sits at distance ~sqrt(d^2 + 0.13) from C; scan it through r_c.
    d_cross = float(np.sqrt(cutoff**2 - 0.3**2 - 0.2**2))
    eps = 1e-6
    energies, forces = _scan(model, [d_cross - eps, d_cross + eps])
    assert abs(energies[1] - energies[0]) < 1e-8
    assert np.abs(forces[1] - forces[0]).max() < 1e-5
    # And on a coarser grid the energy curve has no jumps: second differences stay small.
    grid = np.linspace(d_cross - 0.05, d_cross + 0.05, 21)
    curve, _ = _scan(model, grid)
    second_difference = np.abs(np.diff(curve, 2))
    assert second_difference.max() < 1e-4

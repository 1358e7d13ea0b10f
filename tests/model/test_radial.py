"""Radial features: the exponential-normal basis stays free of subnormal float32 numbers (which make
matrix products tens of times slower on x86 CPUs), in value and in gradient, and otherwise equals
the textbook formula; the cosine cutoff vanishes at the cutoff."""

from __future__ import annotations

import torch

from forcefield_et.model.radial import CosineCutoff, ExpNormalSmearing


def subnormal(values: torch.Tensor) -> torch.Tensor:
    return (values != 0) & (values.abs() < torch.finfo(values.dtype).tiny)


def textbook(smearing: ExpNormalSmearing, distances: torch.Tensor) -> torch.Tensor:
    d = distances.unsqueeze(-1)
    gaussian = torch.exp(-smearing.betas * (torch.exp(-smearing.alpha * d) - smearing.means) ** 2)
    return smearing.cutoff_fn(d) * gaussian


def test_basis_and_its_gradient_have_no_subnormal_float32_values():
    smearing = ExpNormalSmearing(cutoff=5.0, num_rbf=32)
    distances = torch.linspace(0.05, 5.5, 20001, requires_grad=True)
    basis = smearing(distances)
    assert bool(subnormal(textbook(smearing, distances.detach())).any())  # the formula alone has them
    assert not bool(subnormal(basis).any())
    (gradient,) = torch.autograd.grad(basis.sum(), distances, retain_graph=True)
    assert not bool(subnormal(gradient).any())
    # the weight gradients of the trainable means and widths too
    means_grad, betas_grad = torch.autograd.grad((basis * torch.rand_like(basis)).sum(),
                                                 [smearing.means, smearing.betas])
    assert not bool(subnormal(means_grad).any()) and not bool(subnormal(betas_grad).any())


def test_basis_equals_the_formula_up_to_values_below_1e_26():
    smearing = ExpNormalSmearing(cutoff=5.0, num_rbf=32).double()
    distances = torch.linspace(0.05, 5.5, 5001, dtype=torch.float64)
    with torch.no_grad():
        difference = (smearing(distances) - textbook(smearing, distances)).abs()
    assert float(difference.max()) < 1e-26
    assert int((difference > 0).sum()) > 0  # the far tails are what is dropped


def test_cosine_cutoff_is_one_at_zero_and_zero_from_the_cutoff_on():
    cutoff = CosineCutoff(5.0)
    values = cutoff(torch.tensor([0.0, 2.5, 5.0, 6.0], dtype=torch.float64))
    torch.testing.assert_close(values, torch.tensor([1.0, 0.5, 0.0, 0.0], dtype=torch.float64))

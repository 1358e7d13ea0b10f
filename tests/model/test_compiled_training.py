"""The compiled training path (Potential.compile_training) against the eager double backward:
energies, forces, stress, a force+energy(+stress) loss and every weight gradient agree to float32
rounding, on batches of different sizes and on a periodic structure, with one compiled graph."""

from __future__ import annotations

import pytest
import torch

from forcefield_et import build_model
from forcefield_et.data import read_rmd17
from forcefield_et.training.batching import TensorConformations
from tests.conftest import shared_path

TINY = {"hidden_channels": 16, "num_layers": 2, "num_heads": 2, "num_rbf": 8, "cutoff": 4.0}


def relative_error(a, b, scale=None):
    """max |a - b| over max |b| (or ``scale``): float32 rounding of sums over hundreds of edges
    stays near 1e-6-1e-5."""
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max()) / (scale or float(b.abs().max()) + 1e-8)


def gradients_agree(grads_c, grads_e):
    """Every weight gradient, relative to the largest gradient entry (some vanish exactly, e.g. the
    energy head's last bias, which the isolated-atom reference cancels)."""
    scale = max(float(g.abs().max()) for g in grads_e.values())
    return {name: relative_error(grads_c[name], g, scale) for name, g in grads_e.items()}


def loss_and_gradients(model, batch, cell=None):
    model.zero_grad(set_to_none=True)
    out = model(batch["z"], batch["pos"], batch["batch"], cell)
    n_structures = int(batch["batch"].max()) + 1
    loss = (out["forces"] - batch["forces"]).pow(2).mean() + 1e-3 * out["energy"].pow(2).sum() / n_structures
    if cell is not None:  # a stress loss (fine-tuning on stress labels) differentiates the stress too
        loss = loss + 1e4 * out["stress"].pow(2).mean()
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    return out, loss.detach(), grads


@pytest.mark.timeout(600)
def test_compiled_training_matches_the_eager_double_backward():
    torch.manual_seed(0)
    eager = build_model(**TINY, zbl=True).train()
    compiled = build_model(**TINY, zbl=True).train()
    compiled.load_state_dict(eager.state_dict())
    compiled.compile_training()
    from torch._dynamo.utils import counters

    counters.clear()
    data = TensorConformations(read_rmd17(shared_path("rmd17", "rmd17_aspirin_train_01.npz")))
    for frames in (torch.arange(0, 4), torch.arange(500, 503)):  # other atom and edge counts: one graph
        batch = data.gather(frames)
        out_e, loss_e, grads_e = loss_and_gradients(eager, batch)
        out_c, loss_c, grads_c = loss_and_gradients(compiled, batch)
        assert relative_error(out_c["energy"], out_e["energy"]) < 1e-4
        assert relative_error(out_c["forces"], out_e["forces"]) < 1e-4
        assert float(loss_c) == pytest.approx(float(loss_e), rel=1e-5)
        assert max(gradients_agree(grads_c, grads_e).values()) < 1e-4
    # the differentiable graph runs index_add as the opaque custom operator (see compiled_training)
    targets = {node.target for node in compiled._compiled_training._compiled._orig_mod.graph.nodes}
    assert torch.ops.forcefield_et.index_add.default in targets and torch.ops.aten.index_add.default not in targets
    # one graph served both batches (other atom and edge counts), no recompilation
    assert counters["stats"]["unique_graphs"] == 1
    # periodic: a water-like box of 6 molecules (18 atoms: inductor specialises the graph on fewer
    # atoms, which would compile a second one); forces and stress chain through the strain as in eager
    box = torch.tensor([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0],
                        [2.5, 2.5, 2.5], [3.4, 2.6, 2.5], [2.3, 3.4, 2.6]])
    pos = torch.cat([box + torch.tensor([4.5 * k, 0.0, 0.0]) for k in range(3)])
    z = torch.tensor([8, 1, 1] * 6)
    cell = torch.diag(torch.tensor([13.5, 4.5, 4.5])).unsqueeze(0)
    batch = {"z": z, "pos": pos, "batch": torch.zeros(18, dtype=torch.long), "forces": torch.zeros(18, 3)}
    out_e, _, grads_e = loss_and_gradients(eager, batch, cell)
    out_c, _, grads_c = loss_and_gradients(compiled, batch, cell)
    assert relative_error(out_c["forces"], out_e["forces"]) < 1e-4
    assert relative_error(out_c["stress"], out_e["stress"]) < 1e-4
    assert max(gradients_agree(grads_c, grads_e).values()) < 1e-4
    assert counters["stats"]["unique_graphs"] == 1  # the cell, too, is served by the same graph
    # eval mode (inference) never uses the compiled training graph
    compiled.eval()
    assert torch.equal(compiled(z, pos, None, cell)["energy"], eager.eval()(z, pos, None, cell)["energy"])



def test_compiled_energy_is_rebuilt_when_the_prior_or_a_weight_is_replaced():
    torch.manual_seed(0)
    model = build_model(**TINY).eval()
    z = torch.tensor([6, 1])
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.4]])  # a fused pair: the ZBL prior acts
    batch = torch.zeros(2, dtype=torch.long)

    def energy() -> float:
        return float(model(z, pos, batch)["energy"].detach())

    eager = energy()
    model.compile_energy(backend="aot_eager")  # the rebuild logic, not inductor, is under test: fast
    assert energy() == pytest.approx(eager, abs=1e-5)
    model.set_zbl(True)
    with_prior = energy()
    model.compile_energy(False)
    assert with_prior == pytest.approx(energy(), abs=1e-4) and with_prior > eager + 1.0
    model.compile_energy(backend="aot_eager")
    assert energy() == pytest.approx(with_prior, abs=1e-4)
    model.set_zbl(False)  # the traced graph held the prior: switching it off rebuilds
    assert energy() == pytest.approx(eager, abs=1e-5)
    head = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    head.bias = torch.nn.Parameter(head.bias.detach() + 1.0)  # a replaced weight is read, not the old one
    compiled = energy()
    model.compile_energy(False)
    assert compiled == pytest.approx(energy(), abs=1e-4) and abs(compiled - eager) > 1e-3

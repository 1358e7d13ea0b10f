"""``Potential.compile_energy``: the torch.compile'd energy gives the eager energy and forces, a
changing number of edges does not recompile, and TorchScript export is unaffected."""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch

from forcefield_et import build_model


def _tiny_model():
    torch.manual_seed(0)
    return build_model(hidden_channels=16, num_layers=1, num_heads=2, num_rbf=8).eval()


def _ethanol() -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.tensor([6, 6, 8, 1, 1, 1, 1, 1, 1])
    pos = torch.tensor([
        [0.0, 0.0, 0.0], [1.52, 0.0, 0.0], [2.0, 1.35, 0.0], [-0.37, 1.03, 0.0], [-0.37, -0.51, 0.89],
        [-0.37, -0.51, -0.89], [1.89, -0.51, 0.89], [1.89, -0.51, -0.89], [2.95, 1.3, 0.0],
    ])
    return z, pos


def test_compile_energy_keeps_torchscript_export_and_can_be_switched_off():
    model = _tiny_model()
    z, pos = _ethanol()
    eager = model(z, pos)
    model.compile_energy()  # compiles lazily, at the first call: nothing is compiled here
    scripted = torch.jit.script(model)
    out = scripted(z, pos)
    torch.testing.assert_close(out["forces"], eager["forces"])
    model.compile_energy(False)
    assert model._compiled_energy is None
    torch.testing.assert_close(model(z, pos)["forces"], eager["forces"], rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="torch.compile (inductor) needs a C++ compiler on CPU")
def test_compiled_energy_matches_eager_and_does_not_recompile_when_edges_change():
    """Tiny model (1 layer), because compiling takes about a minute on the 2-core CI machine."""
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    model = _tiny_model()
    z, pos = _ethanol()
    stretched = pos * 1.8  # fewer pairs within the 5 Å cutoff: a different number of edges
    eager = [model(z, p) for p in (pos, stretched)]
    n_edges = [int(len(torch.cdist(p, p).lt(5.0).nonzero())) - len(p) for p in (pos, stretched)]
    assert n_edges[0] != n_edges[1]
    model.compile_energy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = [model(z, p) for p in (pos, stretched)]
    for got, want in zip(compiled, eager):
        torch.testing.assert_close(got["energy"], want["energy"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got["forces"], want["forces"], rtol=1e-5, atol=1e-5)
    # a periodic cell: the stress follows from the same compiled gradient
    cell = torch.eye(3) * 6.0
    model.compile_energy(False)
    periodic_eager = model(z, pos, cell=cell)
    model.compile_energy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        periodic = model(z, pos, cell=cell)
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(periodic[key], periodic_eager[key], rtol=1e-5, atol=1e-5)
    # training mode does not use the inference graph: forces keep their graph for a force loss
    model.train()
    trained = model(z, pos)
    assert trained["forces"].requires_grad
    torch.testing.assert_close(trained["forces"], eager[0]["forces"], rtol=1e-5, atol=1e-5)
    model.eval()
    counters = torch._dynamo.utils.counters["stats"]
    assert counters["unique_graphs"] <= 2, dict(counters)  # molecules share one graph; a cell may add one
    # the inference graph is never differentiated: it keeps the native index_add (the training graph's
    # opaque custom operator would cost a Python dispatch per call)
    targets = {node.target for node in model._compiled_energy._compiled._orig_mod.graph.nodes}
    assert torch.ops.aten.index_add.default in targets
    assert torch.ops.forcefield_et.index_add.default not in targets
    torch._dynamo.reset()


def _chain(n_atoms: int, spacing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Alternating C and H atoms on a line ``spacing`` Å apart."""
    z = torch.tensor([6, 1] * (n_atoms // 2) + [6] * (n_atoms % 2))
    pos = torch.zeros(n_atoms, 3)
    pos[:, 0] = torch.arange(n_atoms) * spacing
    pos[:, 1] = 0.05 * torch.arange(n_atoms) ** 2 % 0.3  # off the line: no exactly collinear triples
    return z, pos


def test_a_first_edge_count_equal_to_a_weight_dimension_is_not_fixed_in_the_compiled_graph():
    """The trace gives the number of edges its own symbol: 48 edges (pairs within the cutoff of 10 atoms
    1.4 Å apart) equal the [48, 16] weight's first dimension, and the next structure has 60."""
    import torch._dynamo

    torch._dynamo.reset()
    model = _tiny_model()
    dimensions = {size for tensor in model.state_dict().values() for size in tensor.shape}
    structures = [_chain(10, 1.4), _chain(10, 1.2), _chain(10, 1.4)]
    n_edges = [int(torch.cdist(p, p).lt(model.cutoff).sum()) - len(p) for _, p in structures]
    assert n_edges[0] in dimensions and n_edges[1] not in dimensions, (n_edges, dimensions)
    eager = [model(z, p) for z, p in structures]
    model.compile_energy(backend="eager")  # the trace, not the code generation, is under test: fast
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = [model(z, p) for z, p in structures]
    for got, want in zip(compiled, eager):
        torch.testing.assert_close(got["energy"], want["energy"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got["forces"], want["forces"], rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()


def test_the_trace_does_not_log_torchs_non_relation_guard_warning(caplog):
    """torch logs "_maybe_guard_rel() was called on non-relation expression" at every symbolic trace of
    the energy gradient; the guard it skips is harmless (the tests above), so the warning is dropped,
    and only that one."""
    import logging

    import torch._dynamo

    torch._dynamo.reset()
    model = _tiny_model()
    z, pos = _ethanol()
    model.compile_energy(backend="eager")
    with caplog.at_level(logging.WARNING, logger="torch"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model(z, pos)
        logging.getLogger("torch.fx.experimental.symbolic_shapes").warning("another warning")
    messages = [record.getMessage() for record in caplog.records]
    assert "another warning" in messages
    assert not [m for m in messages if "_maybe_guard_rel" in m], messages
    torch._dynamo.reset()

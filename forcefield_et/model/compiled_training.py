"""Energies and their gradients with respect to the edge vectors as one inductor-compiled graph,
itself differentiable: the compiled training step of force-trained models, and (called under
``torch.no_grad``) the compiled inference path of :meth:`Potential.compile_energy`.

Training on forces needs the gradient of the force error with respect to the weights, that is a
second derivative of the energy (``autograd.grad(..., create_graph=True)`` and then
``backward()``). ``torch.compile`` cannot differentiate a compiled function twice. So the first
derivative is traced ahead of time: :func:`torch.fx.experimental.proxy_tensor.make_fx` records
``_atom_energies`` and its ``autograd.grad`` with respect to the edge vectors as one graph of
plain aten operations, with symbolic numbers of atoms and edges. ``torch.compile`` then
compiles that graph and derives its backward (the weight gradients) as for any first-order
function. Two rewrites make the traced graph exact:

- the ``detach`` nodes that autograd's saved tensors leave in a traced backward are removed, so
  that the weight gradient flows through every path (without this the radial-basis weights got
  wrong gradients);
- out-of-place ``index_add`` (the backward of ``index_select``) runs as an opaque custom
  operator in the differentiable (training) graph, because inductor (torch 2.9, CPU) miscompiled
  it there. The inference graph, which is never differentiated, keeps the native operator, which
  inductor fuses with its neighbours and which saves the custom operator's Python dispatch on every
  call.

``tests/model/test_compiled_training.py`` checks energies, forces, losses and weight gradients
against the eager double backward.

Layer norm is traced as primitive operations (the double backward of the fused kernel reads
concrete sizes), so one compiled graph serves every number of atoms and edges.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, List, Tuple

import torch
from torch import Tensor, nn

_OPERATOR = "forcefield_et::index_add"
_registered = False


class _NonRelationGuardFilter(logging.Filter):
    """Drops torch's "_maybe_guard_rel() was called on non-relation expression" warning, which the
    symbolic trace of every build logs although the guard it skips is harmless (the graph stays
    correct for every size; ``tests/model/test_compile.py``). Every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("_maybe_guard_rel() was called on non-relation expression")


def _silence_non_relation_guard_warning() -> None:
    logger = logging.getLogger("torch.fx.experimental.symbolic_shapes")
    if not any(isinstance(existing, _NonRelationGuardFilter) for existing in logger.filters):
        logger.addFilter(_NonRelationGuardFilter())


def _register_index_add() -> None:
    """Register ``forcefield_et::index_add`` (an opaque out-of-place index_add with autograd)."""
    global _registered
    if _registered:
        return

    @torch.library.custom_op(_OPERATOR, mutates_args=())
    def index_add(base: Tensor, dim: int, index: Tensor, source: Tensor) -> Tensor:
        return base.index_add(dim, index, source)

    @index_add.register_fake
    def _(base: Tensor, dim: int, index: Tensor, source: Tensor) -> Tensor:
        return torch.empty_like(base)

    def setup_context(ctx: Any, inputs: Tuple[Any, ...], output: Tensor) -> None:
        _, dim, index, _ = inputs
        ctx.dim = dim
        ctx.save_for_backward(index)

    def backward(ctx: Any, grad: Tensor) -> Tuple[Tensor, None, None, Tensor]:
        (index,) = ctx.saved_tensors
        return grad, None, None, grad.index_select(ctx.dim, index)

    index_add.register_autograd(backward, setup_context=setup_context)
    _registered = True


class _AtomEnergies(nn.Module):
    def __init__(self, potential: nn.Module) -> None:
        super().__init__()
        self.potential = potential

    def forward(self, element: Tensor, edge_index: Tensor, edge_vectors: Tensor) -> Tensor:
        return self.potential._atom_energies(element, edge_index, edge_vectors)


class CompiledEnergyGradient:
    """``(element [N], edge_index [2, E], edge_vectors [E, 3] Å) -> (atom energies [N] eV,
    dE/d(edge_vectors) [E, 3] eV/Å)``, compiled. With ``differentiable`` (training) the result is
    differentiable once with respect to the model's weights and the edge vectors; without it
    (inference) every call runs under ``torch.no_grad``. Built lazily on the first call; rebuilt when a
    parameter, buffer or submodule of the model is replaced, or its ZBL prior switched (the trace
    depends on both)."""

    def __init__(self, potential: nn.Module, differentiable: bool = True, **compile_options: Any) -> None:
        self.module = _AtomEnergies(potential)
        self.differentiable = differentiable
        self.compile_options = {"dynamic": True, **compile_options}
        self._compiled: Callable[..., Any] | None = None
        self._tensors: List[Tensor] = []
        self._modules: List[nn.Module] = []
        self._key: Tuple[Any, ...] = ()

    def _state(self) -> Tuple[List[str], List[str], List[Tensor]]:
        names = [n for n, _ in self.module.named_parameters()]
        buffer_names = [n for n, _ in self.module.named_buffers()]
        tensors = [p for _, p in self.module.named_parameters()] + [b for _, b in self.module.named_buffers()]
        return names, buffer_names, tensors

    def _current_key(self) -> Tuple[Any, ...]:
        """Identity of every parameter, buffer and child module of the modules found at the last build,
        and the ZBL switch: flat dictionary reads, cheap enough for every call (a full ``named_parameters``
        walk costs a sizeable share of a small molecule's MD step)."""
        key: List[Any] = [getattr(self.module.potential, "use_zbl", None)]
        for module in self._modules:
            key.extend(map(id, module._parameters.values()))
            key.extend(map(id, module._buffers.values()))
            key.extend(map(id, module._modules.values()))
        return tuple(key)

    def _build(self, element: Tensor, edge_index: Tensor, edge_vectors: Tensor) -> None:
        from torch._decomp import get_decompositions
        from torch.func import functional_call
        from torch.fx.experimental import _config as fx_config
        from torch.fx.experimental.proxy_tensor import make_fx

        _register_index_add()
        _silence_non_relation_guard_warning()
        names, buffer_names, tensors = self._state()
        n_params = len(names)
        module = self.module

        def energy_and_gradient(state: List[Tensor], element: Tensor, edge_index: Tensor, edge_vectors: Tensor):
            parameters = dict(zip(names, state[:n_params]))
            buffers = dict(zip(buffer_names, state[n_params:]))
            energies = functional_call(module, (parameters, buffers), (element, edge_index, edge_vectors))
            (gradient,) = torch.autograd.grad(energies.sum(), edge_vectors, create_graph=True)
            return energies, gradient

        sample = edge_vectors.detach().requires_grad_(True)
        # layer norm as primitive operations: the double backward of the fused kernel reads concrete
        # sizes, which would fix the number of atoms in the compiled graph
        decompositions = get_decompositions(
            [torch.ops.aten.native_layer_norm, torch.ops.aten.native_layer_norm_backward]
        )
        # no duck shaping: by default the trace gives equal sizes one symbol, so a number of edges or atoms
        # that happens to equal a weight's dimension (e.g. 256 edges and a [256, 128] weight) would be fixed
        # in the graph, which then fails on the next structure
        with torch.enable_grad(), fx_config.patch(use_duck_shape=False):  # enable_grad: also under no_grad
            graph = make_fx(energy_and_gradient, tracing_mode="symbolic", decomposition_table=decompositions)(
                tensors, element, edge_index, sample
            )
        custom = torch.ops.forcefield_et.index_add.default
        for node in list(graph.graph.nodes):
            if node.op != "call_function":
                continue
            if node.target is torch.ops.aten.detach.default:
                node.replace_all_uses_with(node.args[0])
                graph.graph.erase_node(node)
            elif (self.differentiable and node.target is torch.ops.aten.index_add.default and len(node.args) == 4
                  and not node.kwargs):
                node.target = custom
        graph.recompile()
        self._compiled = torch.compile(graph, **self.compile_options)
        self._tensors = tensors
        self._modules = list(module.modules())
        self._key = self._current_key()

    def __call__(self, element: Tensor, edge_index: Tensor, edge_vectors: Tensor) -> Tuple[Tensor, Tensor]:
        if self._compiled is None or self._current_key() != self._key:
            self._build(element, edge_index, edge_vectors)
        assert self._compiled is not None
        # numbers of atoms and edges change from batch to batch: one graph for all of them
        torch._dynamo.maybe_mark_dynamic(element, 0)
        torch._dynamo.maybe_mark_dynamic(edge_index, 1)
        torch._dynamo.maybe_mark_dynamic(edge_vectors, 0)
        if self.differentiable:
            return self._compiled(self._tensors, element, edge_index, edge_vectors)
        with torch.no_grad():
            return self._compiled(self._tensors, element, edge_index, edge_vectors)


"""The memory-saving edge-chunked evaluation of the Equivariant Transformer, as one strategy.

The all-edges forward (:class:`~forcefield_et.model.et.EquivariantTransformer`) keeps every
layer's [E, F] and [E, 3, F] edge messages for the backward pass (about 24 values per edge, layer
and channel). :func:`chunked_forward` runs the same layers with their edge-level work (filters,
attention, messages and their sum onto the atoms) over chunks of edges and keeps no per-edge
message: the backward pass recomputes one chunk at a time (activation checkpointing, in
:class:`_ChunkedEdgeSum`). It reuses the layers' own message functions (``_messages``,
``_scalar_messages``, ``_vector_messages``, ``_gated_update``), so the two paths share every formula
and give the same results up to the order of floating-point sums.

The ET takes this path when its ``edge_chunk_size`` is set and a call has more edges than one
chunk; :func:`edge_chunking` sets it for the duration of a block, which is how the inference engine
(:class:`forcefield_et.inference.Evaluator`) applies its memory plan to one call. Eager inference
only (first-order gradients); TorchScript always compiles the all-edges path.
"""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING, Callable, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

if TYPE_CHECKING:
    from .et import EquivariantAttention, EquivariantTransformer, NeighborEmbedding

MessageFunction = Callable[[Sequence[Tensor], Sequence[Tensor]], List[Tensor]]


class _ChunkedEdgeSum(torch.autograd.Function):
    """Per-edge messages summed onto their receiving atoms, over chunks of edges (eager only).

    ``apply(message_fn, chunk_size, n_atoms, n_node, *node_tensors, *edge_tensors)`` returns one
    sum [N, ...] per message. ``message_fn(node_tensors, edge_chunk)`` maps the node tensors (used
    whole: node features, weights) and one chunk of the edge tensors (edge_tensors[0] is the
    receiving atom i [E]; all are sliced along dim 0) to a list of messages [E_chunk, ...].

    This is activation checkpointing written out, rather than ``torch.utils.checkpoint``: the
    forward runs without building a graph and sums each chunk into preallocated totals; the
    backward recomputes one chunk at a time and accumulates its gradients into preallocated
    buffers. Little outlives a chunk, so that glibc's heap (with the thresholds of
    ``runtime.keep_freed_memory``) reuses the same blocks chunk after chunk: with
    ``torch.utils.checkpoint`` (use_reentrant=False) the per-chunk autograd nodes and [N, ...]
    partial sums fragmented the heap, which grew by 8 MiB per chunk (192 water atoms, default
    model, chunks of 2,048 edges: forward peak RSS 340 MiB against 113 MiB here). First-order
    gradients only.
    """

    @staticmethod
    def forward(ctx, message_fn: MessageFunction, chunk_size: int, n_atoms: int, n_node: int, *tensors: Tensor):
        node, edge = tensors[:n_node], tensors[n_node:]
        n_edges = edge[0].shape[0]
        sums: List[Tensor] = []
        for start in range(0, n_edges, chunk_size):
            chunk = [t[start : start + chunk_size] for t in edge]
            messages = message_fn(node, chunk)
            if not sums:
                sums = [m.new_zeros((n_atoms,) + tuple(m.shape[1:])) for m in messages]
            for total, message in zip(sums, messages):
                total.index_add_(0, chunk[0], message)
            del chunk, messages
        ctx.message_fn, ctx.chunk_size, ctx.n_node = message_fn, chunk_size, n_node
        ctx.save_for_backward(*tensors)
        return tuple(sums)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grad_sums: Tensor):
        tensors, n_node, chunk_size = ctx.saved_tensors, ctx.n_node, ctx.chunk_size
        needs = ctx.needs_input_grad[4:]
        node = [t.detach().requires_grad_(need) for t, need in zip(tensors[:n_node], needs[:n_node])]
        edge = tensors[n_node:]
        grads: List[Optional[Tensor]] = [None] * len(tensors)
        for start in range(0, edge[0].shape[0], chunk_size):
            chunk = [
                t[start : start + chunk_size].detach().requires_grad_(need) if need else t[start : start + chunk_size]
                for t, need in zip(edge, needs[n_node:])
            ]
            inputs = node + chunk
            wanted = [index for index, t in enumerate(inputs) if t.requires_grad]
            with torch.enable_grad():
                messages = ctx.message_fn(node, chunk)
            pairs = [(m, g.index_select(0, chunk[0])) for m, g in zip(messages, grad_sums) if m.requires_grad]
            if not pairs or not wanted:
                continue
            parts = torch.autograd.grad(
                [m for m, _ in pairs], [inputs[index] for index in wanted], [g for _, g in pairs], allow_unused=True
            )
            for index, part in zip(wanted, parts):
                if part is None:
                    continue
                total = grads[index]
                if total is None:
                    total = grads[index] = torch.zeros_like(tensors[index])
                if index < n_node:
                    total.add_(part)
                else:
                    total[start : start + chunk_size] = part
            del chunk, inputs, messages, pairs, parts
        return (None, None, None, None, *grads)


def _embedding_messages(layer: NeighborEmbedding, node: Sequence[Tensor], edge: Sequence[Tensor]) -> List[Tensor]:
    """One edge chunk's neighbour-embedding messages [E_chunk, F]."""
    element, embedding_weight, proj_weight, proj_bias = node
    _, j, rbf, cutoff_weight = edge
    return [layer._messages(element, j, rbf, cutoff_weight, embedding_weight, proj_weight, proj_bias)]


def _attention_messages(
    layer: EquivariantAttention, node: Sequence[Tensor], edge: Sequence[Tensor], vectors_are_zero: bool,
    update_vectors: bool,
) -> List[Tensor]:
    """One edge chunk's attention messages ([E_chunk, F] and, with ``update_vectors``, [E_chunk, 3, F])."""
    q, k, v, vec, filter_weight, filter_bias = node
    i, j, rbf, cutoff_weight, unit_vectors = edge
    x_msg, vec_gate, dir_gate = layer._scalar_messages(
        q, k, v, i, j, rbf, cutoff_weight, filter_weight, filter_bias, update_vectors
    )
    if not update_vectors:
        return [x_msg]
    return [x_msg, layer._vector_messages(vec, j, vec_gate, dir_gate, unit_vectors, vectors_are_zero)]


def _chunked_embedding(
    layer: NeighborEmbedding, element: Tensor, x: Tensor, geometry: Sequence[Tensor], edge_chunk_size: int
) -> Tensor:
    """:meth:`NeighborEmbedding.forward` over chunks of ``edge_chunk_size`` edges."""
    node = (element, layer.embedding.weight, layer.distance_proj.weight, layer.distance_proj.bias)
    (aggregated,) = _ChunkedEdgeSum.apply(
        functools.partial(_embedding_messages, layer), edge_chunk_size, x.shape[0], len(node), *node, *geometry[:4]
    )
    return layer.combine(torch.cat([x, aggregated], dim=-1))


def _chunked_attention(
    layer: EquivariantAttention, x: Tensor, vec: Tensor, geometry: Sequence[Tensor], edge_chunk_size: int,
    vectors_are_zero: bool, update_vectors: bool,
) -> Tuple[Tensor, Tensor]:
    """:meth:`EquivariantAttention.forward` with the edge-level work over chunks of ``edge_chunk_size``
    edges: returns (dx [N, F], dvec [N, 3, F]; empty [0, 3, F] without ``update_vectors``)."""
    F = layer.hidden_channels
    q, k, v = torch.split(layer.qkv_proj(layer.layernorm(x)), [F, F, 3 * F], dim=-1)
    node = (q, k, v, vec, layer.filter_proj.weight, layer.filter_proj.bias)
    message_fn = functools.partial(
        _attention_messages, layer, vectors_are_zero=vectors_are_zero, update_vectors=update_vectors
    )
    sums = _ChunkedEdgeSum.apply(message_fn, edge_chunk_size, x.shape[0], len(node), *node, *geometry)
    dx, o1, vec3 = layer._gated_update(vec, sums[0])
    if not update_vectors:
        return dx, torch.zeros((0, 3, F), dtype=x.dtype, device=x.device)
    return dx, vec3 * o1.unsqueeze(1) + sums[1]


def chunked_forward(
    et: EquivariantTransformer, element: Tensor, geometry: Tuple[Tensor, ...], vector_output: bool,
    edge_chunk_size: int,
) -> Tuple[Tensor, Tensor]:
    """:meth:`EquivariantTransformer.forward` with every edge-level step done per chunk of
    ``edge_chunk_size`` edges (inference only). ``geometry`` = (i [E], j [E], rbf [E, R],
    cutoff_weight [E], unit_vectors [E, 3]). Returns scalar features [N, F] and vector features
    [N, 3, F], as the all-edges forward."""
    if et.training:
        raise RuntimeError(
            "edge chunking is for inference only (model.eval()): training needs create_graph=True, which the "
            "recomputed chunks do not support; call set_edge_chunking(None) before training"
        )
    x = et.embedding(element)
    x = _chunked_embedding(et.neighbor_embedding, element, x, geometry, edge_chunk_size)
    vec = torch.zeros((x.shape[0], 3, x.shape[1]), dtype=x.dtype, device=x.device)
    last = len(et.layers) - 1
    for index, layer in enumerate(et.layers):
        update_vectors = vector_output or index < last
        dx, dvec = _chunked_attention(layer, x, vec, geometry, edge_chunk_size, index == 0, update_vectors)
        x = x + dx
        if update_vectors:
            vec = vec + dvec
    return et.final_norm(x), vec


@contextlib.contextmanager
def edge_chunking(model: torch.nn.Module, edge_chunk_size: int | None) -> Iterator[None]:
    """Evaluate ``model`` (a Potential or Committee) with ``edge_chunk_size`` edges per chunk (None:
    all edges at once) inside the block, and restore its previous setting afterwards."""
    previous = model.edge_chunk_size
    model.set_edge_chunking(edge_chunk_size)
    try:
        yield
    finally:
        model.set_edge_chunking(previous)


__all__ = ["chunked_forward", "edge_chunking"]

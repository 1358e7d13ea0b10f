"""The Equivariant Transformer representation (Thölke & De Fabritiis, ICLR 2022).

Every atom carries scalar features x [N, F] and vector features v [N, 3, F]. Each layer is
an equivariant multi-head attention over the radius graph:

    attn_ij = SiLU( sum_head q_i * k_j * d_k(rbf_ij) ) * f_cut(r_ij)
    scalar message  s_ij = attn_ij * (v_j * d_v(rbf_ij))_s
    vector message  m_ij = v_j^vec * (v_j d_v)_1 + (v_j d_v)_2 * r̂_ij
    gated update    dx_i = <U1 v_i, U2 v_i> * o2_i + o3_i,   dv_i = U3 v_i * o1_i + sum_j m_ij

This file only maps (z, edges) to per-atom features; energies live in ``heads.py``, forces
in ``potential.py``.

Memory: the backward pass of the default path keeps every layer's [E, F] and [E, 3, F] edge
messages (about 24 values per edge, layer and channel). For large systems the eager-only
edge-chunked path (:meth:`EquivariantTransformer.set_edge_chunking`) computes the edge-level work
of each layer (filters, attention, messages and their sum onto the atoms) over chunks of edges
and keeps no per-edge message: the backward pass recomputes one chunk at a time (activation
checkpointing, in :class:`_ChunkedEdgeSum`).
"""

from __future__ import annotations

import functools
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn import functional

from .radial import CosineCutoff, ExpNormalSmearing

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


class NeighborEmbedding(nn.Module):
    """x_i <- W [x_i, sum_j f_cut(r_ij) W_r(rbf_ij) * e(z_j)]: atom embedding plus a
    distance-filtered sum of the neighbours' type embeddings."""

    def __init__(self, num_elements: int, hidden_channels: int, num_rbf: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_elements, hidden_channels)
        self.distance_proj = nn.Linear(num_rbf, hidden_channels)
        self.combine = nn.Linear(2 * hidden_channels, hidden_channels)

    def reset_parameters(self) -> None:
        self.embedding.reset_parameters()
        nn.init.xavier_uniform_(self.distance_proj.weight)
        nn.init.zeros_(self.distance_proj.bias)
        nn.init.xavier_uniform_(self.combine.weight)
        nn.init.zeros_(self.combine.bias)

    def forward(self, element: Tensor, x: Tensor, edge_index: Tensor, rbf: Tensor, cutoff_weight: Tensor) -> Tensor:
        messages = self._messages(
            element, edge_index[1], rbf, cutoff_weight,
            self.embedding.weight, self.distance_proj.weight, self.distance_proj.bias,
        )
        aggregated = torch.zeros_like(x).index_add_(0, edge_index[0], messages)
        return self.combine(torch.cat([x, aggregated], dim=-1))

    def _messages(
        self, element: Tensor, j: Tensor, rbf: Tensor, cutoff_weight: Tensor,
        embedding_weight: Tensor, proj_weight: Tensor, proj_bias: Tensor,
    ) -> Tensor:
        """Per-edge messages f_cut(r_ij) W_r(rbf_ij) * e(z_j): [E, F] (the weights are passed in so
        that the chunked path can differentiate with respect to them)."""
        weight = functional.linear(rbf, proj_weight, proj_bias) * cutoff_weight.unsqueeze(-1)
        return functional.embedding(element.index_select(0, j), embedding_weight) * weight

    def _chunk_messages(self, node: Sequence[Tensor], edge: Sequence[Tensor]) -> List[Tensor]:
        element, embedding_weight, proj_weight, proj_bias = node
        _, j, rbf, cutoff_weight = edge
        return [self._messages(element, j, rbf, cutoff_weight, embedding_weight, proj_weight, proj_bias)]

    def forward_chunked(
        self, element: Tensor, x: Tensor, geometry: Sequence[Tensor], edge_chunk_size: int
    ) -> Tensor:
        """Eager-only :meth:`forward` over chunks of ``edge_chunk_size`` edges; ``geometry`` =
        (i, j, rbf, cutoff_weight, unit_vectors) as in :meth:`EquivariantTransformer._forward_chunked`."""
        node = (element, self.embedding.weight, self.distance_proj.weight, self.distance_proj.bias)
        (aggregated,) = _ChunkedEdgeSum.apply(
            self._chunk_messages, edge_chunk_size, x.shape[0], len(node), *node, *geometry[:4]
        )
        return self.combine(torch.cat([x, aggregated], dim=-1))


class EquivariantAttention(nn.Module):
    """One equivariant multi-head attention layer with gated update (returns dx, dvec)."""

    def __init__(self, hidden_channels: int, num_rbf: int, num_heads: int) -> None:
        super().__init__()
        if hidden_channels % num_heads != 0:
            raise ValueError(f"hidden_channels ({hidden_channels}) must be divisible by num_heads ({num_heads})")
        self.hidden_channels = hidden_channels
        self.num_heads = num_heads
        self.head_dim = hidden_channels // num_heads
        self.layernorm = nn.LayerNorm(hidden_channels)
        # q (F), k (F), v (3F) in one matrix product.
        self.qkv_proj = nn.Linear(hidden_channels, 5 * hidden_channels)
        self.vec_proj = nn.Linear(hidden_channels, 3 * hidden_channels, bias=False)
        # d_k (F) and d_v (3F) filters from the radial basis in one matrix product.
        self.filter_proj = nn.Linear(num_rbf, 4 * hidden_channels)
        self.out_proj = nn.Linear(hidden_channels, 3 * hidden_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.layernorm.reset_parameters()
        for layer in (self.qkv_proj, self.filter_proj, self.out_proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.xavier_uniform_(self.vec_proj.weight)

    def forward(
        self,
        x: Tensor,
        vec: Tensor,
        edge_index: Tensor,
        rbf: Tensor,
        cutoff_weight: Tensor,
        unit_vectors: Tensor,
        vectors_are_zero: bool = False,
        update_vectors: bool = True,
    ) -> Tuple[Tensor, Tensor]:
        """x [N, F], vec [N, 3, F]; edges as in :class:`EquivariantTransformer`. Returns the updates
        (dx [N, F], dvec [N, 3, F]). Two shortcuts skip work on the [E, 3, F] vector messages, with
        bit-identical results: ``vectors_are_zero`` (first layer: the gathered neighbour vectors
        vanish) and ``update_vectors=False`` (last layer when only scalars are read: dvec is
        returned empty)."""
        F = self.hidden_channels
        n_atoms = x.shape[0]
        i, j = edge_index[0], edge_index[1]

        q, k, v = torch.split(self.qkv_proj(self.layernorm(x)), [F, F, 3 * F], dim=-1)
        x_msg, vec_gate, dir_gate = self._scalar_messages(
            q, k, v, i, j, rbf, cutoff_weight, self.filter_proj.weight, self.filter_proj.bias, update_vectors
        )
        x_agg = torch.zeros((n_atoms, F), dtype=x.dtype, device=x.device).index_add_(0, i, x_msg)
        dx, o1, vec3 = self._gated_update(vec, x_agg)
        if not update_vectors:
            return dx, torch.zeros((0, 3, F), dtype=x.dtype, device=x.device)

        vec_msg = self._vector_messages(vec, j, vec_gate, dir_gate, unit_vectors, vectors_are_zero)
        dvec = torch.zeros((n_atoms, 3, F), dtype=x.dtype, device=x.device).index_add_(0, i, vec_msg)
        return dx, vec3 * o1.unsqueeze(1) + dvec

    def _gated_update(self, vec: Tensor, x_agg: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Node-level part of the update from the summed scalar messages x_agg [N, F]: returns
        dx [N, F] and the factors of the vector update, o1 [N, F] and vec3 [N, 3, F]. Computed even
        when vec is zero, so that every parameter keeps a gradient."""
        F = self.hidden_channels
        o1, o2, o3 = torch.split(self.out_proj(x_agg), [F, F, F], dim=-1)
        vec1, vec2, vec3 = torch.split(self.vec_proj(vec), [F, F, F], dim=-1)
        dx = (vec1 * vec2).sum(dim=1) * o2 + o3
        return dx, o1, vec3

    def _scalar_messages(
        self, q: Tensor, k: Tensor, v: Tensor, i: Tensor, j: Tensor, rbf: Tensor, cutoff_weight: Tensor,
        filter_weight: Tensor, filter_bias: Tensor, update_vectors: bool,
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """Per-edge scalar messages [E, F] and the two vector gates [E, F] (the scalar messages
        again, unused, when ``update_vectors`` is False). The filter weights are passed in so that
        the chunked path can differentiate with respect to them."""
        F = self.hidden_channels
        filters = torch.nn.functional.silu(functional.linear(rbf, filter_weight, filter_bias))
        dk, dv = torch.split(filters, [F, 3 * F], dim=-1)

        # index_select, not q[i]: its backward is an index_add, while advanced indexing's backward
        # is an accumulating index_put that costs several times more on CPU.
        attn = (q.index_select(0, i) * k.index_select(0, j) * dk).view(-1, self.num_heads, self.head_dim).sum(-1)
        attn = torch.nn.functional.silu(attn) * cutoff_weight.unsqueeze(-1)

        # The value filters vanish smoothly at the cutoff too, so that every message (scalar and
        # vector) goes to zero as a neighbour leaves the sphere: energy and forces stay continuous.
        dv = dv * cutoff_weight.unsqueeze(-1)
        if update_vectors:
            x_msg, vec_gate, dir_gate = torch.split(v.index_select(0, j) * dv, [F, F, F], dim=-1)
        else:
            x_msg = v[:, :F].index_select(0, j) * dv[:, :F]
            vec_gate, dir_gate = x_msg, x_msg  # unused
        x_msg = (x_msg.view(-1, self.num_heads, self.head_dim) * attn.unsqueeze(-1)).view(-1, F)
        return x_msg, vec_gate, dir_gate

    def _vector_messages(
        self, vec: Tensor, j: Tensor, vec_gate: Tensor, dir_gate: Tensor, unit_vectors: Tensor, vectors_are_zero: bool
    ) -> Tensor:
        """Per-edge vector messages [E, 3, F]."""
        vec_msg = dir_gate.unsqueeze(1) * unit_vectors.unsqueeze(-1)
        if not vectors_are_zero:
            vec_msg = vec.index_select(0, j) * vec_gate.unsqueeze(1) + vec_msg
        return vec_msg

    def _chunk_messages(
        self, node: Sequence[Tensor], edge: Sequence[Tensor], vectors_are_zero: bool, update_vectors: bool
    ) -> List[Tensor]:
        """One edge chunk's messages ([E_chunk, F] and, with ``update_vectors``, [E_chunk, 3, F])."""
        q, k, v, vec, filter_weight, filter_bias = node
        i, j, rbf, cutoff_weight, unit_vectors = edge
        x_msg, vec_gate, dir_gate = self._scalar_messages(
            q, k, v, i, j, rbf, cutoff_weight, filter_weight, filter_bias, update_vectors
        )
        if not update_vectors:
            return [x_msg]
        return [x_msg, self._vector_messages(vec, j, vec_gate, dir_gate, unit_vectors, vectors_are_zero)]

    def forward_chunked(
        self,
        x: Tensor,
        vec: Tensor,
        geometry: Sequence[Tensor],
        edge_chunk_size: int,
        vectors_are_zero: bool = False,
        update_vectors: bool = True,
    ) -> Tuple[Tensor, Tensor]:
        """Eager-only :meth:`forward` with the edge-level work (filters, attention, messages and
        their sums onto the atoms) done over chunks of ``edge_chunk_size`` edges: the backward pass
        keeps the node features [N, ...] and recomputes one chunk's messages at a time.
        ``geometry`` = (i [E], j [E], rbf [E, R], cutoff_weight [E], unit_vectors [E, 3]). Same
        results as :meth:`forward` up to the order of floating-point sums."""
        F = self.hidden_channels
        q, k, v = torch.split(self.qkv_proj(self.layernorm(x)), [F, F, 3 * F], dim=-1)
        node = (q, k, v, vec, self.filter_proj.weight, self.filter_proj.bias)
        message_fn = functools.partial(
            self._chunk_messages, vectors_are_zero=vectors_are_zero, update_vectors=update_vectors
        )
        sums = _ChunkedEdgeSum.apply(message_fn, edge_chunk_size, x.shape[0], len(node), *node, *geometry)
        dx, o1, vec3 = self._gated_update(vec, sums[0])
        if not update_vectors:
            return dx, torch.zeros((0, 3, F), dtype=x.dtype, device=x.device)
        return dx, vec3 * o1.unsqueeze(1) + sums[1]


class EquivariantTransformer(nn.Module):
    """Maps element indices and edge geometry to per-atom scalar features [N, F].

    Args:
        num_elements: size of the element-embedding table.
        hidden_channels: F.
        num_layers: number of attention layers.
        num_heads: attention heads (F must be divisible by it).
        num_rbf: number of exponential-normal radial functions.
        cutoff: radial cutoff in Å.
    """

    def __init__(
        self,
        num_elements: int,
        hidden_channels: int = 128,
        num_layers: int = 6,
        num_heads: int = 8,
        num_rbf: int = 32,
        cutoff: float = 5.0,
    ) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.cutoff = float(cutoff)
        self.embedding = nn.Embedding(num_elements, hidden_channels)
        self.rbf = ExpNormalSmearing(cutoff, num_rbf)
        self.cutoff_fn = CosineCutoff(cutoff)
        self.neighbor_embedding = NeighborEmbedding(num_elements, hidden_channels, num_rbf)
        self.layers = nn.ModuleList(
            [EquivariantAttention(hidden_channels, num_rbf, num_heads) for _ in range(num_layers)]
        )
        self.final_norm = nn.LayerNorm(hidden_channels)
        self.embedding.reset_parameters()
        self.neighbor_embedding.reset_parameters()
        # Eager-mode only (see set_edge_chunking); a plain attribute, not part of the state dict.
        self.edge_chunk_size = None

    def set_edge_chunking(self, edge_chunk_size: int | None) -> None:
        """Do the edge-level work in chunks of ``edge_chunk_size`` edges, recomputed in the backward
        pass (None: all edges at once, the default). See :meth:`Potential.set_edge_chunking`."""
        if edge_chunk_size is not None:
            if isinstance(edge_chunk_size, bool) or not isinstance(edge_chunk_size, int) or edge_chunk_size < 1:
                raise ValueError(f"edge_chunk_size must be a positive int or None, got {edge_chunk_size!r}")
        self.edge_chunk_size = edge_chunk_size

    def forward(
        self, element: Tensor, edge_index: Tensor, edge_vectors: Tensor, vector_output: bool = True
    ) -> Tuple[Tensor, Tensor]:
        """element [N] (embedding indices), edge_index [2, E], edge_vectors [E, 3] in Å
        (pos[j] - pos[i]). Returns scalar features [N, F] and vector features [N, 3, F];
        with ``vector_output=False`` (energy models) the last layer's vector update is skipped
        and the returned vector features are those entering the last layer."""
        distances = torch.linalg.norm(edge_vectors, dim=-1)
        unit_vectors = edge_vectors / distances.unsqueeze(-1)
        rbf = self.rbf(distances)
        cutoff_weight = self.cutoff_fn(distances)
        # The chunked path is eager-only: TorchScript drops this block and always takes all edges.
        if not torch.jit.is_scripting():
            if self.edge_chunk_size is not None and edge_index.shape[1] > self.edge_chunk_size:
                geometry = (edge_index[0], edge_index[1], rbf, cutoff_weight, unit_vectors)
                return self._forward_chunked(element, geometry, vector_output, self.edge_chunk_size)

        x = self.embedding(element)
        x = self.neighbor_embedding(element, x, edge_index, rbf, cutoff_weight)
        vec = torch.zeros((x.shape[0], 3, x.shape[1]), dtype=x.dtype, device=x.device)
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            update_vectors = vector_output or index < last
            dx, dvec = layer(x, vec, edge_index, rbf, cutoff_weight, unit_vectors, index == 0, update_vectors)
            x = x + dx
            if update_vectors:
                vec = vec + dvec
        return self.final_norm(x), vec

    def _forward_chunked(
        self, element: Tensor, geometry: Tuple[Tensor, ...], vector_output: bool, edge_chunk_size: int
    ) -> Tuple[Tensor, Tensor]:
        """:meth:`forward` with every edge-level step done per chunk of ``edge_chunk_size`` edges
        (inference only). ``geometry`` = (i [E], j [E], rbf [E, R], cutoff_weight [E], unit_vectors [E, 3])."""
        if self.training:
            raise RuntimeError(
                "edge chunking is for inference only (model.eval()): training needs create_graph=True, which the "
                "recomputed chunks do not support; call set_edge_chunking(None) before training"
            )
        x = self.embedding(element)
        x = self.neighbor_embedding.forward_chunked(element, x, geometry, edge_chunk_size)
        vec = torch.zeros((x.shape[0], 3, x.shape[1]), dtype=x.dtype, device=x.device)
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            update_vectors = vector_output or index < last
            dx, dvec = layer.forward_chunked(x, vec, geometry, edge_chunk_size, index == 0, update_vectors)
            x = x + dx
            if update_vectors:
                vec = vec + dvec
        return self.final_norm(x), vec

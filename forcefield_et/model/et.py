"""The Equivariant Transformer representation (Thölke & De Fabritiis, ICLR 2022).

Every atom carries scalar features x [N, F] and vector features v [N, 3, F]. Each layer is
an equivariant multi-head attention over the radius graph:

    attn_ij = SiLU( sum_head q_i * k_j * d_k(rbf_ij) ) * f_cut(r_ij)
    scalar message  s_ij = attn_ij * (v_j * d_v(rbf_ij))_s
    vector message  m_ij = v_j^vec * (v_j d_v)_1 + (v_j d_v)_2 * r̂_ij
    gated update    dx_i = <U1 v_i, U2 v_i> * o2_i + o3_i,   dv_i = U3 v_i * o1_i + sum_j m_ij

This file only maps (z, edges) to per-atom features; energies live in ``heads.py``, forces
in ``potential.py``.

Memory: the backward pass of this (all-edges) path keeps every layer's [E, F] and [E, 3, F] edge
messages (about 24 values per edge, layer and channel). For large systems the memory-saving
strategy in ``chunked.py`` (switched on with :meth:`EquivariantTransformer.set_edge_chunking`)
runs the same layers over chunks of edges and recomputes one chunk at a time in the backward pass.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional

from .chunked import chunked_forward
from .radial import CosineCutoff, ExpNormalSmearing


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
        that the chunked strategy can differentiate with respect to them)."""
        weight = functional.linear(rbf, proj_weight, proj_bias) * cutoff_weight.unsqueeze(-1)
        return functional.embedding(element.index_select(0, j), embedding_weight) * weight


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
                return chunked_forward(self, element, geometry, vector_output, self.edge_chunk_size)

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

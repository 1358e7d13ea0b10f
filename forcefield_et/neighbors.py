"""Batched radius graphs (neighbour lists), TorchScript-compatible.

``radius_graph(pos, cutoff, batch, cell)`` returns every ordered pair (i, j), i != j (or
i == j with a non-zero periodic shift), whose distance is below ``cutoff``, for many
structures in one call. Nothing is ever truncated: there is no maximum neighbour count.

Two algorithms, chosen automatically:
- brute force within each structure (O(sum n_b^2)), fast for molecules;
- an O(N) cell list (spatial hashing into cubic bins of edge ``cutoff``) for large or
  periodic structures. Periodic images are handled with integer shift vectors, correct
  for triclinic cells and for cells smaller than twice the cutoff.

Conventions: the edge vector of pair (i, j) is ``pos[j] - pos[i] + shift @ cell``, so
``edge_index[0]`` is the centre atom i and ``edge_index[1]`` the neighbour j.
"""

from __future__ import annotations

from typing import List, Tuple

import torch
from torch import Tensor


def _brute_force_pairs(pos: Tensor, batch: Tensor, n_structures: int) -> Tuple[Tensor, Tensor]:
    """All ordered pairs i != j within each structure (block-diagonal), as (i, j)."""
    counts = torch.bincount(batch, minlength=n_structures)
    ptr = torch.zeros(n_structures + 1, dtype=torch.long, device=pos.device)
    ptr[1:] = torch.cumsum(counts, 0)
    n_atoms = pos.shape[0]
    per_atom = counts[batch]
    i = torch.repeat_interleave(torch.arange(n_atoms, device=pos.device), per_atom)
    start_of_row = torch.cumsum(per_atom, 0) - per_atom
    offsets = torch.arange(i.shape[0], device=pos.device) - torch.repeat_interleave(start_of_row, per_atom)
    # Atoms of each structure in contiguous order, so that an unsorted batch vector works too.
    order = torch.argsort(batch, stable=True)
    j = order[ptr[batch[i]] + offsets]
    keep = i != j
    return i[keep], j[keep]


def _cell_list_pairs(
    centers: Tensor, center_group: Tensor, points: Tensor, point_group: Tensor, cutoff: float
) -> Tuple[Tensor, Tensor]:
    """Candidate pairs (c, p) between ``centers`` and ``points`` that share a group and lie in
    neighbouring cubic bins of edge ``cutoff``. O(N) with sorting and binary search; no dense
    bin array, so sparse systems cost nothing extra. Distances are not yet filtered."""
    device = points.device
    lower = torch.minimum(points.min(0).values, centers.min(0).values)
    bin_of_points = torch.floor((points - lower) / cutoff).long()
    bin_of_centers = torch.floor((centers - lower) / cutoff).long()
    # Bins are padded by one on each side so that neighbour offsets never wrap.
    dims = torch.maximum(bin_of_points.max(0).values, bin_of_centers.max(0).values) + 3
    nx, ny, nz = int(dims[0]), int(dims[1]), int(dims[2])

    point_keys = (((point_group * nz) + (bin_of_points[:, 2] + 1)) * ny + (bin_of_points[:, 1] + 1)) * nx + (
        bin_of_points[:, 0] + 1
    )
    center_keys = (((center_group * nz) + (bin_of_centers[:, 2] + 1)) * ny + (bin_of_centers[:, 1] + 1)) * nx + (
        bin_of_centers[:, 0] + 1
    )
    sorted_keys, order = torch.sort(point_keys)
    shifts: List[int] = []
    for dz in range(-1, 2):
        for dy in range(-1, 2):
            for dx in range(-1, 2):
                shifts.append((dz * ny + dy) * nx + dx)
    neighbour_keys = center_keys.unsqueeze(1) + torch.tensor(shifts, dtype=torch.long, device=device)
    neighbour_keys = neighbour_keys.reshape(-1)
    start = torch.searchsorted(sorted_keys, neighbour_keys, right=False)
    stop = torch.searchsorted(sorted_keys, neighbour_keys, right=True)
    counts = stop - start
    center_index = torch.arange(centers.shape[0], device=device).repeat_interleave(27)
    c = torch.repeat_interleave(center_index, counts)
    first = torch.repeat_interleave(start, counts)
    run_start = torch.cumsum(counts, 0) - counts
    within = torch.arange(c.shape[0], device=device) - torch.repeat_interleave(run_start, counts)
    p = order[first + within]
    return c, p


def _periodic_images(pos: Tensor, cell: Tensor, cutoff: float) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Wrap one periodic structure into its cell and build the image atoms within ``cutoff``
    of the cell. Returns wrapped_pos [n,3], wrap_shift [n,3] (integer-valued, such that
    pos = wrapped + wrap_shift @ cell), image_pos [m,3], image_atom [m], image_shift [m,3]."""
    inv = torch.linalg.inv(cell)
    frac = pos @ inv
    wrap_shift = torch.floor(frac)
    frac = frac - wrap_shift
    wrapped = frac @ cell
    volume = torch.abs(torch.det(cell))
    a, b, c = cell[0], cell[1], cell[2]
    heights = torch.stack(
        [
            volume / torch.linalg.norm(torch.linalg.cross(b, c)),
            volume / torch.linalg.norm(torch.linalg.cross(c, a)),
            volume / torch.linalg.norm(torch.linalg.cross(a, b)),
        ]
    )
    reach = torch.ceil(cutoff / heights).long()
    ranges: List[Tensor] = []
    for k in range(3):
        r = int(reach[k])
        ranges.append(torch.arange(-r, r + 1, device=pos.device, dtype=pos.dtype))
    grid = torch.stack(torch.meshgrid(ranges, indexing="ij"), -1).reshape(-1, 3)
    # Keep (atom, shift) only if the image lies within `cutoff` (in fractional slab terms) of the cell.
    margin = cutoff / heights
    image_frac = frac.unsqueeze(0) + grid.unsqueeze(1)  # [S, n, 3]
    inside = ((image_frac > -margin) & (image_frac < 1.0 + margin)).all(-1)
    hits = torch.nonzero(inside)
    shift_index, atom_index = hits[:, 0], hits[:, 1]
    image_shift = grid[shift_index]
    image_pos = wrapped[atom_index] + image_shift @ cell
    return wrapped, wrap_shift, image_pos, atom_index, image_shift


def radius_graph(
    pos: Tensor,
    cutoff: float,
    batch: Tensor | None = None,
    cell: Tensor | None = None,
    method: str = "auto",
    brute_force_max_atoms: int = 384,
) -> Tuple[Tensor, Tensor]:
    """Neighbour pairs within ``cutoff`` for a batch of structures.

    Args:
        pos: [N, 3] positions in Å.
        cutoff: radius in Å.
        batch: [N] long, structure index of each atom (sorted or not); None = one structure.
        cell: [B, 3, 3] lattice vectors as rows in Å for periodic structures (all three
            directions periodic); None = no periodicity.
        method: "auto", "brute" or "cell" (non-periodic only; periodic always uses the cell list).
        brute_force_max_atoms: with "auto", structures up to this size use brute force.

    Returns:
        edge_index: [2, E] long, (centre i, neighbour j).
        shifts: [E, 3] integer-valued shifts in units of the cell (same dtype as ``pos``),
            zeros without PBC. The edge vector is pos[j] - pos[i] + shifts @ cell[batch[i]].
    """
    device = pos.device
    if batch is None:
        batch = torch.zeros(pos.shape[0], dtype=torch.long, device=device)
    if pos.shape[0] == 0:
        return torch.zeros((2, 0), dtype=torch.long, device=device), torch.zeros((0, 3), dtype=pos.dtype, device=device)
    n_structures = int(batch.max()) + 1
    if cell is not None:
        return _periodic_radius_graph(pos, cutoff, batch, cell, n_structures)
    if method == "auto":
        largest = int(torch.bincount(batch, minlength=n_structures).max())
        method = "brute" if largest <= brute_force_max_atoms else "cell"
    if method == "brute":
        i, j = _brute_force_pairs(pos, batch, n_structures)
    elif method == "cell":
        i, j = _cell_list_pairs(pos, batch, pos, batch, cutoff)
        keep = i != j
        i, j = i[keep], j[keep]
    else:
        raise ValueError("radius_graph: method must be 'auto', 'brute' or 'cell'")
    distance_sq = (pos[j] - pos[i]).pow(2).sum(-1)
    keep = distance_sq < cutoff * cutoff
    edge_index = torch.stack([i[keep], j[keep]])
    return edge_index, torch.zeros((edge_index.shape[1], 3), dtype=pos.dtype, device=device)


def edges_per_structure(pos: Tensor, cutoff: float, batch: Tensor, cell: Tensor | None = None) -> Tensor:
    """Number of directed neighbour pairs within ``cutoff`` of each structure: [B] long, for
    ``pos`` [N, 3] Å, ``batch`` [N] (structure index of each atom) and optional ``cell`` [B, 3, 3] Å."""
    n_structures = int(batch.max()) + 1 if batch.numel() else 0
    edge_index, _ = radius_graph(pos.detach(), cutoff, batch, cell)
    return torch.bincount(batch[edge_index[0]], minlength=n_structures)


def _periodic_radius_graph(
    pos: Tensor, cutoff: float, batch: Tensor, cell: Tensor, n_structures: int
) -> Tuple[Tensor, Tensor]:
    if cell.dim() == 2:
        cell = cell.unsqueeze(0)
    if cell.shape[0] != n_structures:
        raise ValueError("radius_graph: cell must have shape [B, 3, 3] with one cell per structure")
    device = pos.device
    edges: List[Tensor] = []
    edge_shifts: List[Tensor] = []
    atom_ids = torch.arange(pos.shape[0], device=device)
    for s in range(n_structures):
        members = atom_ids[batch == s]
        if members.shape[0] == 0:
            continue
        lattice = cell[s].detach()
        p = pos[members].detach()
        wrapped, wrap_shift, image_pos, image_atom, image_shift = _periodic_images(p, lattice, cutoff)
        n = wrapped.shape[0]
        zero_group_c = torch.zeros(n, dtype=torch.long, device=device)
        zero_group_p = torch.zeros(image_pos.shape[0], dtype=torch.long, device=device)
        c, q = _cell_list_pairs(wrapped, zero_group_c, image_pos, zero_group_p, cutoff)
        j = image_atom[q]
        shift = image_shift[q]
        not_self = (c != j) | (shift.abs().sum(-1) > 0)
        c, j, shift, q = c[not_self], j[not_self], shift[not_self], q[not_self]
        distance_sq = (image_pos[q] - wrapped[c]).pow(2).sum(-1)
        keep = distance_sq < cutoff * cutoff
        c, j, shift = c[keep], j[keep], shift[keep]
        # Undo the wrapping: pos = wrapped + wrap_shift @ cell, so the shift on the
        # original positions is shift + wrap_shift[i] - wrap_shift[j].
        shift = shift + wrap_shift[c] - wrap_shift[j]
        edges.append(torch.stack([members[c], members[j]]))
        edge_shifts.append(shift)
    if len(edges) == 0:
        return torch.zeros((2, 0), dtype=torch.long, device=device), torch.zeros((0, 3), dtype=pos.dtype, device=device)
    return torch.cat(edges, 1), torch.cat(edge_shifts, 0)


def brute_force_reference(
    pos: Tensor, cutoff: float, batch: Tensor | None = None, cell: Tensor | None = None
) -> Tuple[Tensor, Tensor]:
    """O(N^2 * images) reference used by the tests: same contract as :func:`radius_graph`."""
    if batch is None:
        batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
    i, j = _brute_force_pairs(pos, batch, int(batch.max()) + 1 if pos.shape[0] else 0)
    if cell is None:
        vec = pos[j] - pos[i]
        keep = vec.pow(2).sum(-1) < cutoff * cutoff
        return torch.stack([i[keep], j[keep]]), torch.zeros((int(keep.sum()), 3), dtype=pos.dtype)
    edges, shifts = [], []
    n = pos.shape[0]
    all_i = torch.arange(n).repeat_interleave(n)
    all_j = torch.arange(n).repeat(n)
    same = batch[all_i] == batch[all_j]
    all_i, all_j = all_i[same], all_j[same]
    for s in range(cell.shape[0]):
        lattice = cell[s]
        heights = torch.abs(torch.det(lattice)) / torch.linalg.norm(
            torch.linalg.cross(lattice[[1, 2, 0]], lattice[[2, 0, 1]]), dim=1
        )
        frac = pos[batch == s] @ torch.linalg.inv(lattice)
        span = torch.ceil(frac.max(0).values - frac.min(0).values)
        reach = [int(torch.ceil(cutoff / heights[k]) + span[k]) + 1 for k in range(3)]
        sel = batch[all_i] == s
        si, sj = all_i[sel], all_j[sel]
        for a in range(-reach[0], reach[0] + 1):
            for b in range(-reach[1], reach[1] + 1):
                for c in range(-reach[2], reach[2] + 1):
                    shift = torch.tensor([a, b, c], dtype=pos.dtype)
                    vec = pos[sj] - pos[si] + shift @ lattice
                    keep = vec.pow(2).sum(-1) < cutoff * cutoff
                    if a == 0 and b == 0 and c == 0:
                        keep &= si != sj
                    edges.append(torch.stack([si[keep], sj[keep]]))
                    shifts.append(shift.expand(int(keep.sum()), 3))
    return torch.cat(edges, 1), torch.cat(shifts, 0)


def edges_as_set(edge_index: Tensor, shifts: Tensor) -> set:
    """Edges as a set of (i, j, sx, sy, sz) tuples, for comparisons in tests."""
    rows = torch.cat([edge_index.t().to(torch.long), shifts.round().to(torch.long)], 1)
    return {tuple(r) for r in rows.tolist()}


def torch_cluster_radius_graph(pos: Tensor, cutoff: float, batch: Tensor | None = None) -> Tensor:
    """Optional backend: torch-cluster's ``radius_graph`` with no neighbour cap, returned in
    this module's (centre, neighbour) convention. Raises ImportError when not installed."""
    from torch_cluster import radius_graph as tc_radius_graph  # optional dependency

    edge_index = tc_radius_graph(pos, r=cutoff, batch=batch, loop=False, max_num_neighbors=pos.shape[0])
    # torch-cluster returns (source j, target i); flip to (i, j).
    return edge_index.flip(0)

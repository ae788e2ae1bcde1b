"""Radius graph of batched molecules in plain, device-agnostic torch.

Edges join atoms of the same molecule closer than ``cutoff`` (strictly, as torch_cluster).
Row 0 of the result is the source (neighbour ``j``), row 1 the target (centre ``i``), the PyG
``source_to_target`` convention; edges come sorted by target, then source. When an atom has
more than ``max_num_neighbors`` neighbours, the nearest are kept (ties: lower index first),
which, unlike torch_cluster's "first found", does not depend on atom order or device.

The cap silently changes the graph, so :func:`radius_graph_and_dropped` also counts the edges
it dropped (the equivariant transformer warns once per run with that count). TorchMD-NET's
current code treats its limit as a budget for the whole batch and raises when it is exceeded
instead of cutting; molssl keeps the published ET's per-atom cap (nearest first) and reports it.

Distances are computed on dense per-molecule blocks: molecules are padded to the largest one
of a chunk of consecutive molecules, and chunks are sized so that no intermediate exceeds
``max_block_elements`` entries. Memory is thus about ``sum_i N_i * Nmax`` rather than the
``N^2`` of one dense matrix over the whole batch.
"""

from __future__ import annotations

import importlib.util
from typing import Literal

import torch
from torch import Tensor

__all__ = ["HAS_TORCH_CLUSTER", "radius_graph", "radius_graph_and_dropped"]

HAS_TORCH_CLUSTER = importlib.util.find_spec("torch_cluster") is not None

Backend = Literal["auto", "torch", "torch_cluster"]

DEFAULT_MAX_BLOCK_ELEMENTS = 1 << 24
"""Largest ``B_chunk * Nmax^2`` handled at once: ~200 MB of float32 pairwise differences."""


def _check_inputs(
    pos: Tensor, batch: Tensor | None, cutoff: float, max_num_neighbors: int | None
) -> Tensor:
    """Validate the arguments and return ``batch`` (zeros when ``None``)."""
    if pos.dim() != 2 or pos.size(1) != 3 or not pos.is_floating_point():
        raise ValueError(
            f"pos must be a floating (N, 3) tensor, got {pos.dtype} {tuple(pos.shape)}"
        )
    if not cutoff > 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    if max_num_neighbors is not None and max_num_neighbors < 1:
        raise ValueError(f"max_num_neighbors must be >= 1 or None, got {max_num_neighbors}")
    if batch is None:
        return torch.zeros(pos.size(0), dtype=torch.long, device=pos.device)
    if batch.shape != (pos.size(0),) or batch.dtype.is_floating_point:
        raise ValueError(
            f"batch must be an integer ({pos.size(0)},) tensor, got {batch.dtype} "
            f"{tuple(batch.shape)}"
        )
    if batch.device != pos.device:
        raise ValueError(f"batch is on {batch.device} but pos is on {pos.device}")
    if batch.numel() and int(batch.min()) < 0:
        raise ValueError("batch holds negative molecule indices")
    return batch.long()


def _chunks(counts: list[int], max_block_elements: int) -> list[tuple[int, int]]:
    """Consecutive molecule ranges ``[g0, g1)`` whose padded blocks fit the budget."""
    chunks: list[tuple[int, int]] = []
    start, largest = 0, 0
    for g, n in enumerate(counts):
        widest = max(largest, n)
        if g > start and (g - start + 1) * widest * widest > max_block_elements:
            chunks.append((start, g))
            start, widest = g, n
        largest = widest
    if counts:
        chunks.append((start, len(counts)))
    return chunks


def _chunk_edges(
    pos: Tensor,
    counts: list[int],
    first_node: int,
    cutoff: float,
    max_num_neighbors: int | None,
    loop: bool,
) -> tuple[Tensor, Tensor]:
    """Edges of consecutive molecules (``counts`` atoms each, the first atom being global
    index ``first_node``), as global ``(2, E)``, and the number dropped by the cap."""
    device = pos.device
    num_graphs, n_max = len(counts), max(counts)
    counts_t = torch.tensor(counts, device=device)
    ptr = torch.cumsum(counts_t, 0) - counts_t
    graph_of_node = torch.repeat_interleave(torch.arange(num_graphs, device=device), counts_t)
    slot = torch.arange(pos.size(0), device=device) - ptr[graph_of_node]
    dense = pos.new_zeros(num_graphs, n_max, 3)
    dense[graph_of_node, slot] = pos
    mask = torch.zeros(num_graphs, n_max, dtype=torch.bool, device=device)
    mask[graph_of_node, slot] = True

    # Explicit differences rather than torch.cdist, whose matmul path is inexact near cutoff.
    dist_sq = (dense[:, :, None, :] - dense[:, None, :, :]).pow(2).sum(-1)
    keep = mask[:, :, None] & mask[:, None, :] & (dist_sq < cutoff * cutoff)
    if not loop:
        keep &= ~torch.eye(n_max, dtype=torch.bool, device=device)
    dropped = torch.zeros((), dtype=torch.long, device=device)
    if max_num_neighbors is not None and max_num_neighbors < n_max:
        # Sort only the rows of centres over the cap (a minority in a typical batch).
        degree = keep.sum(-1)
        crowded = degree > max_num_neighbors
        if bool(crowded.any()):
            dropped = (degree[crowded] - max_num_neighbors).sum()
            rows = keep[crowded]
            ranked = dist_sq[crowded].masked_fill(~rows, float("inf"))
            nearest = torch.sort(ranked, dim=-1, stable=True).indices[:, :max_num_neighbors]
            keep[crowded] = rows & torch.zeros_like(rows).scatter_(-1, nearest, True)
    graph, centre, neighbour = keep.nonzero(as_tuple=True)
    offset = ptr[graph] + first_node
    return torch.stack([neighbour + offset, centre + offset]), dropped


def _radius_torch(
    pos: Tensor,
    batch: Tensor,
    cutoff: float,
    max_num_neighbors: int | None,
    loop: bool,
    max_block_elements: int,
) -> tuple[Tensor, Tensor]:
    """Pure-torch radius graph for a sorted ``batch``, and the edges the cap dropped."""
    counts = torch.bincount(batch).tolist()
    node_ptr = [0]
    for n in counts:
        node_ptr.append(node_ptr[-1] + n)
    pieces = []
    dropped = torch.zeros((), dtype=torch.long, device=pos.device)
    for g0, g1 in _chunks(counts, max_block_elements):
        sub_counts = [n for n in counts[g0:g1] if n > 0]
        if not sub_counts:
            continue
        sub_pos = pos[node_ptr[g0] : node_ptr[g1]]
        edges, chunk_dropped = _chunk_edges(
            sub_pos, sub_counts, node_ptr[g0], cutoff, max_num_neighbors, loop
        )
        pieces.append(edges)
        dropped = dropped + chunk_dropped
    if not pieces:
        return torch.zeros(2, 0, dtype=torch.long, device=pos.device), dropped
    return torch.cat(pieces, dim=1), dropped


def _keep_nearest(edge_index: Tensor, pos: Tensor, max_num_neighbors: int) -> tuple[Tensor, Tensor]:
    """Keep the ``max_num_neighbors`` nearest sources of every target; sort by target, source.
    Also returns how many edges were dropped."""
    source, target = edge_index
    num_nodes = pos.size(0)
    dist_sq = (pos[source] - pos[target]).pow(2).sum(-1)
    # Lexicographic (target, distance, source) by successive stable sorts, last key first.
    order = torch.argsort(source, stable=True)
    order = order[torch.argsort(dist_sq[order], stable=True)]
    order = order[torch.argsort(target[order], stable=True)]
    source, target = source[order], target[order]
    counts = torch.bincount(target, minlength=num_nodes)
    rank = torch.arange(target.numel(), device=pos.device) - (counts.cumsum(0) - counts)[target]
    keep = rank < max_num_neighbors
    edges = _sorted_by_target(torch.stack([source[keep], target[keep]]), num_nodes)
    return edges, (~keep).sum()


def _sorted_by_target(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Edges in (target, source) order, the order the pure-torch path produces."""
    key = edge_index[1] * num_nodes + edge_index[0]
    return edge_index[:, torch.argsort(key)]


def _radius_cluster(
    pos: Tensor, batch: Tensor, cutoff: float, max_num_neighbors: int | None, loop: bool
) -> tuple[Tensor, Tensor]:
    """torch_cluster radius graph with all neighbours kept, then our nearest-k rule."""
    import torch_cluster

    largest = int(torch.bincount(batch).max())
    edge_index = torch_cluster.radius_graph(
        pos, r=cutoff, batch=batch, loop=loop, max_num_neighbors=largest
    )
    if max_num_neighbors is not None:
        return _keep_nearest(edge_index, pos, max_num_neighbors)
    dropped = torch.zeros((), dtype=torch.long, device=pos.device)
    return _sorted_by_target(edge_index, pos.size(0)), dropped


def radius_graph(
    pos: Tensor,
    batch: Tensor | None = None,
    cutoff: float = 5.0,
    max_num_neighbors: int | None = 32,
    loop: bool = False,
    *,
    backend: Backend = "auto",
    max_block_elements: int = DEFAULT_MAX_BLOCK_ELEMENTS,
) -> Tensor:
    """Edges between atoms of the same molecule closer than ``cutoff``: the edge list of
    :func:`radius_graph_and_dropped` (see it for the arguments)."""
    return radius_graph_and_dropped(
        pos,
        batch,
        cutoff,
        max_num_neighbors,
        loop,
        backend=backend,
        max_block_elements=max_block_elements,
    )[0]


def radius_graph_and_dropped(
    pos: Tensor,
    batch: Tensor | None = None,
    cutoff: float = 5.0,
    max_num_neighbors: int | None = 32,
    loop: bool = False,
    *,
    backend: Backend = "auto",
    max_block_elements: int = DEFAULT_MAX_BLOCK_ELEMENTS,
) -> tuple[Tensor, Tensor]:
    """Edges between atoms of the same molecule closer than ``cutoff``, and how many edges
    ``max_num_neighbors`` dropped.

    Args:
        pos: ``(N, 3)`` float coordinates, on any device.
        batch: ``(N,)`` molecule index of every atom (need not be sorted); ``None`` = one
            molecule.
        cutoff: Distance cutoff (same unit as ``pos``); pairs at ``d < cutoff`` are joined.
        max_num_neighbors: At most this many neighbours per centre atom (self-loops count
            when ``loop``), the nearest ones; ``None`` for no limit. The edges beyond it are
            dropped, and counted.
        loop: Whether every atom is also its own neighbour.
        backend: ``"torch"`` (dense blocks), ``"torch_cluster"`` (requires it installed), or
            ``"auto"``: torch_cluster when installed, else torch. Both give the same edges.
        max_block_elements: Memory budget of the torch path, in pairwise entries per chunk.

    Returns:
        ``(edge_index, dropped)``: ``(2, E)`` long on ``pos.device``, row 0 source
        (neighbour), row 1 target (centre), sorted by target then source; and a 0-d long
        tensor, the number of edges within the cutoff that the cap left out.

    Raises:
        ValueError: On malformed ``pos``/``batch`` or out-of-range parameters.
        ImportError: If ``backend="torch_cluster"`` and torch_cluster is not installed.
    """
    batch = _check_inputs(pos, batch, cutoff, max_num_neighbors)
    if pos.size(0) == 0:
        empty = torch.zeros(2, 0, dtype=torch.long, device=pos.device)
        return empty, torch.zeros((), dtype=torch.long, device=pos.device)
    if backend not in ("auto", "torch", "torch_cluster"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'torch_cluster', got {backend!r}")
    if backend == "torch_cluster" and not HAS_TORCH_CLUSTER:
        raise ImportError("backend='torch_cluster' needs the torch_cluster package installed")

    sorted_batch = batch.numel() < 2 or bool((batch[1:] >= batch[:-1]).all())
    perm = None
    if not sorted_batch:
        perm = torch.argsort(batch, stable=True)
        pos, batch = pos[perm], batch[perm]
    if backend == "torch_cluster" or (backend == "auto" and HAS_TORCH_CLUSTER):
        edge_index, dropped = _radius_cluster(pos, batch, cutoff, max_num_neighbors, loop)
    else:
        edge_index, dropped = _radius_torch(
            pos, batch, cutoff, max_num_neighbors, loop, max(1, max_block_elements)
        )
    if perm is not None:
        edge_index = _sorted_by_target(perm[edge_index], pos.size(0))
    return edge_index, dropped

"""2D graph relations: shortest-path distances and the edges along one shortest path.

Graphormer's spatial encoding needs the shortest-path distance (SPD) of every atom pair and
its multi-hop edge encoding needs the edges along one shortest path; MoleBLEND uses the same
relations. Both are computed here from a PyG ``edge_index`` (both directions stored, the PyG
convention), in vectorised NumPy, once per molecule.

Conventions:

* Distances are in bonds; ``0`` on the diagonal; ``-1`` for unreachable pairs (atoms of
  different fragments of a salt) and, in padded batches, for padding.
* The path from ``i`` to ``j`` is deterministic: at every step it takes the directed edge of
  lowest id that leaves the current atom and gets one bond closer to ``j``. Its edge ids are
  columns of ``edge_index`` (so they index ``edge_attr`` directly), the edge stored in the
  ``current -> next`` direction. Paths longer than ``max_hops`` keep their first ``max_hops``
  edges (Graphormer's ``multi_hop_max_dist`` truncation); ``-1`` pads shorter ones.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

__all__ = [
    "AddGraphRelations",
    "GraphRelations",
    "dense_graph_relations",
    "shortest_path_edges",
    "shortest_path_matrix",
]


def _as_edge_array(edge_index: np.ndarray | Tensor, num_nodes: int) -> np.ndarray:
    """Validate ``edge_index`` and return it as an int64 ``(2, E)`` NumPy array."""
    if isinstance(edge_index, Tensor):
        edge_index = edge_index.detach().cpu().numpy()
    edges = np.asarray(edge_index)
    if edges.ndim != 2 or edges.shape[0] != 2:
        raise ValueError(f"edge_index must have shape (2, E), got {edges.shape}")
    if num_nodes < 0:
        raise ValueError(f"num_nodes must be non-negative, got {num_nodes}")
    edges = edges.astype(np.int64, copy=False)
    if edges.size and (edges.min() < 0 or edges.max() >= num_nodes):
        raise ValueError(
            f"edge_index refers to atoms outside [0, {num_nodes}): "
            f"min {edges.min()}, max {edges.max()}"
        )
    return edges


def _check_symmetric(edges: np.ndarray, num_nodes: int) -> None:
    """Raise unless every edge ``u -> v`` (``u != v``) is also stored as ``v -> u``."""
    adjacency = np.zeros((num_nodes, num_nodes), dtype=bool)
    adjacency[edges[0], edges[1]] = True
    if not np.array_equal(adjacency, adjacency.T):
        raise ValueError(
            "edge_index must store every bond in both directions (PyG convention for "
            "undirected graphs); see torch_geometric.utils.to_undirected"
        )


def _spd_from_edges(edges: np.ndarray, num_nodes: int) -> np.ndarray:
    """All-pairs BFS from every source at once, on bit-packed frontiers.

    Row ``v`` of a frontier is the bit set of the sources whose BFS reached ``v`` at the
    current distance. One level is a gather of the rows of the edge sources and a
    ``bitwise_or.reduceat`` per edge target, i.e. ``O(E * N / 8)`` bytes of work, with no
    BLAS call (whose threading makes tiny products erratic under load). A 152-atom alkane
    chain with hydrogens (diameter 51) takes a few milliseconds.
    """
    n = num_nodes
    spd = np.full((n, n), -1, dtype=np.int64)
    if n == 0:
        return spd
    np.fill_diagonal(spd, 0)
    _check_symmetric(edges, n)
    src, dst = edges
    not_loop = src != dst
    src, dst = src[not_loop], dst[not_loop]
    if src.size == 0:
        return spd
    order = np.argsort(dst, kind="stable")
    src_by_dst = src[order]
    targets, starts = np.unique(dst[order], return_index=True)
    reached = np.packbits(np.eye(n, dtype=bool), axis=1)
    frontier = reached
    distance = 0
    while True:
        distance += 1
        expanded = np.zeros_like(reached)
        expanded[targets] = np.bitwise_or.reduceat(frontier[src_by_dst], starts, axis=0)
        frontier = expanded & ~reached
        if not frontier.any():
            return spd
        # spd[v, s] for v reached from s; the matrix is symmetric for an undirected graph.
        spd[np.unpackbits(frontier, axis=1, count=n).view(bool)] = distance
        reached |= frontier


def shortest_path_matrix(edge_index: np.ndarray | Tensor, num_nodes: int) -> np.ndarray:
    """Shortest-path distance (in bonds) between every pair of atoms.

    Args:
        edge_index: ``(2, E)`` atom indices, every bond in both directions (PyG convention).
        num_nodes: Number of atoms ``N``.

    Returns:
        ``(N, N)`` int64 with ``0`` on the diagonal and ``-1`` for unreachable pairs.

    Raises:
        ValueError: If ``edge_index`` is not ``(2, E)``, refers to atoms outside ``[0, N)`` or
            is not symmetric.
    """
    return _spd_from_edges(_as_edge_array(edge_index, num_nodes), num_nodes)


def _first_hop_edges(edges: np.ndarray, spd: np.ndarray) -> np.ndarray:
    """``first[i, j]``: lowest edge id ``i -> k`` with ``spd[k, j] == spd[i, j] - 1``, else -1."""
    n = spd.shape[0]
    src, dst = edges
    # (E, N): edge e = (u -> v) starts a shortest path from u to j iff it gets one bond closer.
    closer = (spd[dst] == spd[src] - 1) & (spd[src] > 0)
    edge_ids, targets = np.nonzero(closer)  # row-major: edge ids ascending
    first = np.full((n, n), -1, dtype=np.int64)
    if edge_ids.size == 0:
        return first
    keys = src[edge_ids] * n + targets
    # Stable sort keeps ascending edge ids within a key, so the first of each key is the lowest.
    order = np.argsort(keys, kind="stable")
    unique_keys, first_pos = np.unique(keys[order], return_index=True)
    first.reshape(-1)[unique_keys] = edge_ids[order][first_pos]
    return first


def _path_edges_from_spd(edges: np.ndarray, spd: np.ndarray, max_hops: int) -> np.ndarray:
    """Walk all ``N * N`` paths at once, one hop per step, along :func:`_first_hop_edges`.

    The walker of pair ``(i, j)`` sits at flat index ``current * N + j``; once it reaches
    ``j`` (or if ``j`` is unreachable) the first-hop table gives ``-1`` and the next-atom
    table keeps it in place, so every hop is two plain gathers, with no masking.
    """
    n = spd.shape[0]
    if n == 0 or max_hops == 0 or edges.shape[1] == 0:
        return np.full((n, n, max_hops), -1, dtype=np.int64)
    first = _first_hop_edges(edges, spd).reshape(-1)
    stay = np.repeat(np.arange(n), n)
    next_atom = np.where(first >= 0, edges[1][np.maximum(first, 0)], stay)
    target = np.tile(np.arange(n), n)
    walker = np.arange(n * n)
    paths = np.empty((n * n, max_hops), dtype=np.int64)
    for hop in range(max_hops):
        paths[:, hop] = first[walker]
        walker = next_atom[walker] * n + target
    return paths.reshape(n, n, max_hops)


def shortest_path_edges(
    edge_index: np.ndarray | Tensor, num_nodes: int, max_hops: int
) -> np.ndarray:
    """Edge ids along one deterministic shortest path between every pair of atoms.

    Args:
        edge_index: ``(2, E)`` atom indices, PyG convention.
        num_nodes: Number of atoms ``N``.
        max_hops: Number of path edges kept per pair (longer paths are truncated).

    Returns:
        ``(N, N, max_hops)`` int64: ``out[i, j, h]`` is the column of ``edge_index`` of the
        ``h``-th edge on the path from ``i`` to ``j`` (stored ``i``-side first), ``-1`` past
        the end of the path, on the diagonal and for unreachable pairs.

    Raises:
        ValueError: On a malformed ``edge_index`` or a negative ``max_hops``.
    """
    if max_hops < 0:
        raise ValueError(f"max_hops must be non-negative, got {max_hops}")
    edges = _as_edge_array(edge_index, num_nodes)
    return _path_edges_from_spd(edges, _spd_from_edges(edges, num_nodes), max_hops)


def _relations_flat(edge_index: Tensor, num_nodes: int, max_hops: int) -> tuple[Tensor, Tensor]:
    """Row-major flattened ``spd (N*N,)`` and ``path_edges (N*N, max_hops)`` as CPU tensors."""
    edges = _as_edge_array(edge_index, num_nodes)
    spd = _spd_from_edges(edges, num_nodes)
    paths = _path_edges_from_spd(edges, spd, max_hops)
    return (
        torch.from_numpy(spd.reshape(-1)),
        torch.from_numpy(paths.reshape(num_nodes * num_nodes, max_hops)),
    )


class AddGraphRelations(BaseTransform):
    """Store ``spd`` and ``path_edges`` on a molecule, flattened so that PyG can batch them.

    ``data.spd`` is ``(N*N,)`` and ``data.path_edges`` is ``(N*N, max_hops)``, both row-major
    over ``(i, j)`` with LOCAL edge ids. Neither name contains ``index``, so PyG's collation
    concatenates them without offsets; :func:`dense_graph_relations` adds the offsets.

    Args:
        max_hops: Number of path edges kept per pair.
    """

    def __init__(self, max_hops: int = 5) -> None:
        if max_hops < 0:
            raise ValueError(f"max_hops must be non-negative, got {max_hops}")
        self.max_hops = max_hops

    def forward(self, data: Data) -> Data:
        """Add ``spd`` and ``path_edges`` to ``data`` (a shallow copy made by ``__call__``)."""
        if data.num_nodes is None:
            raise ValueError("data has no atoms (num_nodes is None)")
        data.spd, data.path_edges = _relations_flat(data.edge_index, data.num_nodes, self.max_hops)
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_hops={self.max_hops})"


class GraphRelations(NamedTuple):
    """Padded pairwise relations of a batch, on the batch's device.

    Attributes:
        spd: ``(B, Nmax, Nmax)`` long; ``-1`` for unreachable pairs and padding.
        path_edges: ``(B, Nmax, Nmax, max_hops)`` long; GLOBAL edge ids into
            ``batch.edge_index``/``batch.edge_attr``, ``-1`` pad.
        node_mask: ``(B, Nmax)`` bool, ``True`` at real atoms (``to_dense_batch`` layout).
    """

    spd: Tensor
    path_edges: Tensor
    node_mask: Tensor


def _batch_layout(batch: Data) -> tuple[int, Tensor, Tensor, Tensor]:
    """``(num_graphs, nodes_per_graph (B,), edges_per_graph (B,), node_graph (N,))``."""
    edge_index = batch.edge_index
    device = edge_index.device
    num_nodes = int(batch.num_nodes or 0)
    node_graph = getattr(batch, "batch", None)
    if node_graph is None:
        node_graph = torch.zeros(num_nodes, dtype=torch.long, device=device)
        num_graphs = 1
    else:
        node_graph = node_graph.detach().to(device=device, dtype=torch.long)
        num_graphs = int(getattr(batch, "num_graphs", 0) or 0)
        num_graphs = max(num_graphs, int(node_graph.max()) + 1 if node_graph.numel() else 0)
    if node_graph.numel() > 1 and bool((node_graph[1:] < node_graph[:-1]).any()):
        raise ValueError("batch.batch must be sorted (PyG order: molecule by molecule)")
    edge_graph = node_graph[edge_index[0]]
    if edge_graph.numel() > 1 and bool((edge_graph[1:] < edge_graph[:-1]).any()):
        raise ValueError("edges must be grouped by molecule, as PyG's Batch stores them")
    if bool((edge_graph != node_graph[edge_index[1]]).any()):
        raise ValueError("edge_index has an edge between two different molecules")
    nodes_per_graph = torch.bincount(node_graph, minlength=num_graphs)
    edges_per_graph = torch.bincount(edge_graph, minlength=num_graphs)
    return num_graphs, nodes_per_graph, edges_per_graph, node_graph


def _precomputed_flat(
    batch: Data, max_hops: int, total_pairs: int
) -> tuple[Tensor | None, Tensor | None]:
    """The batch's own ``spd`` and ``path_edges``, each if present, usable and of the right size.

    ``path_edges`` is only used together with ``spd`` and when it has at least ``max_hops``
    hops (fewer cannot be truncated from; the paths are then derived from ``spd``).
    """
    spd = getattr(batch, "spd", None)
    paths = getattr(batch, "path_edges", None)
    if spd is None:
        return None, None
    paths_pairs = paths.size(0) if paths is not None and paths.dim() == 2 else -1
    if spd.numel() != total_pairs or (paths is not None and paths_pairs != total_pairs):
        raise ValueError(
            f"precomputed spd/path_edges have {spd.numel()}/{paths_pairs} pairs, the batch "
            f"needs {total_pairs} (sum of N_i^2): were they made by AddGraphRelations?"
        )
    device = batch.edge_index.device
    spd = spd.detach().to(device=device, dtype=torch.long)
    if paths is None or paths.size(1) < max_hops:
        return spd, None
    return spd, paths[:, :max_hops].detach().to(device=device, dtype=torch.long)


def _paths_from_dense_spd(
    spd: Tensor, edge_index: Tensor, node_graph: Tensor, nodes_per_graph: Tensor, max_hops: int
) -> Tensor:
    """Global path edges ``(B, Nmax, Nmax, max_hops)`` from padded SPDs, on their device.

    The same paths as :func:`shortest_path_edges`: the first hop from ``i`` towards ``j`` is
    the lowest-id edge ``i -> k`` with ``spd[k, j] == spd[i, j] - 1`` (within a molecule,
    global ids are the local ids plus a constant, so "lowest" agrees), found for all edges
    and targets at once with a scatter-min; then every pair's walker follows first hops.
    """
    num_graphs, n, _ = spd.shape
    device = spd.device
    num_edges = edge_index.size(1)
    paths = torch.full((num_graphs * n * n, max_hops), -1, dtype=torch.long, device=device)
    if max_hops == 0 or num_edges == 0 or n == 0:
        return paths.view(num_graphs, n, n, max_hops)
    node_start = nodes_per_graph.cumsum(0) - nodes_per_graph
    local = torch.arange(node_graph.numel(), device=device) - node_start[node_graph]
    src, dst = edge_index[0], edge_index[1]
    edge_graph = node_graph[src]
    spd_src = spd[edge_graph, local[src]]  # (E, Nmax): distance from the edge's start to j
    closer = (spd[edge_graph, local[dst]] == spd_src - 1) & (spd_src > 0)
    edge_ids = torch.arange(num_edges, device=device)
    candidates = torch.where(closer, edge_ids[:, None], num_edges)
    rows = (edge_graph * n + local[src])[:, None].expand(-1, n)
    first = torch.full((num_graphs * n, n), num_edges, dtype=torch.long, device=device)
    first = first.scatter_reduce_(0, rows, candidates, reduce="amin").view(-1)
    has_hop = first < num_edges
    first = torch.where(has_hop, first, -1)
    # Walker of pair (g, i, j) sits at flat (g * n + current) * n + j; without a hop it stays.
    flat = torch.arange(num_graphs * n * n, device=device)
    graph_row = flat // (n * n) * n
    next_atom = local[dst[first.clamp(min=0)]]
    next_flat = torch.where(has_hop, (graph_row + next_atom) * n + flat % n, flat)
    walker = flat
    for hop in range(max_hops):
        paths[:, hop] = first[walker]
        walker = next_flat[walker]
    return paths.view(num_graphs, n, n, max_hops)


def _computed_flat(
    batch: Data, max_hops: int, nodes_per_graph: Tensor, edges_per_graph: Tensor
) -> tuple[Tensor, Tensor]:
    """Per-molecule relations computed on the CPU, concatenated as PyG would have."""
    nodes = nodes_per_graph.tolist()
    edges = edges_per_graph.tolist()
    edge_index = batch.edge_index.detach().cpu()
    spd_pieces = [torch.zeros(0, dtype=torch.long)]
    path_pieces = [torch.zeros(0, max_hops, dtype=torch.long)]
    node_start = edge_start = 0
    for num_nodes, num_edges in zip(nodes, edges, strict=True):
        local = edge_index[:, edge_start : edge_start + num_edges] - node_start
        spd, paths = _relations_flat(local, num_nodes, max_hops)
        spd_pieces.append(spd)
        path_pieces.append(paths)
        node_start += num_nodes
        edge_start += num_edges
    device = batch.edge_index.device
    return torch.cat(spd_pieces).to(device), torch.cat(path_pieces).to(device)


def dense_graph_relations(batch: Data, max_hops: int = 5) -> GraphRelations:
    """Padded SPD, global path edges and node mask for a PyG ``Batch`` (or a single ``Data``).

    Uses ``batch.spd``/``batch.path_edges`` when :class:`AddGraphRelations` stored them (with
    at least ``max_hops`` hops), on the batch's device. With ``batch.spd`` alone (what
    :meth:`~molssl.datamodules.records.MoleculeRecord.to_data` gives), the path edges are
    derived from it on the batch's device, vectorised over the whole batch. With neither,
    both are computed per molecule on the CPU. The result is the same in every case.

    Args:
        batch: A PyG ``Batch`` (``batch.batch`` sorted, edges grouped by molecule) or ``Data``.
        max_hops: Number of path edges kept per pair.

    Returns:
        :class:`GraphRelations` on the device of ``batch.edge_index``.

    Raises:
        ValueError: On a malformed batch or precomputed relations of the wrong size.
    """
    if max_hops < 0:
        raise ValueError(f"max_hops must be non-negative, got {max_hops}")
    device = batch.edge_index.device
    num_graphs, nodes_per_graph, edges_per_graph, node_graph = _batch_layout(batch)
    total_pairs = int((nodes_per_graph**2).sum())
    spd_flat, paths_flat = _precomputed_flat(batch, max_hops, total_pairs)
    if spd_flat is None:
        spd_flat, paths_flat = _computed_flat(batch, max_hops, nodes_per_graph, edges_per_graph)

    max_nodes = int(nodes_per_graph.max()) if num_graphs else 0
    node_mask = torch.arange(max_nodes, device=device) < nodes_per_graph[:, None]
    pair_mask = node_mask[:, :, None] & node_mask[:, None, :]
    # Row-major order of (graph, i, j) over the pair mask is exactly the order in which PyG
    # concatenated each molecule's row-major flattened N_i x N_i block.
    spd = torch.full((num_graphs, max_nodes, max_nodes), -1, dtype=torch.long, device=device)
    spd[pair_mask] = spd_flat
    if paths_flat is None:
        edge_index = batch.edge_index.detach()
        path_edges = _paths_from_dense_spd(spd, edge_index, node_graph, nodes_per_graph, max_hops)
        return GraphRelations(spd=spd, path_edges=path_edges, node_mask=node_mask)
    pair_graph = torch.repeat_interleave(
        torch.arange(num_graphs, device=device), nodes_per_graph**2, output_size=total_pairs
    )
    edge_offset = (edges_per_graph.cumsum(0) - edges_per_graph)[pair_graph]
    global_paths = torch.where(paths_flat >= 0, paths_flat + edge_offset[:, None], paths_flat)
    path_edges = torch.full(
        (num_graphs, max_nodes, max_nodes, max_hops), -1, dtype=torch.long, device=device
    )
    path_edges[pair_mask] = global_paths
    return GraphRelations(spd=spd, path_edges=path_edges, node_mask=node_mask)

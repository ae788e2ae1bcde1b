"""The two 2D atom-pair relations of MoleBLEND as per-head attention biases.

* :class:`ShortestPathBias`: a learned bias per head for each shortest-path distance (hops
  between the two atoms), capped at ``max_spd``, with its own bucket for unreachable pairs
  (disconnected salts), as Graphormer's spatial encoding.
* :class:`EdgeRelationBias`: the chemistry of the bonds between the two atoms, in one of two
  encodings (MoleBLEND's official edge relation, and Graphormer's, is ``"multi_hop"``):

  - ``"bond"`` (default): the bond joining ``i`` and ``j`` when they are bonded (its full bond
    features, see ``BOND_FEATURE_DIMS``), else a learned "no bond" class; the diagonal
    ``(i, i)`` has its own "self" class. The bias is symmetric in ``(i, j)`` and depends on
    nothing but the molecule, so it is exactly invariant to atom order.
  - ``"multi_hop"``: Graphormer's edge encoding: along one shortest path from ``i`` to ``j``
    (at most ``max_hops`` bonds) the ``k``-th bond's per-head embedding is mixed by a learned
    ``(H, H)`` matrix of hop ``k`` and the terms are averaged over the path length. Self and
    unreachable pairs get 0. Where several shortest paths tie, the one that
    ``molssl.chem.graph`` returns depends on atom order, so this encoding is direction-aware
    and only as permutation-invariant as the tie-breaking.

Graphormer's attention bias (:class:`molssl.encoders.graphormer.GraphormerAttentionBias`) is
built from these two modules plus its graph-token bias, so each encoding exists once.

Both take the dense relations of :func:`molssl.chem.graph.dense_graph_relations` and return
``(B, N, N, H)`` (pair rows, pair columns, heads); the encoder decides which pairs use them.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from molssl.encoders.embeddings import BondFeatureEmbedding

EdgeEncoding = Literal["bond", "multi_hop"]


class ShortestPathBias(nn.Module):
    """Per-head bias per shortest-path distance.

    Args:
        num_heads: Number of attention heads.
        max_spd: Distances at or beyond this many hops share the last distance bucket.
    """

    def __init__(self, num_heads: int, max_spd: int = 20) -> None:
        super().__init__()
        if max_spd < 1:
            raise ValueError(f"max_spd must be at least 1, got {max_spd}")
        self.max_spd = max_spd
        # Buckets 0..max_spd are distances; max_spd + 1 is "unreachable".
        self.embedding = nn.Embedding(max_spd + 2, num_heads)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, 0.02) for the distance table, as Graphormer initialises its biases."""
        nn.init.normal_(self.embedding.weight, mean=0.0, std=0.02)

    def spd_bucket(self, spd: Tensor) -> Tensor:
        """Map raw distances (``-1`` = unreachable or padding) to embedding rows."""
        return torch.where(spd < 0, self.max_spd + 1, spd.clamp(max=self.max_spd))

    def forward(self, spd: Tensor) -> Tensor:
        """Bias ``(B, N, N, H)`` from shortest-path distances ``(B, N, N)`` (long, ``-1`` =
        unreachable or padding; padded pairs get the unreachable bias and must be masked by the
        caller).

        On the CPU the rows are gathered with ``index_select``, whose backward (an
        ``index_add``) was 5x faster than ``nn.Embedding``'s (``embedding_dense_backward``,
        13.7 ms of a ~400 ms small UniCorn step) on these ``B N^2`` indices into a few rows; on
        CUDA the embedding's sort-based backward avoids atomics piling onto those few rows.
        """
        bucket = self.spd_bucket(spd)
        if bucket.device.type == "cpu":
            return _gather_rows(self.embedding.weight, bucket)
        return self.embedding(bucket)

    def extra_repr(self) -> str:
        return f"max_spd={self.max_spd}"


class EdgeRelationBias(nn.Module):
    """Per-head bias from the bonds between two atoms (see the module docstring).

    Args:
        num_heads: Number of attention heads ``H``.
        encoding: ``"bond"`` (direct bond or "no bond") or ``"multi_hop"`` (Graphormer).
        max_hops: Number of path bonds used by ``"multi_hop"``; must not exceed the
            ``path_edges`` length passed to :meth:`forward`.
    """

    def __init__(self, num_heads: int, encoding: EdgeEncoding = "bond", max_hops: int = 5) -> None:
        super().__init__()
        if encoding not in ("bond", "multi_hop"):
            raise ValueError(f"edge encoding must be 'bond' or 'multi_hop', got {encoding!r}")
        if max_hops < 1:
            raise ValueError(f"max_hops must be at least 1, got {max_hops}")
        self.num_heads = num_heads
        self.encoding: EdgeEncoding = encoding
        self.max_hops = max_hops if encoding == "multi_hop" else 1
        self.bond_embedding = BondFeatureEmbedding(num_heads)
        if encoding == "bond":
            self.no_bond = nn.Parameter(torch.empty(num_heads))
            self.self_pair = nn.Parameter(torch.empty(num_heads))
        else:
            self.hop_weights = nn.Parameter(torch.empty(self.max_hops, num_heads, num_heads))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, 0.02) for every table and weight, as Graphormer initialises its biases."""
        for parameter in self.parameters():
            nn.init.normal_(parameter, mean=0.0, std=0.02)

    def forward(self, edge_attr: Tensor, spd: Tensor, path_edges: Tensor) -> Tensor:
        """Bias ``(B, N, N, H)``.

        Args:
            edge_attr: ``(E, C)`` bond features of the whole batch.
            spd: ``(B, N, N)`` long shortest-path distances, ``-1`` = unreachable or padding.
            path_edges: ``(B, N, N, K)`` global edge ids along a shortest path, ``-1`` padded,
                ``K >= max_hops``.

        Returns:
            ``(B, N, N, H)``; padded pairs carry arbitrary values and must be masked by the
            caller.
        """
        if path_edges.size(-1) < self.max_hops:
            raise ValueError(
                f"path_edges has {path_edges.size(-1)} hops, the edge encoding needs "
                f"{self.max_hops}"
            )
        bond_bias = self.bond_embedding(edge_attr)
        if self.encoding == "bond":
            return self._direct_bond(bond_bias, spd, path_edges[..., 0])
        return self._multi_hop(bond_bias, spd, path_edges[..., : self.max_hops])

    def _direct_bond(self, bond_bias: Tensor, spd: Tensor, first_edge: Tensor) -> Tensor:
        # Row E is a zero dummy for the -1 of non-bonded pairs (and keeps bond-free batches valid).
        padded = torch.cat([bond_bias, bond_bias.new_zeros(1, self.num_heads)], dim=0)
        index = first_edge.masked_fill(first_edge < 0, padded.size(0) - 1)
        gathered = _gather_rows(padded, index)
        other = torch.where((spd == 0).unsqueeze(-1), self.self_pair, self.no_bond)
        return torch.where((spd == 1).unsqueeze(-1), gathered, other)

    def _multi_hop(self, bond_bias: Tensor, spd: Tensor, path_edges: Tensor) -> Tensor:
        # Mix each bond by every hop's matrix once (E x H x H per hop) instead of mixing the much
        # larger gathered (B, N, N, K, H) tensor; a zero row at index E serves the -1 padding.
        padded = torch.cat([bond_bias, bond_bias.new_zeros(1, self.num_heads)], dim=0)
        mixed = torch.einsum("eh,khg->keg", padded, self.hop_weights)
        missing = path_edges < 0
        index = path_edges.masked_fill(missing, padded.size(0) - 1)
        total = spd.new_zeros(()).to(bond_bias.dtype).expand(*spd.shape, self.num_heads)
        for hop in range(self.max_hops):
            total = total + _gather_rows(mixed[hop], index[..., hop])
        length = spd.clamp(min=1, max=self.max_hops).unsqueeze(-1).to(bond_bias.dtype)
        return total / length

    def extra_repr(self) -> str:
        return f"encoding={self.encoding!r}, max_hops={self.max_hops}"


def _gather_rows(table: Tensor, index: Tensor) -> Tensor:
    """``table[index]`` for a 2D ``table``, via ``index_select``.

    Most pairs index the same zero padding row. The backward of advanced indexing on CUDA
    (``indexing_backward_kernel``) serialises on repeated indices and took 87% of a paper-size
    UniCorn step on an H100; ``index_select``'s backward is an ``index_add`` and was ~90x faster
    there (908 ms vs 9.7 ms for one batch-256 gather, forward + backward).
    """
    flat = table.index_select(0, index.reshape(-1))
    return flat.reshape(*index.shape, table.size(-1))

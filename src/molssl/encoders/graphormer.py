"""Graphormer, the 2D encoder of UniCorn (Ying et al., "Do Transformers Really Perform Bad for
Graph Representation?", NeurIPS 2021), written from the paper and the published
``graphormer/modules/graphormer_layers.py`` in plain torch on padded PyG batches.

Structure enters a plain pre-LN transformer in two places:

* **Centrality encoding**: a learned embedding of each atom's degree is added to its input
  embedding (molecular graphs are undirected, so in- and out-degree are one and the same).
* **Attention bias** ``(B, H, 1 + N, 1 + N)`` shared by all layers:

  - *spatial encoding*: a learned per-head scalar per shortest-path distance, distances capped
    at ``max_spd``, with a separate bucket for atom pairs in different fragments (salts);
  - *edge encoding*: along one shortest path ``e_1 .. e_L`` from ``i`` to ``j`` (its first
    ``L = min(spd, max_hops)`` bonds), ``(1/L) sum_n emb(e_n) . w_n`` per head, where ``emb``
    embeds the bond features into ``H`` channels and ``w_n`` (``H x H``) is a learned weight of
    hop ``n`` (the multi-hop variant of the reference code);
  - *virtual token*: a learned graph token is prepended to every molecule; its bias to and from
    every atom is one learned per-head scalar (the paper's "distinct learnable scalar"), and its
    final state is the molecule embedding.

A final LayerNorm follows the pre-LN blocks.

Atom masking: objectives hide atoms by setting a boolean ``batch.atom_mask`` ``(N,)``. A masked
atom's feature embedding (all columns of ``x``) is replaced by one learned mask embedding, so
nothing about its element, charge, hybridisation or hydrogen count reaches the model through the
atom itself. Its degree (centrality encoding) and its bonds (edge encoding) stay visible: they
are graph structure, which the model sees through the shortest-path bias in any case.

Differences from the reference code, on purpose: distances beyond ``max_spd`` share the last
distance bucket instead of being masked out, and padding is handled with a key mask rather
than ``-inf`` entries in the bias, so that no row can turn into NaN.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.utils import degree

from molssl.chem.graph import GraphRelations, dense_graph_relations
from molssl.encoders.base import Encoder, EncoderOutput
from molssl.encoders.blend_relations import EdgeRelationBias, ShortestPathBias
from molssl.encoders.embeddings import AtomFeatureEmbedding
from molssl.encoders.padding import from_padded, to_padded
from molssl.encoders.transformer import TransformerEncoder


def init_graphormer_params(module: nn.Module) -> None:
    """Graphormer's initialisation: N(0, 0.02) weights for linear and embedding layers."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)


class GraphormerAttentionBias(nn.Module):
    """Per-head attention bias from shortest-path distances, bond paths and the graph token.

    The spatial and the edge encoding are MoleBLEND's relation biases
    (:class:`~molssl.encoders.blend_relations.ShortestPathBias` and
    :class:`~molssl.encoders.blend_relations.EdgeRelationBias` with ``encoding="multi_hop"``),
    so that both encoders share one implementation; only the graph-token bias is Graphormer's
    own (MoleBLEND keeps its token bias elsewhere).

    Args:
        num_heads: Number of attention heads ``H``.
        max_spd: Distances ``>= max_spd`` share one bucket.
        max_hops: Number of bonds of the shortest path that the edge encoding averages over.
    """

    def __init__(self, num_heads: int, max_spd: int, max_hops: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.max_spd = max_spd
        self.max_hops = max_hops
        self.spd_bias = ShortestPathBias(num_heads, max_spd)
        self.edge_bias = EdgeRelationBias(num_heads, encoding="multi_hop", max_hops=max_hops)
        self.virtual_distance = nn.Parameter(torch.empty(num_heads))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Graphormer's N(0, 0.02) for every table and weight."""
        self.spd_bias.reset_parameters()
        self.edge_bias.reset_parameters()
        nn.init.normal_(self.virtual_distance, mean=0.0, std=0.02)

    def forward(self, spd: Tensor, path_edges: Tensor, edge_attr: Tensor) -> Tensor:
        """The bias over ``[graph token, atoms]``: ``(B, H, 1 + N, 1 + N)``.

        Args:
            spd: ``(B, N, N)`` long shortest-path distances, ``-1`` = unreachable or padding.
            path_edges: ``(B, N, N, K)`` global edge ids along a shortest path, ``-1`` padded,
                ``K >= max_hops``.
            edge_attr: Bond features of the batch ``(E, C)``.
        """
        pair_bias = self.spd_bias(spd) + self.edge_bias(edge_attr, spd, path_edges)
        atom_bias = pair_bias.permute(0, 3, 1, 2)
        batch_size, _, num_nodes, _ = atom_bias.shape
        bias = atom_bias.new_zeros(batch_size, self.num_heads, num_nodes + 1, num_nodes + 1)
        bias[:, :, 1:, 1:] = atom_bias
        token = self.virtual_distance.view(1, -1, 1).to(bias.dtype)
        bias[:, :, 0, :] = bias[:, :, 0, :] + token
        bias[:, :, 1:, 0] = bias[:, :, 1:, 0] + token
        return bias


#: The batch tensors the graph relations and the attention bias are computed from.
GRAPH_KEYS = ("edge_index", "edge_attr", "batch", "spd", "path_edges")


@dataclass
class _SharedGraphBias:
    """Relations and attention bias of one pass, kept for another pass on the same graph
    inside :meth:`Graphormer.shared_inputs` (the masked and the unmasked UniCorn batch)."""

    inputs: tuple[Tensor | None, ...]
    with_grad: bool
    relations: GraphRelations
    bias: Tensor

    def serves(self, data: Batch) -> bool:
        """The same tensors (not equal ones: the same objects) and, for a pass with autograd,
        a bias computed with it."""
        pairs = zip(GRAPH_KEYS, self.inputs, strict=True)
        same = all(mine is getattr(data, key, None) for key, mine in pairs)
        return same and (self.with_grad or not torch.is_grad_enabled())


class Graphormer(Encoder):
    """Graphormer encoder of 2D molecular graphs.

    Args:
        num_layers: Transformer blocks (paper: 12).
        num_heads: Attention heads (paper: 32).
        hidden_channels: Model width ``D`` (paper: 512).
        ffn_channels: Feed-forward width; ``None`` means ``hidden_channels``.
        dropout: Dropout on the input embedding and the residual branches.
        attention_dropout: Dropout on attention weights.
        activation_dropout: Dropout after the feed-forward activation.
        max_degree: Degrees ``>= max_degree`` share one centrality bucket.
        max_spd: Shortest-path distances ``>= max_spd`` share one spatial bucket.
        max_hops: Bonds of the shortest path averaged by the edge encoding.
        mask_token: Learn a mask embedding for atoms hidden by ``batch.atom_mask``.

    Input: a PyG ``Batch`` (or one ``Data``) with ``x`` (N, 7) long, ``edge_index``,
    ``edge_attr`` (E, 4) long, ``batch``, optionally precomputed ``spd``/``path_edges``
    (:class:`molssl.chem.graph.AddGraphRelations`) and ``atom_mask`` (N,) bool.

    Output: :class:`EncoderOutput` with ``node`` (N, D), ``graph`` (B, D) (the graph token's final
    state) and ``vec=None``.
    """

    def __init__(
        self,
        num_layers: int = 12,
        num_heads: int = 32,
        hidden_channels: int = 512,
        ffn_channels: int | None = None,
        dropout: float = 0.0,
        attention_dropout: float = 0.1,
        activation_dropout: float = 0.1,
        max_degree: int = 512,
        max_spd: int = 512,
        max_hops: int = 5,
        mask_token: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("max_degree", max_degree), ("max_spd", max_spd)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if max_hops < 1:
            raise ValueError(f"max_hops must be at least 1, got {max_hops}")
        if hidden_channels % num_heads != 0:
            raise ValueError(
                f"hidden_channels ({hidden_channels}) must be divisible by num_heads ({num_heads})"
            )
        self.out_dim = hidden_channels
        self.num_heads = num_heads
        self.max_degree = max_degree
        self.max_hops = max_hops
        self.atom_embedding = AtomFeatureEmbedding(hidden_channels)
        self.degree_embedding = nn.Embedding(max_degree + 1, hidden_channels)
        self.mask_embedding = nn.Parameter(torch.empty(hidden_channels)) if mask_token else None
        self.graph_token = nn.Parameter(torch.empty(hidden_channels))
        self.attention_bias = GraphormerAttentionBias(num_heads, max_spd, max_hops)
        self.input_dropout = nn.Dropout(dropout)
        self.transformer = TransformerEncoder(
            num_layers,
            hidden_channels,
            num_heads,
            ffn_channels=ffn_channels,
            dropout=dropout,
            attention_dropout=attention_dropout,
            activation_dropout=activation_dropout,
            final_norm=True,
        )
        #: Whether :meth:`shared_inputs` shares anything (``False``: every pass computes its
        #: own relations and bias, as before; the benchmarks and tests compare the two).
        self.share_graph_bias = True
        self._sharing = False
        self._shared: _SharedGraphBias | None = None
        self.reset_parameters()

    @contextlib.contextmanager
    def shared_inputs(self) -> Iterator[None]:
        """Passes inside share the graph relations and the attention bias of a batch with the
        same graph tensors (:data:`GRAPH_KEYS`): UniCorn's masked and unmasked 2D passes differ
        only in ``atom_mask``, so the second pass skips the relations and the bias, and the
        bias's backward runs once for both."""
        sharing, self._sharing, self._shared = self._sharing, self.share_graph_bias, None
        try:
            yield
        finally:
            self._sharing, self._shared = sharing, None

    def graph_bias(self, data: Batch) -> tuple[GraphRelations, Tensor]:
        """Padded graph relations and the attention bias ``(B, H, N + 1, N + 1)`` of a batch,
        shared between passes inside :meth:`shared_inputs`."""
        if self._shared is not None and self._shared.serves(data):
            return self._shared.relations, self._shared.bias
        relations = dense_graph_relations(data, max_hops=self.max_hops)
        bias = self.attention_bias(relations.spd, relations.path_edges, data.edge_attr)
        if self._sharing:
            inputs = tuple(getattr(data, key, None) for key in GRAPH_KEYS)
            self._shared = _SharedGraphBias(inputs, torch.is_grad_enabled(), relations, bias)
        return relations, bias

    def reset_parameters(self) -> None:
        """Graphormer's initialisation (N(0, 0.02)) everywhere, LayerNorms at identity."""
        self.apply(init_graphormer_params)
        self.attention_bias.reset_parameters()
        for parameter in (self.mask_embedding, self.graph_token):
            if parameter is not None:
                nn.init.normal_(parameter, mean=0.0, std=0.02)

    def atom_inputs(self, data: Batch) -> Tensor:
        """Input embedding ``(N, D)``: features (or the mask embedding) plus degree."""
        if getattr(data, "x", None) is None:
            raise ValueError("Graphormer needs atom features batch.x (see molssl.chem.features)")
        features = self.atom_embedding(data.x)
        atom_mask = getattr(data, "atom_mask", None)
        if atom_mask is not None:
            if atom_mask.dtype != torch.bool or atom_mask.shape != (features.size(0),):
                raise ValueError(
                    f"atom_mask must be a bool tensor of shape ({features.size(0)},), got "
                    f"{atom_mask.dtype} {tuple(atom_mask.shape)}"
                )
            if self.mask_embedding is None:
                raise ValueError("batch.atom_mask is set but this Graphormer has mask_token=False")
            mask_embedding = self.mask_embedding.to(features.dtype).expand_as(features)
            features = torch.where(atom_mask.unsqueeze(-1), mask_embedding, features)
        degrees = degree(data.edge_index[1], features.size(0), dtype=torch.long)
        return features + self.degree_embedding(degrees.clamp(max=self.max_degree))

    def forward(self, data: Batch | Data) -> EncoderOutput:
        """Encode a batch of molecular graphs.

        Raises:
            ValueError: If atom or bond features are missing or malformed.
        """
        if not isinstance(data, Batch):
            data = Batch.from_data_list([data])
        if getattr(data, "edge_attr", None) is None:
            raise ValueError("Graphormer needs bond features batch.edge_attr")
        if data.edge_attr.size(0) != data.edge_index.size(1):
            raise ValueError(
                f"edge_attr has {data.edge_attr.size(0)} rows for "
                f"{data.edge_index.size(1)} edges in edge_index"
            )
        atoms = self.atom_inputs(data)
        relations, bias = self.graph_bias(data)
        num_graphs, num_nodes = relations.node_mask.shape
        padded, node_mask = to_padded(atoms, data.batch, num_graphs, max_num_nodes=num_nodes)
        token = self.graph_token.to(padded.dtype).expand(num_graphs, 1, -1)
        hidden = self.input_dropout(torch.cat([token, padded], dim=1))
        token_mask = node_mask.new_ones(num_graphs, 1)
        hidden = self.transformer(
            hidden, bias.to(hidden.dtype), torch.cat([token_mask, node_mask], dim=1)
        )
        return EncoderOutput(
            node=from_padded(hidden[:, 1:], node_mask), graph=hidden[:, 0], vec=None
        )

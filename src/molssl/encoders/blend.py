"""MoleBLEND's blended-relation transformer (Yu et al., 2023, "Unified Molecular Modeling via
Modality Blending").

One transformer over the atoms of each molecule whose attention bias for every atom pair comes
from one relation drawn among shortest-path distance (2D topology), edge (2D bonds) and 3D
distance; pre-training then asks heads to recover the relations that were not shown. See
:class:`MoleBlendTransformer`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from molssl.chem.features import ATOM_FEATURE_DIMS
from molssl.chem.graph import dense_graph_relations
from molssl.encoders.base import EncoderOutput
from molssl.encoders.blend_choice import (
    RELATION_DISTANCE,
    RELATION_EDGE,
    RELATION_SPD,
    normalize_blend_probs,
    pair_mask_from_node_mask,
    sample_blend_choice,
)
from molssl.encoders.blend_relations import EdgeEncoding, EdgeRelationBias, ShortestPathBias
from molssl.encoders.embeddings import AtomFeatureEmbedding
from molssl.encoders.gaussian import DistanceAttentionBias, unordered_pair_index
from molssl.encoders.graphormer import init_graphormer_params
from molssl.encoders.padding import to_padded
from molssl.encoders.transformer import TransformerEncoder

RelationMode = Literal["blend", "all"]

# Squared distances are floored before the square root so that a zero distance (the diagonal)
# has a finite gradient with respect to the coordinates.
_MIN_SQUARED_DISTANCE = 1e-12


class MoleBlendTransformer(nn.Module):
    """Transformer whose per-pair attention bias is one relation drawn per atom pair.

    **Relations** (choice codes in :mod:`molssl.encoders.blend_choice`):
    ``0`` shortest-path distance (:class:`~molssl.encoders.blend_relations.ShortestPathBias`),
    ``1`` edge relation (:class:`~molssl.encoders.blend_relations.EdgeRelationBias`; by default
    the bond joining the two atoms, else a "no bond" class; Graphormer's multi-hop path
    encoding with ``edge_encoding="multi_hop"``), ``2`` 3D distance through a Gaussian kernel
    with a learned affine per element pair and an MLP to per-head biases
    (:class:`~molssl.encoders.gaussian.DistanceAttentionBias`, Transformer-M style).

    **Modes.** ``relation_mode="blend"`` draws for every pair of every molecule its own relation
    with probabilities ``blend_probs`` (shortest-path, edge, distance), symmetric in ``(i, j)``;
    the pair's bias is that relation's bias only. ``relation_mode="all"`` (fine-tuning,
    inference) adds the three biases for every pair. The 3D distance enters *only* through the
    pairs that use it: the distance bias and the per-atom 3D features (the mean Gaussian
    features over an atom's 3D pairs, projected and added to its input embedding, as in
    Transformer-M) are computed from those pairs alone, so moving atoms changes nothing when no
    pair chose the distance.

    **eval().** The mode means the same in training and evaluation: in ``eval()`` a ``"blend"``
    encoder still blends, so the validation loss of blend-then-predict measures the task it
    trains on. Unless a ``generator`` is passed, evaluation draws come from a fresh CPU generator
    seeded with ``eval_seed`` at every call, so validation is reproducible from run to run
    (``eval_seed=None`` uses the global RNG instead). Switch to ``relation_mode="all"`` (an
    attribute, settable after loading a checkpoint) to encode with every relation.

    **Without coordinates** (a batch with no ``pos``): the distance relation is unavailable;
    ``"blend"`` draws among the two 2D relations with their probabilities renormalised and
    ``"all"`` adds the two 2D biases.

    **Molecule embedding.** A virtual graph token attends to all atoms (one learned bias per head
    from and to it, as in Graphormer); its final state is ``graph``.

    **Contract with blend-then-predict objectives.** The encoder does not own relation heads
    (objectives own their heads). ``extras`` holds everything needed to build pair features and
    targets, in the dense layout ``(B, Nmax, ...)``:

    * ``"node_mask"`` ``(B, Nmax)`` bool, real atoms.
    * ``"blend_choice"`` ``(B, Nmax, Nmax)`` long in ``{0, 1, 2}``, ``-1`` on padded pairs (only
      when blending; absent in ``"all"`` mode). The hidden relations of a pair are the two it did
      not show.
    * ``"node_padded"`` ``(B, Nmax, D)`` final atom states (``node`` scattered to the dense
      layout, zero on padding): the objective builds pair features from it with its own head
      (e.g. MoleBLEND's outer product of row and column projections).
    * ``"spd"`` ``(B, Nmax, Nmax)`` long shortest-path distances (``-1`` unreachable or padding)
      and ``"path_edges"`` ``(B, Nmax, Nmax, K)`` global ids into ``batch.edge_index`` /
      ``batch.edge_attr`` along one shortest path (``-1`` padded; ``path_edges[..., 0]`` at
      ``spd == 1`` is the bond of a bonded pair): the 2D targets.
    * ``"distance"`` ``(B, Nmax, Nmax)`` interatomic distances, detached, ``0`` on padding
      (only when the batch has ``pos``): the 3D target.

    Args:
        num_layers: Transformer blocks (MoleBLEND: 12).
        num_heads: Attention heads (MoleBLEND: 32).
        hidden_channels: Model width ``D`` (MoleBLEND: 768).
        ffn_channels: Feed-forward width; ``None`` means ``hidden_channels`` (MoleBLEND: 768).
        blend_probs: Probabilities of (shortest-path, edge, distance) in ``"blend"`` mode.
        relation_mode: ``"blend"`` or ``"all"`` (see above).
        num_gaussians: Gaussian kernels of the distance relation (MoleBLEND: 128).
        max_spd: Shortest-path distances at or beyond this share one bias.
        edge_encoding: ``"bond"`` or ``"multi_hop"`` (see
            :mod:`molssl.encoders.blend_relations`).
        max_hops: Path length of ``"multi_hop"`` and of the ``path_edges`` in ``extras``.
        distance_node_features: Add per-atom 3D features built from the atom's distance pairs.
        dropout: Dropout on the input embeddings and the residual branches.
        attention_dropout: Dropout on attention weights (MoleBLEND: 0.1).
        activation_dropout: Dropout after the feed-forward activation (MoleBLEND: 0.1).
        eval_seed: Seed of the evaluation-time draws (see above); ``None`` for the global RNG.
    """

    def __init__(
        self,
        num_layers: int = 12,
        num_heads: int = 32,
        hidden_channels: int = 768,
        ffn_channels: int | None = None,
        blend_probs: tuple[float, float, float] = (0.2, 0.2, 0.6),
        relation_mode: RelationMode = "blend",
        num_gaussians: int = 128,
        max_spd: int = 20,
        edge_encoding: EdgeEncoding = "bond",
        max_hops: int = 5,
        distance_node_features: bool = True,
        dropout: float = 0.0,
        attention_dropout: float = 0.1,
        activation_dropout: float = 0.1,
        eval_seed: int | None = 0,
    ) -> None:
        super().__init__()
        self.blend_probs = normalize_blend_probs(blend_probs)
        self.relation_mode = relation_mode
        self.num_heads = num_heads
        self.hidden_channels = hidden_channels
        self.out_dim = hidden_channels
        self.max_hops = max_hops
        self.eval_seed = eval_seed
        self.num_atom_types = ATOM_FEATURE_DIMS[0]

        self.atom_embedding = AtomFeatureEmbedding(hidden_channels)
        self.graph_token = nn.Parameter(torch.zeros(hidden_channels))
        self.graph_token_bias_out = nn.Parameter(torch.zeros(num_heads))
        self.graph_token_bias_in = nn.Parameter(torch.zeros(num_heads))
        self.spd_bias = ShortestPathBias(num_heads, max_spd)
        self.edge_bias = EdgeRelationBias(num_heads, edge_encoding, max_hops)
        self.distance_bias = DistanceAttentionBias(num_heads, num_gaussians, self.num_atom_types)
        self.distance_node_proj = (
            nn.Linear(num_gaussians, hidden_channels) if distance_node_features else None
        )
        self.input_dropout = nn.Dropout(dropout)
        self.transformer = TransformerEncoder(
            num_layers,
            hidden_channels,
            num_heads,
            ffn_channels=ffn_channels,
            dropout=dropout,
            attention_dropout=attention_dropout,
            activation_dropout=activation_dropout,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Graphormer/MoleBLEND initialisation: N(0, 0.02) for every linear layer, embedding
        table and learned bias, except the Gaussian basis, which starts as the identity affine
        of every element pair with spread-out kernels."""
        self.apply(init_graphormer_params)
        for parameter in (self.graph_token, self.graph_token_bias_out, self.graph_token_bias_in):
            nn.init.normal_(parameter, mean=0.0, std=0.02)
        self.edge_bias.reset_parameters()
        self.distance_bias.basis.reset_parameters()

    @property
    def relation_mode(self) -> RelationMode:
        """``"blend"`` or ``"all"``; settable, e.g. to fine-tune a blend-pre-trained encoder."""
        return self._relation_mode

    @relation_mode.setter
    def relation_mode(self, mode: RelationMode) -> None:
        if mode not in ("blend", "all"):
            raise ValueError(f"relation_mode must be 'blend' or 'all', got {mode!r}")
        self._relation_mode: RelationMode = mode

    def draw_blend_choice(
        self, node_mask: Tensor, has_pos: bool, generator: torch.Generator | None = None
    ) -> Tensor:
        """Per-pair relation choice as the forward pass draws it (see the class docstring).

        Raises:
            ValueError: If the batch has no coordinates and both 2D probabilities are zero.
        """
        probs = self.blend_probs
        if not has_pos:
            if probs[RELATION_SPD] + probs[RELATION_EDGE] <= 0.0:
                raise ValueError(
                    "the batch has no 'pos', and blend_probs gives the 2D relations "
                    f"probability 0 ({probs}): no relation is left to draw"
                )
            probs = (probs[RELATION_SPD], probs[RELATION_EDGE], 0.0)
        if generator is None and not self.training and self.eval_seed is not None:
            generator = torch.Generator().manual_seed(self.eval_seed)
        return sample_blend_choice(node_mask, probs, generator)

    def forward(
        self,
        batch: Batch | Data,
        blend_choice: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> EncoderOutput:
        """Encode a batch of molecules.

        Args:
            batch: PyG batch (or one ``Data``) with ``x``, ``edge_index``, ``edge_attr``, ``batch``
                and optionally ``pos`` (and precomputed ``spd`` / ``path_edges``, see
                :class:`molssl.chem.graph.AddGraphRelations`).
            blend_choice: A fixed ``(B, Nmax, Nmax)`` choice to use instead of a draw (blends
                even in ``"all"`` mode); must be symmetric with values in ``{0, 1, 2}`` at real
                pairs (padded entries are ignored).
            generator: Random generator for the draw.

        Returns:
            ``EncoderOutput(node (N, D), graph (B, D), vec=None, extras)``; see the class
            docstring for ``extras``.

        Raises:
            ValueError: On missing or inconsistent features, a malformed ``blend_choice`` or a
                distance choice without ``pos``.
        """
        if not isinstance(batch, Batch):
            batch = Batch.from_data_list([batch])
        self._check_features(batch)
        relations = dense_graph_relations(batch, max_hops=self.max_hops)
        spd, path_edges = relations.spd, relations.path_edges
        num_graphs, num_nodes = relations.node_mask.shape
        node, node_mask = to_padded(
            self.atom_embedding(batch.x), batch.batch, num_graphs, max_num_nodes=num_nodes
        )
        pair_mask = pair_mask_from_node_mask(node_mask)
        pos = getattr(batch, "pos", None)
        pos_padded = (
            None
            if pos is None
            else to_padded(pos, batch.batch, num_graphs, max_num_nodes=num_nodes)[0]
        )

        if blend_choice is not None:
            choice: Tensor | None = self._checked_choice(blend_choice, pair_mask, pos is not None)
        elif self.relation_mode == "blend":
            choice = self.draw_blend_choice(node_mask, pos is not None, generator)
        else:
            choice = None
        if choice is None:
            use_spd = use_edge = pair_mask
            use_distance = pair_mask if pos is not None else torch.zeros_like(pair_mask)
        else:
            use_spd = choice == RELATION_SPD
            use_edge = choice == RELATION_EDGE
            use_distance = choice == RELATION_DISTANCE

        bias = torch.where(use_spd.unsqueeze(-1), self.spd_bias(spd), 0.0)
        edge_bias = self.edge_bias(batch.edge_attr, spd, path_edges)
        bias = bias + torch.where(use_edge.unsqueeze(-1), edge_bias, 0.0)
        if pos_padded is not None and bool(use_distance.any()):
            element = to_padded(batch.x[:, 0], batch.batch, num_graphs, max_num_nodes=num_nodes)[0]
            distance_bias, atom_features = self._distance_terms(pos_padded, element, use_distance)
            bias = bias + distance_bias
            if self.distance_node_proj is not None:
                node = node + self.distance_node_proj(atom_features)

        states = self._run_transformer(node, bias, node_mask)
        node_padded = states[:, 1:]
        extras = {
            "node_mask": node_mask,
            "node_padded": node_padded,
            "spd": spd,
            "path_edges": path_edges,
        }
        if choice is not None:
            extras["blend_choice"] = choice
        if pos_padded is not None:
            with torch.no_grad():
                # Exact differences, not cdist's matrix-product shortcut: this is a target.
                distance = torch.cdist(
                    pos_padded, pos_padded, compute_mode="donot_use_mm_for_euclid_dist"
                )
            extras["distance"] = distance * pair_mask.to(distance.dtype)
        return EncoderOutput(
            node=node_padded[node_mask], graph=states[:, 0], vec=None, extras=extras
        )

    @staticmethod
    def _check_features(batch: Batch) -> None:
        """Clear errors for missing or inconsistent inputs (instead of an indexing traceback)."""
        for name in ("x", "edge_index", "edge_attr"):
            if getattr(batch, name, None) is None:
                raise ValueError(f"MoleBlendTransformer needs batch.{name} (molssl.chem.features)")
        if batch.edge_attr.size(0) != batch.edge_index.size(1):
            raise ValueError(
                f"edge_attr has {batch.edge_attr.size(0)} rows for "
                f"{batch.edge_index.size(1)} edges in edge_index"
            )
        pos = getattr(batch, "pos", None)
        if pos is not None and pos.shape != (batch.x.size(0), 3):
            raise ValueError(f"pos must have shape ({batch.x.size(0)}, 3), got {tuple(pos.shape)}")

    def _checked_choice(self, choice: Tensor, pair_mask: Tensor, has_pos: bool) -> Tensor:
        if choice.shape != pair_mask.shape:
            raise ValueError(
                f"blend_choice must have shape {tuple(pair_mask.shape)} (B, Nmax, Nmax), got "
                f"{tuple(choice.shape)}"
            )
        choice = choice.to(device=pair_mask.device, dtype=torch.long)
        real = choice[pair_mask]
        if bool(((real < RELATION_SPD) | (real > RELATION_DISTANCE)).any()):
            raise ValueError("blend_choice must be 0, 1 or 2 at every pair of real atoms")
        if not torch.equal(
            choice.masked_fill(~pair_mask, -1), choice.transpose(1, 2).masked_fill(~pair_mask, -1)
        ):
            raise ValueError("blend_choice must be symmetric: choice[b, i, j] == choice[b, j, i]")
        if not has_pos and bool((real == RELATION_DISTANCE).any()):
            raise ValueError("blend_choice picks the 3D distance, but the batch has no 'pos'")
        return choice.masked_fill(~pair_mask, -1)

    def _distance_terms(
        self, pos: Tensor, element: Tensor, use_distance: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Distance bias ``(B, N, N, H)`` and per-atom mean Gaussian features ``(B, N, K)``,
        computed only at the pairs of ``use_distance`` (symmetric, so only ``i <= j`` are
        evaluated and mirrored)."""
        num_nodes = pos.size(1)
        upper = torch.ones(num_nodes, num_nodes, dtype=torch.bool, device=pos.device).triu()
        graph_idx, row, col = (use_distance & upper).nonzero(as_tuple=True)
        diff = pos[graph_idx, row] - pos[graph_idx, col]
        dist = diff.pow(2).sum(-1).clamp(min=_MIN_SQUARED_DISTANCE).sqrt()
        types = unordered_pair_index(
            element[graph_idx, row], element[graph_idx, col], self.num_atom_types
        )
        pair_bias, features = self.distance_bias(dist, types)
        shape = (*use_distance.shape, self.num_heads)
        bias = pair_bias.new_zeros(shape).index_put((graph_idx, row, col), pair_bias)
        bias = bias.index_put((graph_idx, col, row), pair_bias)

        # Per-atom 3D features: mean over the atom's distance pairs to other atoms (not itself).
        off_diagonal = row != col
        features = features[off_diagonal]
        g, r, c = graph_idx[off_diagonal], row[off_diagonal], col[off_diagonal]
        summed = features.new_zeros(*use_distance.shape[:2], features.size(-1))
        summed = summed.index_put((g, r), features, accumulate=True)
        summed = summed.index_put((g, c), features, accumulate=True)
        count = summed.new_zeros(use_distance.shape[:2])
        ones = count.new_ones(g.shape)
        count = count.index_put((g, r), ones, accumulate=True).index_put(
            (g, c), ones, accumulate=True
        )
        return bias, summed / count.clamp(min=1.0).unsqueeze(-1)

    def _run_transformer(self, node: Tensor, pair_bias: Tensor, node_mask: Tensor) -> Tensor:
        """Prepend the graph token and run the stack; returns ``(B, 1 + Nmax, D)``."""
        num_graphs = node.size(0)
        token = self.graph_token.expand(num_graphs, 1, -1)
        tokens = self.input_dropout(torch.cat([token, node], dim=1))
        full_mask = torch.cat([node_mask.new_ones(num_graphs, 1), node_mask], dim=1)
        bias = pair_bias.permute(0, 3, 1, 2)
        # Graph token row (token attending to atoms) and column (atoms attending to it).
        bias = nn.functional.pad(bias, (1, 0, 1, 0))
        bias[:, :, 0, :] = self.graph_token_bias_out.view(1, -1, 1)
        bias[:, :, 1:, 0] = self.graph_token_bias_in.view(1, -1, 1)
        return self.transformer(tokens, bias, full_mask)

    def extra_repr(self) -> str:
        return f"relation_mode={self.relation_mode!r}, blend_probs={self.blend_probs}"

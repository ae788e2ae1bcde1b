"""MoleBLEND's blended-relation transformer (Yu et al., ICLR 2024, "Multimodal Molecular
Pretraining via Modality Blending"; official code ``YudiZh/MoleBlend``).

One transformer over the atoms of each molecule whose attention bias for every atom pair comes
from one relation drawn among shortest-path distance (2D topology), the bonds along a shortest
path (2D chemistry) and 3D distance, and whose atoms each get a 2D (degree) or a 3D (distance)
input feature; pre-training then asks heads to recover what was not shown. See
:class:`MoleBlendTransformer`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.utils import degree

from molssl.chem.features import ATOM_FEATURE_DIMS
from molssl.chem.graph import dense_graph_relations
from molssl.encoders.base import Encoder, EncoderOutput
from molssl.encoders.blend_choice import (
    ATOM_2D,
    ATOM_3D,
    RELATION_DISTANCE,
    RELATION_EDGE,
    RELATION_SPD,
    fixed_choice,
    normalize_atom_probs,
    normalize_blend_probs,
    pair_mask_from_node_mask,
    sample_atom_choice,
    sample_blend_choice,
)
from molssl.encoders.blend_distance import DistanceRelation
from molssl.encoders.blend_relations import EdgeEncoding, EdgeRelationBias, ShortestPathBias
from molssl.encoders.embeddings import AtomFeatureEmbedding
from molssl.encoders.graphormer import init_graphormer_params
from molssl.encoders.padding import to_padded
from molssl.encoders.transformer import TransformerEncoder

RelationMode = Literal["blend", "all"]
BlendDraw = Literal["molecule", "batch"]


class MoleBlendTransformer(Encoder):
    """Transformer whose per-pair attention bias is one relation drawn per atom pair.

    **Relations** (choice codes in :mod:`molssl.encoders.blend_choice`):
    ``0`` shortest-path distance (:class:`~molssl.encoders.blend_relations.ShortestPathBias`),
    ``1`` edge relation (:class:`~molssl.encoders.blend_relations.EdgeRelationBias`; by default
    the official multi-hop encoding of the bonds along one shortest path, Graphormer's;
    ``edge_encoding="bond"`` sees the direct bond only), ``2`` 3D distance through a Gaussian
    kernel (:class:`~molssl.encoders.blend_distance.DistanceRelation`, Transformer-M style).

    **Atom features.** Every atom's input is its feature embedding plus either its degree
    embedding (2D) or its 3D feature (its Gaussian kernel features summed over the molecule,
    see :mod:`molssl.encoders.blend_distance`), as the official ``blend_atom_feature``.

    **Modes.** ``relation_mode="blend"`` draws the relation of every pair with probabilities
    ``blend_probs`` (shortest-path, edge, distance) and the input of every atom with
    probabilities ``atom_blend_probs`` (degree, 3D); the pair's bias is its relation's bias
    only. ``blend_draw="molecule"`` (default) draws per molecule and symmetrically in
    ``(i, j)``; ``"batch"`` is the official draw, one asymmetric ``(N, N)`` choice shared by the
    batch. ``relation_mode="all"`` (fine-tuning, inference) adds the three biases for every
    pair and both atom features for every atom.

    **2D only.** ``use_3d=False`` ignores ``batch.pos`` (MoleBLEND fine-tunes MoleculeNet on
    the 2D graph); so does a batch without ``pos``. Then ``"blend"`` draws among the two 2D
    relations with their probabilities renormalised and every atom gets its degree, and
    ``"all"`` adds the two 2D biases.

    **eval().** The mode means the same in training and evaluation: in ``eval()`` a ``"blend"``
    encoder still blends, so the validation loss of blend-then-predict measures the task it
    trains on. Unless a ``generator`` is passed, evaluation draws come from a fresh CPU generator
    seeded with ``eval_seed`` at every call, so validation is reproducible from run to run
    (``eval_seed=None`` uses the global RNG instead). Switch to ``relation_mode="all"`` (an
    attribute, settable after loading a checkpoint) to encode with every relation.

    **Molecule embedding.** A virtual graph token attends to all atoms (one learned bias per head
    from and to it, as in Graphormer); its final state is ``graph``.

    **Contract with blend-then-predict objectives.** The encoder does not own prediction heads
    (objectives own their heads). ``extras`` holds, in the dense layout ``(B, Nmax, ...)``:

    * ``"node_mask"`` ``(B, Nmax)`` bool, real atoms.
    * ``"node_padded"`` ``(B, Nmax, D)`` final atom states (zero on padding).
    * ``"blend_choice"`` ``(B, Nmax, Nmax)`` long in ``{0, 1, 2}``, ``-1`` on padded pairs, and
      ``"atom_choice"`` ``(B, Nmax)`` long in ``{0: degree, 1: 3D}``, ``-1`` on padding (only
      when blending; absent in ``"all"`` mode).
    * ``"spd"`` ``(B, Nmax, Nmax)`` long shortest-path distances (``-1`` unreachable or padding)
      and ``"path_edges"`` ``(B, Nmax, Nmax, K)`` global ids into ``batch.edge_index`` /
      ``batch.edge_attr`` along one shortest path (``-1`` padded): the 2D targets.

    Args:
        num_layers: Transformer blocks (MoleBLEND: 12).
        num_heads: Attention heads (MoleBLEND: 32).
        hidden_channels: Model width ``D`` (MoleBLEND: 768).
        ffn_channels: Feed-forward width; ``None`` means ``hidden_channels`` (MoleBLEND: 768).
        blend_probs: Probabilities of (shortest-path, edge, distance) in ``"blend"`` mode
            (MoleBLEND: 0.2, 0.2, 0.6).
        relation_mode: ``"blend"`` or ``"all"`` (see above).
        blend_draw: ``"molecule"`` or ``"batch"`` (see above).
        atom_blend_probs: Probabilities of (degree, 3D) atom features when blending
            (MoleBLEND: 0.4, 0.6).
        use_3d: Read ``batch.pos`` when present.
        num_gaussians: Gaussian kernels of the distance relation (MoleBLEND: 128).
        max_spd: Shortest-path distances at or beyond this share one bias (510 with the
            unreachable bucket gives the official 512-row table).
        edge_encoding: ``"multi_hop"`` or ``"bond"`` (see
            :mod:`molssl.encoders.blend_relations`).
        max_hops: Path length of ``"multi_hop"`` and of the ``path_edges`` in ``extras``
            (MoleBLEND: 5).
        max_degree: Degrees at or beyond this share one embedding.
        embedding_norm: LayerNorm on the input tokens (the official ``emb_layer_norm``).
        norm_first: Pre-LN blocks and a final LayerNorm (``True``) or, as officially, post-LN
            blocks ``LN(x + f(x))`` without a final LayerNorm (``False``;
            ``moleblend_encoder_layer.py`` with ``sandwich_ln`` off); see
            :class:`~molssl.encoders.transformer.TransformerLayer`.
        dropout: Dropout on the input embeddings and the residual branches.
        attention_dropout: Dropout on attention weights (MoleBLEND: 0.1).
        activation_dropout: Dropout after the feed-forward activation (MoleBLEND: 0.1).
        drop_path: Stochastic depth of the last block, growing linearly from 0 over the
            blocks (:class:`~molssl.encoders.transformer.TransformerEncoder`; MoleBLEND
            pre-training: 0.1).
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
        blend_draw: BlendDraw = "molecule",
        atom_blend_probs: tuple[float, float] = (0.4, 0.6),
        use_3d: bool = True,
        num_gaussians: int = 128,
        max_spd: int = 510,
        edge_encoding: EdgeEncoding = "multi_hop",
        max_hops: int = 5,
        max_degree: int = 512,
        embedding_norm: bool = True,
        norm_first: bool = False,
        dropout: float = 0.0,
        attention_dropout: float = 0.1,
        activation_dropout: float = 0.1,
        drop_path: float = 0.0,
        eval_seed: int | None = 0,
    ) -> None:
        super().__init__()
        if blend_draw not in ("molecule", "batch"):
            raise ValueError(f"blend_draw must be 'molecule' or 'batch', got {blend_draw!r}")
        if max_degree < 1:
            raise ValueError(f"max_degree must be at least 1, got {max_degree}")
        self.blend_probs = normalize_blend_probs(blend_probs)
        self.atom_blend_probs = normalize_atom_probs(atom_blend_probs)
        self.relation_mode = relation_mode
        self.blend_draw: BlendDraw = blend_draw
        self.use_3d = bool(use_3d)
        self.num_heads = num_heads
        self.hidden_channels = hidden_channels
        self.out_dim = hidden_channels
        self.max_hops = max_hops
        self.max_degree = max_degree
        self.eval_seed = eval_seed
        self.num_atom_types = ATOM_FEATURE_DIMS[0]

        self.atom_embedding = AtomFeatureEmbedding(hidden_channels)
        self.degree_embedding = nn.Embedding(max_degree + 1, hidden_channels)
        self.graph_token = nn.Parameter(torch.zeros(hidden_channels))
        self.graph_token_bias_out = nn.Parameter(torch.zeros(num_heads))
        self.graph_token_bias_in = nn.Parameter(torch.zeros(num_heads))
        self.spd_bias = ShortestPathBias(num_heads, max_spd)
        self.edge_bias = EdgeRelationBias(num_heads, edge_encoding, max_hops)
        self.distance = DistanceRelation(
            num_heads, num_gaussians, self.num_atom_types, hidden_channels
        )
        self.embedding_norm: nn.Module = (
            nn.LayerNorm(hidden_channels) if embedding_norm else nn.Identity()
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
            drop_path=drop_path,
            norm_first=norm_first,
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
        self.distance.reset_parameters()

    @property
    def relation_mode(self) -> RelationMode:
        """``"blend"`` or ``"all"``; settable, e.g. to fine-tune a blend-pre-trained encoder."""
        return self._relation_mode

    @relation_mode.setter
    def relation_mode(self, mode: RelationMode) -> None:
        if mode not in ("blend", "all"):
            raise ValueError(f"relation_mode must be 'blend' or 'all', got {mode!r}")
        self._relation_mode: RelationMode = mode

    # -- draws ---------------------------------------------------------------------------------

    def draw_generator(self, generator: torch.Generator | None = None) -> torch.Generator | None:
        """The generator of this call's draws: ``generator``, else in ``eval()`` a fresh one
        seeded with ``eval_seed``, else ``None`` (the global RNG)."""
        if generator is None and not self.training and self.eval_seed is not None:
            return torch.Generator().manual_seed(self.eval_seed)
        return generator

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
                    "the batch has no 'pos' (or use_3d is off), and blend_probs gives the 2D "
                    f"relations probability 0 ({probs}): no relation is left to draw"
                )
            probs = (probs[RELATION_SPD], probs[RELATION_EDGE], 0.0)
        per_molecule = self.blend_draw == "molecule"
        return sample_blend_choice(node_mask, probs, generator, per_molecule=per_molecule)

    def draw_atom_choice(
        self, node_mask: Tensor, has_pos: bool, generator: torch.Generator | None = None
    ) -> Tensor:
        """Per-atom feature choice (degree or 3D) as the forward pass draws it."""
        p_3d = self.atom_blend_probs[ATOM_3D] if has_pos else 0.0
        return sample_atom_choice(node_mask, p_3d, generator)

    # -- forward -------------------------------------------------------------------------------

    def forward(
        self,
        batch: Batch | Data,
        blend_choice: Tensor | None = None,
        atom_choice: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> EncoderOutput:
        """Encode a batch of molecules.

        Args:
            batch: PyG batch (or one ``Data``) with ``x``, ``edge_index``, ``edge_attr``, ``batch``
                and optionally ``pos`` (and precomputed ``spd`` / ``path_edges``, see
                :class:`molssl.chem.graph.AddGraphRelations`).
            blend_choice: A fixed ``(B, Nmax, Nmax)`` pair choice to use instead of a draw
                (blends even in ``"all"`` mode); values in ``{0, 1, 2}`` at real pairs,
                symmetric unless ``blend_draw="batch"`` (padded entries are ignored).
            atom_choice: A fixed ``(B, Nmax)`` atom choice in ``{0, 1}`` at real atoms (blends
                even in ``"all"`` mode).
            generator: Random generator for the draws (pairs first, then atoms).

        Returns:
            ``EncoderOutput(node (N, D), graph (B, D), vec=None, extras)``; see the class
            docstring for ``extras``.

        Raises:
            ValueError: On missing or inconsistent features, a malformed fixed choice, or a
                3D choice without usable ``pos``.
        """
        if not isinstance(batch, Batch):
            batch = Batch.from_data_list([batch])
        self._check_features(batch)
        relations = dense_graph_relations(batch, max_hops=self.max_hops)
        spd, path_edges, node_mask = relations.spd, relations.path_edges, relations.node_mask
        num_graphs, num_nodes = node_mask.shape
        pair_mask = pair_mask_from_node_mask(node_mask)
        pos = getattr(batch, "pos", None) if self.use_3d else None
        has_pos = pos is not None

        def padded(values: Tensor) -> Tensor:
            return to_padded(values, batch.batch, num_graphs, max_num_nodes=num_nodes)[0]

        extras: dict[str, Tensor] = {}
        if blend_choice is not None or atom_choice is not None or self.relation_mode == "blend":
            generator = self.draw_generator(generator)
            if blend_choice is None:
                choice = self.draw_blend_choice(node_mask, has_pos, generator)
            else:
                choice = self._checked_choice(blend_choice, pair_mask, has_pos)
            if atom_choice is None:
                atoms = self.draw_atom_choice(node_mask, has_pos, generator)
            else:
                atoms = self._checked_atom_choice(atom_choice, node_mask, has_pos)
            extras = {"blend_choice": choice, "atom_choice": atoms}
            use_spd, use_edge = choice == RELATION_SPD, choice == RELATION_EDGE
            use_distance = choice == RELATION_DISTANCE
            use_degree, use_atom_3d = atoms == ATOM_2D, atoms == ATOM_3D
        else:
            use_spd = use_edge = pair_mask
            use_degree = node_mask
            use_distance = pair_mask if has_pos else torch.zeros_like(pair_mask)
            use_atom_3d = node_mask if has_pos else torch.zeros_like(node_mask)

        degrees = degree(batch.edge_index[1], batch.x.size(0), dtype=torch.long)
        degree_features = self.degree_embedding(degrees.clamp(max=self.max_degree))
        node = padded(self.atom_embedding(batch.x))
        node = node + torch.where(use_degree.unsqueeze(-1), padded(degree_features), 0.0)
        bias = torch.where(use_spd.unsqueeze(-1), self.spd_bias(spd), 0.0)
        edge_bias = self.edge_bias(batch.edge_attr, spd, path_edges)
        bias = bias + torch.where(use_edge.unsqueeze(-1), edge_bias, 0.0)
        if has_pos and bool(use_distance.any() | use_atom_3d.any()):
            element = padded(batch.x[:, 0])
            distance_bias, atom_3d = self.distance(padded(pos), element, node_mask)
            bias = bias + torch.where(use_distance.unsqueeze(-1), distance_bias, 0.0)
            node = node + torch.where(use_atom_3d.unsqueeze(-1), atom_3d, 0.0)

        states = self._run_transformer(node, bias, node_mask)
        node_padded = states[:, 1:]
        extras.update(node_mask=node_mask, node_padded=node_padded, spd=spd, path_edges=path_edges)
        return EncoderOutput(
            node=node_padded[node_mask], graph=states[:, 0], vec=None, extras=extras
        )

    def _check_features(self, batch: Batch) -> None:
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
        if self.use_3d and pos is not None and pos.shape != (batch.x.size(0), 3):
            raise ValueError(f"pos must have shape ({batch.x.size(0)}, 3), got {tuple(pos.shape)}")

    def _checked_choice(self, choice: Tensor, pair_mask: Tensor, has_pos: bool) -> Tensor:
        choice, real = fixed_choice(choice, pair_mask, "blend_choice", "(B, Nmax, Nmax)")
        if bool(((real < RELATION_SPD) | (real > RELATION_DISTANCE)).any()):
            raise ValueError("blend_choice must be 0, 1 or 2 at every pair of real atoms")
        if self.blend_draw == "molecule" and not torch.equal(choice, choice.transpose(1, 2)):
            raise ValueError(
                "blend_choice must be symmetric: choice[b, i, j] == choice[b, j, i] "
                "(or set blend_draw='batch')"
            )
        if not has_pos and bool((real == RELATION_DISTANCE).any()):
            raise ValueError(
                "blend_choice picks the 3D distance, but the batch has no 'pos' (or use_3d is off)"
            )
        return choice

    @staticmethod
    def _checked_atom_choice(choice: Tensor, node_mask: Tensor, has_pos: bool) -> Tensor:
        choice, real = fixed_choice(choice, node_mask, "atom_choice", "(B, Nmax)")
        if bool(((real != ATOM_2D) & (real != ATOM_3D)).any()):
            raise ValueError("atom_choice must be 0 (degree) or 1 (3D) at every real atom")
        if not has_pos and bool((real == ATOM_3D).any()):
            raise ValueError(
                "atom_choice picks 3D features, but the batch has no 'pos' (or use_3d is off)"
            )
        return choice

    def _run_transformer(self, node: Tensor, pair_bias: Tensor, node_mask: Tensor) -> Tensor:
        """Prepend the graph token and run the stack; returns ``(B, 1 + Nmax, D)``."""
        num_graphs = node.size(0)
        token = self.graph_token.expand(num_graphs, 1, -1)
        tokens = self.input_dropout(self.embedding_norm(torch.cat([token, node], dim=1)))
        full_mask = torch.cat([node_mask.new_ones(num_graphs, 1), node_mask], dim=1)
        bias = pair_bias.permute(0, 3, 1, 2)
        # Graph token row (token attending to atoms) and column (atoms attending to it).
        bias = nn.functional.pad(bias, (1, 0, 1, 0))
        bias[:, :, 0, :] = self.graph_token_bias_out.view(1, -1, 1)
        bias[:, :, 1:, 0] = self.graph_token_bias_in.view(1, -1, 1)
        return self.transformer(tokens, bias, full_mask)

    def extra_repr(self) -> str:
        return (
            f"relation_mode={self.relation_mode!r}, blend_draw={self.blend_draw!r}, "
            f"blend_probs={self.blend_probs}, atom_blend_probs={self.atom_blend_probs}, "
            f"use_3d={self.use_3d}"
        )

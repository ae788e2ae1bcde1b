"""MoleBLEND's blend-then-predict objective (Yu et al., ICLR 2024), with its 3D denoising
regulariser, as the official ``MoleBlend/criterions/graph_prediction.py`` computes it.

The blended encoder (:class:`~molssl.encoders.blend.MoleBlendTransformer`) shows every atom pair
one relation (shortest-path distance, bonds along a path, or 3D distance) and every atom one
input feature (degree or 3D). From its final atom states this objective predicts, for ordered
atom pairs, all three relations; and, as a regulariser, the direction of the coordinate noise
at the atoms whose input came from 3D. See :class:`BlendPredict`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Batch

from molssl.chem.features import BOND_FEATURE_DIMS
from molssl.encoders.base import EncoderOutput
from molssl.encoders.blend_choice import (
    ATOM_3D,
    RELATION_DISTANCE,
    RELATION_EDGE,
    RELATION_SPD,
    pair_mask_from_node_mask,
)
from molssl.encoders.padding import to_padded
from molssl.objectives.base import Objective, ObjectiveResult, View
from molssl.objectives.lazy_head import LazyHead
from molssl.objectives.pair_heads import (
    OuterProductPairHead,
    SymmetricPairFeatures,
    pairwise_noise,
    scalar_pair_head,
)
from molssl.objectives.views import CoordNoise

__all__ = ["NUM_EDGE_CLASSES", "RELATION_KEYS", "BlendPredict", "edge_feature_class"]

#: Classes of a bond: every combination of its feature columns (``BOND_FEATURE_DIMS``), as the
#: official target joins all bond features of a hop into one class.
NUM_EDGE_CLASSES = math.prod(BOND_FEATURE_DIMS)
#: Metric prefix of each relation, indexed by its blend-choice code.
RELATION_KEYS: dict[int, str] = {
    RELATION_SPD: "spd",
    RELATION_EDGE: "edge",
    RELATION_DISTANCE: "pos",
}
_REQUIRED_EXTRAS = ("node_padded", "node_mask", "spd", "path_edges")


def edge_feature_class(edge_attr: Tensor) -> Tensor:
    """Joint class of each bond's feature columns, ``(E, C) -> (E,)``: the mixed-radix number
    of its columns in order, e.g. ``((type * 2 + conjugated) * 2 + in_ring) * 7 + stereo``
    (the official ``6 * f0 + 2 * f1 + f2`` over OGB's three bond features)."""
    index = torch.zeros_like(edge_attr[:, 0])
    for column, size in enumerate(BOND_FEATURE_DIMS):
        index = index * size + edge_attr[:, column]
    return index


class BlendPredict(Objective):
    """Predict the atom-pair relations from the blended encoder, plus 3D denoising.

    **Pairs.** Every ordered pair ``(i, j)`` of two different real atoms of one molecule is an
    example, as officially (``(j, i)`` is another: the heads are
    :class:`~molssl.objectives.pair_heads.OuterProductPairHead`). By default every pair is
    supervised for every relation, the official behaviour, which also asks the model to repeat
    what it was shown; ``hidden_pairs_only=True`` supervises a relation only at the pairs whose
    blend choice is another relation (the pairs it was hidden from).

    **Targets and losses** (official ``compute_*_blending_loss``):

    * shortest path: ``spd_classes`` classes, class ``k - 1`` for ``k`` bonds and the last
      class for every ``k >= spd_classes`` (official: 11 classes, 11-19 hops merged); pairs in
      different fragments (salts) are left out. Cross-entropy, mean over the batch's pairs.
    * edge: for each of the first ``edge_hops`` bonds along the encoder's shortest path from
      ``i`` to ``j``, the joint class of the bond's features (:func:`edge_feature_class`).
      Cross-entropy, mean over the batch's (pair, hop) entries.
    * 3D: the relative position ``r_j - r_i`` of the **clean** conformer ``pos - coord_noise``,
      predicted as a 3-vector; loss ``1 - cos`` between prediction and target, averaged over
      each molecule's pairs, then over molecules. (As officially, the 3-vector is read from
      rotation-invariant pair features, so only the part of the direction that the
      conformer's frame makes predictable can be learnt.)

    **Denoising regulariser.** The view :class:`~molssl.objectives.views.CoordNoise` of
    ``noise_sigma`` adds Gaussian noise to the conformer. The prediction is
    ``e_i = sum_j w_ij (r_i - r_j) / |r_i - r_j|`` over all other atoms ``j``, at the noisy
    positions the encoder saw, with ``w_ij = w_ji`` an MLP on a symmetric pair representation:
    equivariant by construction. Loss ``1 - cos(e_i, noise_i)``, mean over the atoms whose
    input feature came from 3D (the encoder's ``atom_choice``; every atom when it did not
    blend), as the official regulariser.

    ``loss = spd_weight * spd + edge_weight * edge + pos_weight * pos
    + denoise_weight * denoise``; the official scripts use 0.1, 0.1, 0.5 and 6
    (``shells/pretrain-moleblend-run.sh``).

    Args:
        weight: Multiplier of the loss in the total.
        hidden_pairs_only: Supervise each relation only where it was hidden (see above).
        spd_classes: Shortest-path classes (official ``spd_num_classes``: 11).
        edge_hops: Bonds of the path whose features are predicted (official: 5); at most the
            encoder's ``max_hops``.
        spd_weight, edge_weight, pos_weight, denoise_weight: Weights of the four terms.
        noise_sigma: Standard deviation of the coordinate noise in Å (official: 0.2).
        name: Name in logged metrics (default ``blend_predict``).
        hidden_channels: Width of the encoder's atom states; ``None`` reads it from the first
            batch.
        pair_channels: Width of each projection of the relation heads (official: 32).
        pos_channels: Hidden width of the 3D head (official: 256).
        noise_channels: Width of the pair representation of the denoising weights.

    Metrics: ``spd_loss``, ``edge_loss``, ``pos_loss``, ``denoise_loss``; ``spd_acc`` and
    ``edge_acc`` (accuracy over the supervised entries; left out of a batch without any);
    ``spd_pairs``, ``edge_pairs``, ``pos_pairs`` (supervised ordered pairs per molecule) and
    ``denoise_atoms`` (supervised atoms per molecule).
    """

    requires = ("blend",)

    def __init__(
        self,
        weight: float = 1.0,
        hidden_pairs_only: bool = False,
        spd_classes: int = 11,
        edge_hops: int = 5,
        spd_weight: float = 0.1,
        edge_weight: float = 0.1,
        pos_weight: float = 0.5,
        denoise_weight: float = 6.0,
        noise_sigma: float = 0.2,
        name: str | None = None,
        hidden_channels: int | None = None,
        pair_channels: int = 32,
        pos_channels: int = 256,
        noise_channels: int = 128,
    ) -> None:
        super().__init__(weight=weight, name=name)
        if spd_classes < 1:
            raise ValueError(f"spd_classes must be at least 1, got {spd_classes}")
        if edge_hops < 1:
            raise ValueError(f"edge_hops must be at least 1, got {edge_hops}")
        weights = {
            "spd_weight": spd_weight,
            "edge_weight": edge_weight,
            "pos_weight": pos_weight,
            "denoise_weight": denoise_weight,
        }
        for key, value in weights.items():
            if not (value >= 0 and value < float("inf")):
                raise ValueError(f"{key} must be a finite number >= 0, got {value}")
        if min(pair_channels, pos_channels, noise_channels) < 1:
            raise ValueError("pair_channels, pos_channels and noise_channels must be positive")
        self.hidden_pairs_only = bool(hidden_pairs_only)
        self.spd_classes = int(spd_classes)
        self.edge_hops = int(edge_hops)
        self.relation_weights = {
            RELATION_SPD: float(spd_weight),
            RELATION_EDGE: float(edge_weight),
            RELATION_DISTANCE: float(pos_weight),
        }
        self.denoise_weight = float(denoise_weight)
        self.noise_view = CoordNoise(noise_sigma)
        self.noise_sigma = self.noise_view.sigma

        def pair_head(out_dim: int, inner_dim: int | None = None) -> LazyHead:
            factory = functools.partial(
                OuterProductPairHead,
                out_dim=out_dim,
                pair_channels=pair_channels,
                inner_dim=inner_dim,
            )
            return LazyHead(factory, in_dim=hidden_channels)

        self.spd_head = pair_head(self.spd_classes)
        self.edge_head = pair_head(self.edge_hops * NUM_EDGE_CLASSES)
        self.pos_head = pair_head(3, inner_dim=pos_channels)
        self.pair_features = LazyHead(
            functools.partial(SymmetricPairFeatures, out_dim=noise_channels), in_dim=hidden_channels
        )
        self.noise_head = scalar_pair_head(noise_channels)

    def views(self) -> list[View]:
        """Gaussian coordinate noise of ``noise_sigma`` (shared with an equal CoordDenoise)."""
        return [self.noise_view]

    # -- targets and pair selection ----------------------------------------------------------

    def spd_class(self, spd: Tensor) -> Tensor:
        """Shortest-path class of reachable pairs of different atoms (``spd >= 1``)."""
        return spd.clamp(min=1, max=self.spd_classes) - 1

    def relation_pair_masks(self, extras: Mapping[str, Tensor]) -> dict[int, Tensor]:
        """Ordered pairs supervised for each relation, ``(B, Nmax, Nmax)`` bool each.

        ``True`` at pairs of two different real atoms (reachable ones for the two 2D
        relations), and, with ``hidden_pairs_only``, whose blend choice is not that relation.

        Raises:
            ValueError: If ``hidden_pairs_only`` and the encoder did not blend (no
                ``blend_choice``, e.g. ``relation_mode="all"``): no relation was hidden.
        """
        node_mask = extras["node_mask"]
        size = node_mask.size(1)
        pairs = pair_mask_from_node_mask(node_mask)
        pairs = pairs & ~torch.eye(size, dtype=torch.bool, device=node_mask.device)
        connected = pairs & (extras["spd"] > 0)
        masks = {RELATION_SPD: connected, RELATION_EDGE: connected, RELATION_DISTANCE: pairs}
        if not self.hidden_pairs_only:
            return masks
        choice = self._blend_choice(extras)
        return {relation: mask & (choice != relation) for relation, mask in masks.items()}

    def denoise_atoms(self, extras: Mapping[str, Tensor]) -> Tensor:
        """``(B, Nmax)`` bool: the atoms the denoising loss reads (those given a 3D feature)."""
        atom_choice = extras.get("atom_choice")
        if atom_choice is None:
            return extras["node_mask"]
        return atom_choice == ATOM_3D

    def _blend_choice(self, extras: Mapping[str, Tensor]) -> Tensor:
        choice = extras.get("blend_choice")
        if choice is None:
            raise ValueError(
                f"objective {self.name!r}: hidden_pairs_only needs the encoder's blend_choice, "
                "but the blended encoder did not blend (relation_mode='all'?); set "
                "relation_mode='blend' or hidden_pairs_only=False"
            )
        return choice

    # -- predictions -------------------------------------------------------------------------

    def predict_noise(self, batch: Batch, output: EncoderOutput) -> Tensor:
        """The denoising prediction ``(N, 3)`` in ``batch`` order (its scale is free: the loss
        reads its direction)."""
        extras = self._checked_extras(output)
        pos = self._padded(batch, "pos", extras["node_mask"])
        return self._noise(pos, extras)[extras["node_mask"]]

    def _noise(self, pos: Tensor, extras: Mapping[str, Tensor]) -> Tensor:
        node_mask = extras["node_mask"]
        size = node_mask.size(1)
        upper = torch.ones(size, size, dtype=torch.bool, device=node_mask.device).triu(1)
        graph_idx, first, second = (pair_mask_from_node_mask(node_mask) & upper).nonzero(
            as_tuple=True
        )
        pair = self.pair_features(extras["node_padded"], graph_idx, first, second)
        return pairwise_noise(pos, self.noise_head(pair), graph_idx, first, second)

    # -- loss --------------------------------------------------------------------------------

    def loss(self, batch: Batch, outputs: Mapping[str, EncoderOutput]) -> ObjectiveResult:
        """Weighted relation losses plus the weighted denoising loss (see the class)."""
        extras = self._checked_extras(outputs["blend"])
        node_mask, node = extras["node_mask"], extras["node_padded"]
        if extras["path_edges"].size(-1) < self.edge_hops:
            raise ValueError(
                f"objective {self.name!r} predicts {self.edge_hops} bonds per path, the "
                f"encoder gives {extras['path_edges'].size(-1)} (raise its max_hops)"
            )
        noise = getattr(batch, "coord_noise", None)
        if noise is None:
            raise ValueError(
                f"objective {self.name!r}: batch has no 'coord_noise', so its CoordNoise view "
                "did not run; build the data pipeline from the module's pipeline_views()"
            )
        pos = self._padded(batch, "pos", node_mask)
        noise_padded = self._padded(batch, "coord_noise", node_mask)
        num_graphs = node_mask.size(0)
        masks = self.relation_pair_masks(extras)
        metrics: dict[str, Tensor] = {}
        terms = {
            RELATION_SPD: self._spd_loss(node, extras, masks[RELATION_SPD], metrics),
            RELATION_EDGE: self._edge_loss(node, extras, batch, masks[RELATION_EDGE], metrics),
            RELATION_DISTANCE: self._pos_loss(
                node, pos - noise_padded, masks[RELATION_DISTANCE], metrics
            ),
        }
        total = node.new_zeros(())
        for relation, term in terms.items():
            key = RELATION_KEYS[relation]
            metrics[f"{key}_loss"] = term.detach()
            metrics[f"{key}_pairs"] = masks[relation].sum().to(node.dtype) / num_graphs
            total = total + self.relation_weights[relation] * term

        atoms = self.denoise_atoms(extras)
        prediction = self._noise(pos, extras)[atoms]
        target = noise_padded[atoms].to(prediction.dtype)
        cosine = F.cosine_similarity(prediction, target, dim=-1)
        denoise = (1.0 - cosine).sum() / atoms.sum().clamp(min=1)
        metrics["denoise_loss"] = denoise.detach()
        metrics["denoise_atoms"] = atoms.sum().to(node.dtype) / num_graphs
        total = total + self.denoise_weight * denoise
        return ObjectiveResult(loss=total, metrics=metrics, batch_size=num_graphs)

    def _spd_loss(
        self, node: Tensor, extras: Mapping[str, Tensor], mask: Tensor, metrics: dict[str, Tensor]
    ) -> Tensor:
        graph_idx, first, second = mask.nonzero(as_tuple=True)
        logits = self.spd_head(node, graph_idx, first, second)
        target = self.spd_class(extras["spd"][graph_idx, first, second])
        return self._cross_entropy(logits, target, "spd", metrics)

    def _edge_loss(
        self,
        node: Tensor,
        extras: Mapping[str, Tensor],
        batch: Batch,
        mask: Tensor,
        metrics: dict[str, Tensor],
    ) -> Tensor:
        graph_idx, first, second = mask.nonzero(as_tuple=True)
        logits = self.edge_head(node, graph_idx, first, second)
        logits = logits.view(-1, self.edge_hops, NUM_EDGE_CLASSES)
        path = extras["path_edges"][graph_idx, first, second, : self.edge_hops]
        has_bond = path >= 0
        bond_class = edge_feature_class(batch.edge_attr)
        target = bond_class[path[has_bond]] if bond_class.numel() else path[has_bond]
        return self._cross_entropy(logits[has_bond], target, "edge", metrics)

    def _pos_loss(
        self, node: Tensor, clean: Tensor, mask: Tensor, metrics: dict[str, Tensor]
    ) -> Tensor:
        graph_idx, first, second = mask.nonzero(as_tuple=True)
        prediction = self.pos_head(node, graph_idx, first, second)
        target = (clean[graph_idx, second] - clean[graph_idx, first]).to(prediction.dtype)
        per_pair = 1.0 - F.cosine_similarity(prediction, target, dim=-1)
        # Mean over each molecule's pairs, then over the molecules that have any.
        num_graphs = mask.size(0)
        summed = per_pair.new_zeros(num_graphs).index_add(0, graph_idx, per_pair)
        counts = mask.flatten(1).sum(dim=1).to(per_pair.dtype)
        has_pairs = counts > 0
        per_molecule = summed[has_pairs] / counts[has_pairs]
        return per_molecule.sum() / has_pairs.sum().clamp(min=1)

    @staticmethod
    def _cross_entropy(
        logits: Tensor, target: Tensor, key: str, metrics: dict[str, Tensor]
    ) -> Tensor:
        """Mean cross-entropy over the rows (0 without any) and the accuracy metric."""
        total = F.cross_entropy(logits, target, reduction="sum")
        if target.numel():
            with torch.no_grad():
                hits = logits.argmax(dim=-1) == target
                metrics[f"{key}_acc"] = hits.to(logits.dtype).mean()
        return total / max(target.numel(), 1)

    # -- helpers -----------------------------------------------------------------------------

    def _checked_extras(self, output: EncoderOutput) -> Mapping[str, Tensor]:
        missing = [key for key in _REQUIRED_EXTRAS if key not in output.extras]
        if missing:
            raise ValueError(
                f"objective {self.name!r} reads the blended encoder's extras {_REQUIRED_EXTRAS}, "
                f"missing {missing}; use molssl.encoders.MoleBlendTransformer as encoder_blend"
            )
        return output.extras

    def _padded(self, batch: Batch, key: str, node_mask: Tensor) -> Tensor:
        values = getattr(batch, key, None)
        if values is None:
            raise ValueError(f"objective {self.name!r}: batch has no {key!r} (N, 3)")
        num_graphs, num_nodes = node_mask.shape
        if values.shape != (int(node_mask.sum()), 3):
            raise ValueError(
                f"objective {self.name!r}: {key!r} must have shape ({int(node_mask.sum())}, 3), "
                f"got {tuple(values.shape)}"
            )
        index = getattr(batch, "batch", None)
        return to_padded(values, index, num_graphs, max_num_nodes=num_nodes)[0]

    def extra_repr(self) -> str:
        weights = ", ".join(
            f"{RELATION_KEYS[r]}_weight={w}" for r, w in self.relation_weights.items()
        )
        return (
            f"{super().extra_repr()}, hidden_pairs_only={self.hidden_pairs_only}, "
            f"spd_classes={self.spd_classes}, edge_hops={self.edge_hops}, {weights}, "
            f"denoise_weight={self.denoise_weight}, noise_sigma={self.noise_sigma}"
        )

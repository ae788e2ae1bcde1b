"""MoleBLEND's blend-then-predict objective (Yu et al., 2023), with its 3D denoising regulariser.

The blended encoder (:class:`~molssl.encoders.blend.MoleBlendTransformer`) shows every atom pair
one relation: shortest-path distance, edge, or 3D distance. From its final atom states this
objective predicts, for atom pairs, all three relations, by default only where the pair did
not show that relation; and, as a regulariser, the coordinate noise added to the conformer.
See :class:`BlendPredict`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Batch

from molssl.chem.features import BOND_FEATURE_DIMS
from molssl.encoders.base import EncoderOutput
from molssl.encoders.blend_choice import (
    RELATION_DISTANCE,
    RELATION_EDGE,
    RELATION_SPD,
    pair_mask_from_node_mask,
)
from molssl.encoders.padding import to_padded
from molssl.objectives.base import Objective, ObjectiveResult, View
from molssl.objectives.lazy_head import LazyHead
from molssl.objectives.pair_heads import (
    SymmetricPairFeatures,
    pair_mlp,
    pairwise_noise,
    scalar_pair_head,
)
from molssl.objectives.views import CoordNoise

__all__ = ["NO_BOND_CLASS", "NUM_EDGE_CLASSES", "RELATION_KEYS", "BlendPredict"]

#: Edge-type class of a pair that is not bonded (after the bond-type classes of
#: ``edge_attr[:, 0]``, whose last one is "other").
NO_BOND_CLASS = BOND_FEATURE_DIMS[0]
NUM_EDGE_CLASSES = NO_BOND_CLASS + 1
#: Metric prefix of each relation, indexed by its blend-choice code.
RELATION_KEYS: dict[int, str] = {
    RELATION_SPD: "spd",
    RELATION_EDGE: "edge",
    RELATION_DISTANCE: "dist",
}
_REQUIRED_EXTRAS = ("node_padded", "node_mask", "spd", "path_edges")


class BlendPredict(Objective):
    """Predict every hidden atom-pair relation from the blended encoder, plus 3D denoising.

    **Pairs.** Every unordered pair ``{i, j}`` of two different real atoms of one molecule is
    one example, counted once (the relations and the blend choice are symmetric, and so is the
    pair representation, :class:`~molssl.objectives.pair_heads.SymmetricPairFeatures`). With
    ``hidden_pairs_only=True`` (default) a relation is supervised at the pairs whose blend
    choice is another relation, i.e. the pairs it was hidden from; ``False`` supervises every
    pair (the public code's behaviour), which also asks the model to repeat what it was shown.
    Pairs with a padded atom never enter: the pairs are gathered by index before any head runs.

    **Targets**, consistent with the encoder's relations:

    * shortest path: ``max_spd + 1`` classes, class ``k - 1`` for ``k`` bonds (``k >= max_spd``
      share class ``max_spd - 1``) and class ``max_spd`` for unreachable pairs (salts);
    * edge: the bond type (column 0 of ``edge_attr``) of a bonded pair, else
      :data:`NO_BOND_CLASS` — the encoder's default ``"bond"`` edge relation (with the
      ``"multi_hop"`` encoding, pairs that showed the edge relation saw more than this target);
    * 3D distance of the **clean** conformer ``pos - coord_noise``, as a classification over
      ``num_distance_bins`` bins of equal width on ``[0, max_distance)`` Å, the last bin also
      taking every longer distance. Bins rather than regression because the distance of two
      atoms given the graph is multimodal for flexible molecules (a regression would learn the
      mean), and so that the three relation losses are cross-entropies on one scale.
      ``dist_mae`` is the mean absolute error in Å of the distribution's expected distance
      (over bin centres) against the true distance, so pairs beyond ``max_distance`` add the
      capping error.

    **Relation losses** are means over the supervised pairs of the batch (a relation with none
    contributes 0).

    **Denoising regulariser.** The view :class:`~molssl.objectives.views.CoordNoise` of
    ``noise_sigma`` adds Gaussian noise to the conformer. The prediction is
    ``e_i = sum_j w_ij (r_i - r_j) / |r_i - r_j|`` over all other atoms ``j`` of the molecule,
    at the noisy positions the encoder saw, with ``w_ij`` an MLP on the pair representation
    (Transformer-M's construction; here ``w_ij = w_ji``, a pairwise force): equivariant by
    construction. Loss: mean squared error against ``coord_noise / noise_sigma`` over atoms
    and components.

    ``loss = spd + edge + dist + denoise_weight * denoise``.

    Args:
        weight: Multiplier of the loss in the total.
        hidden_pairs_only: Supervise each relation only where it was hidden (see above).
        max_spd: Shortest-path classes (see above); the encoder's default bias cap is 20.
        num_distance_bins: Number of distance classes.
        max_distance: Start of the last, open-ended distance bin, in Å.
        denoise_weight: Weight of the denoising regulariser inside this objective's loss.
        noise_sigma: Standard deviation of the coordinate noise in Å.
        name: Name in logged metrics (default ``blend_predict``).
        hidden_channels: Width of the encoder's atom states; ``None`` reads it from the first
            batch.
        pair_channels: Width of the pair representation.

    Metrics: ``spd_acc``, ``edge_acc`` (accuracy over the supervised pairs; left out of a
    batch without any), ``dist_mae`` (Å), ``spd_loss``, ``edge_loss``, ``dist_loss``,
    ``denoise_loss``, and ``spd_pairs``, ``edge_pairs``, ``dist_pairs``: supervised pairs per
    molecule.
    """

    requires = ("blend",)

    def __init__(
        self,
        weight: float = 1.0,
        hidden_pairs_only: bool = True,
        max_spd: int = 20,
        num_distance_bins: int = 64,
        max_distance: float = 16.0,
        denoise_weight: float = 1.0,
        noise_sigma: float = 0.04,
        name: str | None = None,
        hidden_channels: int | None = None,
        pair_channels: int = 128,
    ) -> None:
        super().__init__(weight=weight, name=name)
        if max_spd < 1:
            raise ValueError(f"max_spd must be at least 1, got {max_spd}")
        if num_distance_bins < 2:
            raise ValueError(f"num_distance_bins must be at least 2, got {num_distance_bins}")
        if not (max_distance > 0 and max_distance < float("inf")):
            raise ValueError(f"max_distance must be a finite number > 0 (Å), got {max_distance}")
        if not (denoise_weight >= 0 and denoise_weight < float("inf")):
            raise ValueError(f"denoise_weight must be a finite number >= 0, got {denoise_weight}")
        if pair_channels < 1:
            raise ValueError(f"pair_channels must be at least 1, got {pair_channels}")
        self.hidden_pairs_only = bool(hidden_pairs_only)
        self.max_spd = int(max_spd)
        self.num_distance_bins = int(num_distance_bins)
        self.max_distance = float(max_distance)
        self.denoise_weight = float(denoise_weight)
        self.noise_view = CoordNoise(noise_sigma)
        self.noise_sigma = self.noise_view.sigma
        self.pair_features = LazyHead(
            functools.partial(SymmetricPairFeatures, out_dim=pair_channels), in_dim=hidden_channels
        )
        self.spd_head = pair_mlp(pair_channels, self.max_spd + 1)
        self.edge_head = pair_mlp(pair_channels, NUM_EDGE_CLASSES)
        self.distance_head = pair_mlp(pair_channels, self.num_distance_bins)
        self.noise_head = scalar_pair_head(pair_channels)

    def views(self) -> list[View]:
        """Gaussian coordinate noise of ``noise_sigma`` (shared with an equal CoordDenoise)."""
        return [self.noise_view]

    # -- targets and pair selection ----------------------------------------------------------

    def spd_class(self, spd: Tensor) -> Tensor:
        """Shortest-path class of pairs of different atoms (``spd >= 1``, ``-1`` unreachable)."""
        return torch.where(spd < 0, self.max_spd, spd.clamp(min=1, max=self.max_spd) - 1)

    @staticmethod
    def edge_class(spd: Tensor, first_edge: Tensor, edge_attr: Tensor) -> Tensor:
        """Bond type of bonded pairs (``spd == 1``; ``first_edge`` a global edge id), else
        :data:`NO_BOND_CLASS`."""
        bonded = spd == 1
        bond_type = edge_attr[first_edge.clamp(min=0), 0] if edge_attr.numel() else first_edge
        return torch.where(bonded, bond_type, NO_BOND_CLASS)

    def distance_class(self, distance: Tensor) -> Tensor:
        """Distance bin of each distance in Å (the last bin is open-ended)."""
        width = self.max_distance / self.num_distance_bins
        return (distance / width).floor().long().clamp(min=0, max=self.num_distance_bins - 1)

    def bin_centres(self, device: torch.device, dtype: torch.dtype) -> Tensor:
        """Centre of each distance bin in Å, ``(num_distance_bins,)``."""
        width = self.max_distance / self.num_distance_bins
        return (torch.arange(self.num_distance_bins, device=device, dtype=dtype) + 0.5) * width

    def relation_pair_masks(self, extras: Mapping[str, Tensor]) -> dict[int, Tensor]:
        """Pairs supervised for each relation, as symmetric ``(B, Nmax, Nmax)`` bool masks.

        ``True`` at pairs of two different real atoms, and, with ``hidden_pairs_only``, whose
        blend choice is not that relation.

        Raises:
            ValueError: If ``hidden_pairs_only`` and the encoder did not blend (no
                ``blend_choice``, e.g. ``relation_mode="all"``): no relation was hidden.
        """
        node_mask = extras["node_mask"]
        pairs = pair_mask_from_node_mask(node_mask)
        size = node_mask.size(1)
        pairs = pairs & ~torch.eye(size, dtype=torch.bool, device=node_mask.device)
        if not self.hidden_pairs_only:
            return {relation: pairs for relation in RELATION_KEYS}
        choice = self._blend_choice(extras)
        return {relation: pairs & (choice != relation) for relation in RELATION_KEYS}

    def _blend_choice(self, extras: Mapping[str, Tensor]) -> Tensor:
        choice = extras.get("blend_choice")
        if choice is None:
            raise ValueError(
                f"objective {self.name!r}: hidden_pairs_only needs the encoder's blend_choice, "
                "but the blended encoder did not blend (relation_mode='all'?); set "
                "relation_mode='blend' or hidden_pairs_only=False"
            )
        return choice

    def _selected_pairs(
        self, extras: Mapping[str, Tensor], graph_idx: Tensor, first: Tensor, second: Tensor
    ) -> dict[int, Tensor]:
        """:meth:`relation_pair_masks` read at the listed pairs only, as ``(M,)`` bool each."""
        if not self.hidden_pairs_only:
            every = torch.ones_like(graph_idx, dtype=torch.bool)
            return {relation: every for relation in RELATION_KEYS}
        shown = self._blend_choice(extras)[graph_idx, first, second]
        return {relation: shown != relation for relation in RELATION_KEYS}

    # -- predictions -------------------------------------------------------------------------

    def predict_noise(self, batch: Batch, output: EncoderOutput) -> Tensor:
        """The denoising prediction ``(N, 3)`` in units of ``noise_sigma``, in ``batch`` order."""
        extras = self._checked_extras(output)
        pos = self._padded(batch, "pos", extras["node_mask"])
        graph_idx, first, second = self._unordered_pairs(extras["node_mask"])
        pair = self.pair_features(extras["node_padded"], graph_idx, first, second)
        return self._noise(pos, pair, graph_idx, first, second)[extras["node_mask"]]

    def _noise(
        self, pos: Tensor, pair: Tensor, graph_idx: Tensor, first: Tensor, second: Tensor
    ) -> Tensor:
        weights = self.noise_head(pair)
        return pairwise_noise(pos, weights, graph_idx, first, second)

    # -- loss --------------------------------------------------------------------------------

    def loss(self, batch: Batch, outputs: Mapping[str, EncoderOutput]) -> ObjectiveResult:
        """Relation cross-entropies over the supervised pairs plus the weighted denoising MSE."""
        extras = self._checked_extras(outputs["blend"])
        node_mask, node = extras["node_mask"], extras["node_padded"]
        noise = getattr(batch, "coord_noise", None)
        if noise is None:
            raise ValueError(
                f"objective {self.name!r}: batch has no 'coord_noise', so its CoordNoise view "
                "did not run; build the data pipeline from the module's pipeline_views()"
            )
        pos = self._padded(batch, "pos", node_mask)
        noise_padded = self._padded(batch, "coord_noise", node_mask)
        graph_idx, first, second = self._unordered_pairs(node_mask)
        pair = self.pair_features(node, graph_idx, first, second)
        selected = self._selected_pairs(extras, graph_idx, first, second)

        spd = extras["spd"][graph_idx, first, second]
        spd_target = self.spd_class(spd)
        edge_target = self.edge_class(
            spd, extras["path_edges"][graph_idx, first, second, 0], batch.edge_attr
        )
        clean = pos - noise_padded
        distance = (clean[graph_idx, first] - clean[graph_idx, second]).pow(2).sum(-1).sqrt()
        distance = distance.to(pair.dtype)

        metrics: dict[str, Tensor] = {}
        num_graphs = node_mask.size(0)
        total = pair.new_zeros(())
        heads = {
            RELATION_SPD: (self.spd_head, spd_target),
            RELATION_EDGE: (self.edge_head, edge_target),
            RELATION_DISTANCE: (self.distance_head, self.distance_class(distance)),
        }
        for relation, (head, target) in heads.items():
            key, mask = RELATION_KEYS[relation], selected[relation]
            logits = head(pair)
            per_pair = F.cross_entropy(logits, target, reduction="none")
            count = mask.sum()
            relation_loss = torch.where(mask, per_pair, 0.0).sum() / count.clamp(min=1)
            total = total + relation_loss
            metrics[f"{key}_loss"] = relation_loss.detach()
            metrics[f"{key}_pairs"] = count.to(pair.dtype) / num_graphs
            if int(count) == 0:
                continue
            with torch.no_grad():
                if relation == RELATION_DISTANCE:
                    centres = self.bin_centres(logits.device, logits.dtype)
                    expected = logits.softmax(dim=-1) @ centres
                    metrics["dist_mae"] = (expected - distance).abs()[mask].mean()
                else:
                    hits = logits.argmax(dim=-1) == target
                    metrics[f"{key}_acc"] = hits[mask].to(pair.dtype).mean()

        prediction = self._noise(pos, pair, graph_idx, first, second)[node_mask]
        denoise = F.mse_loss(prediction, noise.to(prediction.dtype) / self.noise_sigma)
        metrics["denoise_loss"] = denoise.detach()
        total = total + self.denoise_weight * denoise
        return ObjectiveResult(loss=total, metrics=metrics, batch_size=num_graphs)

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

    @staticmethod
    def _unordered_pairs(node_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(graph, i, j)`` of every pair ``i < j`` of real atoms."""
        size = node_mask.size(1)
        upper = torch.ones(size, size, dtype=torch.bool, device=node_mask.device).triu(1)
        graph_idx, first, second = (pair_mask_from_node_mask(node_mask) & upper).nonzero(
            as_tuple=True
        )
        return graph_idx, first, second

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, hidden_pairs_only={self.hidden_pairs_only}, "
            f"max_spd={self.max_spd}, num_distance_bins={self.num_distance_bins}, "
            f"max_distance={self.max_distance}, denoise_weight={self.denoise_weight}, "
            f"noise_sigma={self.noise_sigma}"
        )

"""UniCorn's cross-modal distillation: InfoNCE between 3D and 2D molecule embeddings.

Each molecule of a batch is seen by the 3D encoder (its torsion-augmented, noised conformer) and
by the 2D encoder (its whole graph: the fragment mask of masked fragment modelling is not
applied to this view, see :class:`CrossModalInfoNCE`). Projection heads map both molecule
embeddings to a common space; the cosine similarity over a temperature scores every (3D, 2D)
pair of the batch, and cross-entropy asks each 3D embedding to pick its own molecule's 2D
embedding among the batch's (in-batch negatives). UniCorn distils 2D knowledge *into* the 3D
encoder, so the default is one-directional with the 3D embedding as the query; see
:class:`CrossModalInfoNCE`.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch

from molssl.encoders.base import EncoderOutput
from molssl.objectives.base import Objective, ObjectiveResult, unmasked
from molssl.objectives.lazy_head import LazyHead

__all__ = ["CrossModalInfoNCE", "ProjectionHead", "duplicate_pairs", "info_nce"]

# Cosine similarity divides by the norms; an all-zero embedding must not divide by zero.
_NORM_EPS = 1e-8


class ProjectionHead(nn.Module):
    """SimCLR-style projection: ``Linear(in, in) -> SiLU -> Linear(in, out)``.

    Args:
        in_dim: Width of the molecule embedding.
        out_dim: Width of the shared contrastive space.

    Shapes:
        ``(B, in_dim) -> (B, out_dim)``.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, in_dim), nn.SiLU(), nn.Linear(in_dim, out_dim))

    def forward(self, embedding: Tensor) -> Tensor:
        """Project ``(B, in_dim)`` molecule embeddings to ``(B, out_dim)``."""
        return self.net(embedding)


def duplicate_pairs(smiles: Sequence[str], device: torch.device | None = None) -> Tensor:
    """``(B, B)`` bool: ``True`` where two *different* batch entries are the same molecule.

    Two entries with the same SMILES string have the same 2D graph, so the 2D encoder cannot
    tell them apart; scoring one as the other's negative would punish a correct answer.
    """
    codes: dict[str, int] = {}
    ids = torch.tensor([codes.setdefault(s, len(codes)) for s in smiles], device=device)
    same = ids.unsqueeze(0) == ids.unsqueeze(1)
    return same & ~torch.eye(len(smiles), dtype=torch.bool, device=device)


def info_nce(
    query: Tensor,
    keys: Tensor,
    temperature: float,
    exclude: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """InfoNCE of ``query[i]`` retrieving ``keys[i]`` among all keys, by cosine similarity.

    ``loss_i = -log( exp(cos(q_i, k_i) / t) / sum_j exp(cos(q_i, k_j) / t) )``, the sum over the
    keys not excluded for row ``i``.

    Args:
        query: ``(B, D)`` embeddings.
        keys: ``(B, D)`` embeddings; ``keys[i]`` is the positive of ``query[i]``.
        temperature: ``t > 0``.
        exclude: Optional ``(B, B)`` bool, ``True`` at keys that are not negatives of a row
            (e.g. duplicates of the positive); the diagonal must be ``False``.

    Returns:
        ``(loss, top1, has_negative)``: the mean loss over the rows with at least one negative
        (exactly ``0`` with zero gradient when no row has one), the fraction of those rows whose
        most similar key is their positive, and the ``(B,)`` bool mask of those rows.
    """
    logits = F.normalize(query, dim=-1, eps=_NORM_EPS) @ F.normalize(keys, dim=-1, eps=_NORM_EPS).T
    logits = logits / temperature
    size = logits.size(0)
    negatives = ~torch.eye(size, dtype=torch.bool, device=logits.device)
    if exclude is not None:
        logits = logits.masked_fill(exclude, float("-inf"))
        negatives = negatives & ~exclude
    has_negative = negatives.any(dim=1)
    targets = torch.arange(size, device=logits.device)
    per_row = F.cross_entropy(logits, targets, reduction="none")
    # A row without negatives has the value log(1) = 0 and no signal: leave it out of the mean.
    count = has_negative.sum()
    loss = torch.where(has_negative, per_row, 0.0).sum() / count.clamp(min=1)
    hits = (logits.detach().argmax(dim=1) == targets) & has_negative
    top1 = hits.sum() / count.clamp(min=1)
    return loss, top1.to(logits.dtype), has_negative


class CrossModalInfoNCE(Objective):
    """Contrastive 2D→3D distillation with in-batch negatives (UniCorn).

    Projection heads (two-layer MLPs, :class:`ProjectionHead`) map the 3D and the 2D encoders'
    molecule embeddings (``graph``) to a ``proj_dim`` space. With ``q`` the 3D projections and
    ``k`` the 2D ones, the loss is :func:`info_nce`: each molecule's 3D embedding must retrieve
    its own 2D embedding among the 2D embeddings of the batch, by cosine similarity over
    ``temperature``. This distils 2D knowledge into the 3D encoder, as UniCorn does.
    ``symmetric=True`` also makes each 2D embedding retrieve its 3D one and averages the two
    directions (CLIP's loss).

    **The 2D view is the unmasked graph** (``view_2d="unmasked"``, the default). UniCorn's
    distillation (paper Section 4.4, Eq. 9) aligns the 3D conformer with the embedding of its 2D
    graph ``G``; the masked graph (``G`` less ``M``) appears only in the masked fragment loss
    (Eq. 7). With a mask ratio of 0.2 a molecule of few BRICS fragments has all of them masked,
    and a key computed from the masked graph would then have seen no atom type at all. The
    module therefore runs the 2D encoder a second time on the batch without ``atom_mask`` (one
    pass when no objective masks). ``view_2d="masked"`` contrasts with the masked graph's
    embedding, what molssl did before (one 2D pass per step), kept for ablation.

    ``stop_grad_2d=True`` detaches the 2D encoder's embedding before the 2D projection head:
    the 2D encoder then gets no gradient from this loss (a pure teacher), while the 2D head
    still learns to align; the unmasked 2D pass then runs without autograd.

    **Duplicates.** Batch entries with the same ``smiles`` are the same graph; they are removed
    from each other's negatives (a 2D encoder cannot separate them).

    **A batch of one molecule** has no negatives. InfoNCE is then exactly ``0`` with zero
    gradient, and that is what is returned rather than an error, since a data loader's last
    batch may hold a single molecule: the metric ``negatives`` (mean number of negatives per
    query) is ``0``, the top-1 metrics are left out for that batch, and a warning is issued.

    Args:
        weight: Multiplier of the loss in the total.
        temperature: Softmax temperature of the cosine similarities (UniCorn: 0.5).
        proj_dim: Width of the shared contrastive space.
        symmetric: Add the 2D→3D retrieval direction (mean of both).
        stop_grad_2d: Detach the 2D embedding (no gradient into the 2D encoder).
        view_2d: ``"unmasked"`` (the 2D encoder's view of the whole graph) or ``"masked"``
            (its view of the batch with the masking objective's ``atom_mask``; ablation).
        name: Name in logged metrics (default ``cross_modal_info_nce``).
        in_dim_3d: Width of the 3D encoder's embedding; ``None`` reads it from the first batch.
        in_dim_2d: Width of the 2D encoder's embedding; ``None`` reads it from the first batch.

    Metrics: ``top1_3d_to_2d`` (fraction of 3D queries whose most similar 2D key is their own
    molecule), ``top1_2d_to_3d`` when symmetric, and ``negatives``.
    """

    requires = ("3d", "2d")

    def __init__(
        self,
        weight: float = 1.0,
        temperature: float = 0.5,
        proj_dim: int = 256,
        symmetric: bool = False,
        stop_grad_2d: bool = False,
        view_2d: Literal["unmasked", "masked"] = "unmasked",
        name: str | None = None,
        in_dim_3d: int | None = None,
        in_dim_2d: int | None = None,
    ) -> None:
        super().__init__(weight=weight, name=name)
        if view_2d not in ("unmasked", "masked"):
            raise ValueError(f"view_2d must be 'unmasked' or 'masked', got {view_2d!r}")
        self.view_2d = view_2d
        if not (temperature > 0 and temperature < float("inf")):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
        if proj_dim < 1:
            raise ValueError(f"proj_dim must be at least 1, got {proj_dim}")
        self.temperature = float(temperature)
        self.proj_dim = int(proj_dim)
        self.symmetric = bool(symmetric)
        self.stop_grad_2d = bool(stop_grad_2d)
        factory = functools.partial(ProjectionHead, out_dim=self.proj_dim)
        self.head_3d = LazyHead(factory, in_dim=in_dim_3d)
        self.head_2d = LazyHead(factory, in_dim=in_dim_2d)
        self._warned_no_negatives = False

    def unmasked_roles(self) -> tuple[str, ...]:
        """``("2d",)``: the key is the whole graph's embedding, unless ``view_2d="masked"``."""
        return ("2d",) if self.view_2d == "unmasked" else ()

    def unmasked_needs_grad(self) -> bool:
        """Not with ``stop_grad_2d``: the key is then a constant of the 2D encoder."""
        return not self.stop_grad_2d

    def bind_encoders(self, widths: Mapping[str, int]) -> None:
        """Builds each projection head at the width of the encoder it reads."""
        for role, head in (("3d", self.head_3d), ("2d", self.head_2d)):
            if role in widths:
                head.materialize(int(widths[role]))

    def project(self, outputs: Mapping[str, EncoderOutput]) -> tuple[Tensor, Tensor]:
        """The projected ``(3D, 2D)`` molecule embeddings, each ``(B, proj_dim)``.

        Raises:
            ValueError: If the two encoders embedded different numbers of molecules.
        """
        key_2d = unmasked("2d") if self.view_2d == "unmasked" else "2d"
        if key_2d not in outputs:
            raise ValueError(
                f"objective {self.name!r} reads the {key_2d!r} encoding, which the outputs "
                f"lack (they hold {sorted(outputs)}); PretrainModule provides it"
            )
        graph_3d, graph_2d = outputs["3d"].graph, outputs[key_2d].graph
        if graph_3d.dim() != 2 or graph_2d.dim() != 2 or graph_3d.size(0) != graph_2d.size(0):
            raise ValueError(
                f"objective {self.name!r}: the 3D and 2D encoders must embed the same molecules "
                f"as (B, D) tensors, got {tuple(graph_3d.shape)} and {tuple(graph_2d.shape)}"
            )
        if self.stop_grad_2d:
            graph_2d = graph_2d.detach()
        return self.head_3d(graph_3d), self.head_2d(graph_2d)

    def loss(self, batch: Batch, outputs: Mapping[str, EncoderOutput]) -> ObjectiveResult:
        """InfoNCE from the 3D queries to the 2D keys (and back when symmetric)."""
        query, keys = self.project(outputs)
        smiles = getattr(batch, "smiles", None)
        exclude = None
        if isinstance(smiles, (list, tuple)) and len(smiles) == query.size(0):
            exclude = duplicate_pairs(smiles, device=query.device)
        loss, top1, has_negative = info_nce(query, keys, self.temperature, exclude)
        metrics: dict[str, Tensor] = {}
        num_queries = int(has_negative.sum())
        if num_queries > 0:
            metrics["top1_3d_to_2d"] = top1.detach()
        if self.symmetric:
            back = None if exclude is None else exclude.T
            loss_back, top1_back, _ = info_nce(keys, query, self.temperature, back)
            loss = 0.5 * (loss + loss_back)
            if num_queries > 0:
                metrics["top1_2d_to_3d"] = top1_back.detach()
        size = query.size(0)
        pairs = torch.tensor(float(size * (size - 1)), device=query.device)
        if exclude is not None:
            pairs = pairs - exclude.sum()
        metrics["negatives"] = pairs / size
        if num_queries == 0:
            self._warn_no_negatives(query.size(0))
        return ObjectiveResult(loss=loss, metrics=metrics, batch_size=num_queries or None)

    def _warn_no_negatives(self, batch_size: int) -> None:
        if self._warned_no_negatives:
            return
        self._warned_no_negatives = True
        warnings.warn(
            f"objective {self.name!r}: a batch of {batch_size} molecule(s) without two distinct "
            "molecules has no in-batch negatives; its InfoNCE is 0 and teaches nothing (use "
            "batches of several molecules, e.g. drop_last for tiny datasets)",
            UserWarning,
            stacklevel=3,
        )

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, temperature={self.temperature}, proj_dim={self.proj_dim}, "
            f"symmetric={self.symmetric}, stop_grad_2d={self.stop_grad_2d}, "
            f"view_2d={self.view_2d!r}"
        )

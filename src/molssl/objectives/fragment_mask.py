"""UniCorn's masked fragment modelling (MFM): hide whole BRICS fragments, predict their atoms.

The view hides the atoms of a random subset of the molecule's BRICS fragments from the 2D
encoder (``batch.atom_mask``; Graphormer swaps their input embedding for a learned mask
embedding), and the objective predicts the element of every hidden atom from the 2D
encoder's output at that atom.

Which atoms are hidden is decided by one method, :meth:`FragmentMask.choose_mask`; the view
calls back into it, so an ablation that masks differently overrides that method and nothing
else (see :class:`~molssl.objectives.atom_mask.AtomMask`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from molssl.chem.features import NUM_ELEMENT_CLASSES, element_index
from molssl.encoders.base import EncoderOutput
from molssl.objectives.base import Objective, ObjectiveResult, View
from molssl.objectives.lazy_head import LazyHead

__all__ = ["FragmentMask", "FragmentMaskView", "atom_type_head"]


def atom_type_head(in_dim: int) -> nn.Module:
    """Masked-atom classifier: ``Linear -> GELU -> LayerNorm -> Linear`` to element classes.

    The shape of BERT's and Graphormer's masked-token heads; ``(M, in_dim) -> (M, C)`` with
    ``C = NUM_ELEMENT_CLASSES``.
    """
    return nn.Sequential(
        nn.Linear(in_dim, in_dim),
        nn.GELU(),
        nn.LayerNorm(in_dim),
        nn.Linear(in_dim, NUM_ELEMENT_CLASSES),
    )


class FragmentMaskView(View):
    """Sets ``atom_mask`` (N,) bool on each sample from its objective's ``choose_mask``.

    Masks run last (order 30), after the 3D views, since they only concern the 2D input. One
    pipeline can hold one mask view: a sample that already has ``atom_mask`` is rejected, as
    two masking objectives would otherwise silently score each other's atoms.

    Args:
        objective: The masking objective whose :meth:`FragmentMask.choose_mask` decides.
    """

    order = 30

    def __init__(self, objective: FragmentMask) -> None:
        self.objective = objective

    def __call__(self, data: Data) -> Data:
        if getattr(data, "atom_mask", None) is not None:
            raise ValueError(
                "sample already has 'atom_mask': two masking views ran on it; one run can "
                "hold one masking objective, since they share batch.atom_mask"
            )
        mask = self.objective.choose_mask(data)
        num_atoms = int(data.num_nodes)
        if mask.dtype != torch.bool or mask.shape != (num_atoms,):
            raise ValueError(
                f"{type(self.objective).__name__}.choose_mask must return a bool tensor of "
                f"shape ({num_atoms},), got {mask.dtype} {tuple(mask.shape)}"
            )
        if not bool(mask.any()):
            raise ValueError(
                f"{type(self.objective).__name__}.choose_mask masked no atom; every sample "
                "needs at least one masked atom"
            )
        out = copy.copy(data)
        out.atom_mask = mask
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.objective.name!r})"


class FragmentMask(Objective):
    """Masked fragment modelling: predict the element of every atom of the hidden fragments.

    Per molecule with ``F`` BRICS fragments (``data.fragment``, one label per atom; hydrogens
    carry their heavy atom's label), ``k = max(1, round(mask_ratio * F))`` fragments are
    drawn uniformly without replacement and all their atoms are masked. The loss is the
    cross-entropy between a head on the 2D encoder's ``node`` output at the masked atoms and
    their element class (:func:`~molssl.chem.features.element_index`), averaged over all
    masked atoms of the batch.

    Args:
        weight: Multiplier of the loss in the total.
        mask_ratio: Fraction of units to mask (fragments here, atoms in
            :class:`~molssl.objectives.atom_mask.AtomMask`); ``None`` takes the class's
            :attr:`default_mask_ratio` (UniCorn: 0.2).
        name: Name in logged metrics (default ``fragment_mask``).
        hidden_channels: Width of the 2D encoder's node features; ``None`` reads it from the
            first batch (see :class:`~molssl.objectives.lazy_head.LazyHead`).

    Metrics: ``accuracy`` (masked atoms whose element is predicted right) and
    ``masked_atoms`` (mean number of masked atoms per molecule).
    """

    requires = ("2d",)
    #: Mask ratio used when the constructor gets ``None``; subclasses set their own.
    default_mask_ratio: float = 0.2

    def __init__(
        self,
        weight: float = 1.0,
        mask_ratio: float | None = None,
        name: str | None = None,
        hidden_channels: int | None = None,
    ) -> None:
        super().__init__(weight=weight, name=name)
        ratio = self.default_mask_ratio if mask_ratio is None else float(mask_ratio)
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1], got {ratio}")
        self.mask_ratio = ratio
        self.head = LazyHead(atom_type_head, in_dim=hidden_channels)

    def views(self) -> list[View]:
        """The mask view, which calls back into :meth:`choose_mask`."""
        return [FragmentMaskView(self)]

    def choose_mask(self, data: Data) -> Tensor:
        """Atoms to hide in one sample: every atom of ``k`` random BRICS fragments.

        Args:
            data: One molecule with ``fragment`` (N,) integer labels.

        Returns:
            ``(N,)`` bool mask, with at least one fragment masked.
        """
        fragment = getattr(data, "fragment", None)
        if fragment is None:
            raise ValueError(
                f"{type(self).__name__} needs BRICS fragment labels 'fragment' (N,) on each "
                "sample (see molssl.chem.fragments.brics_fragment_labels)"
            )
        labels = torch.unique(fragment)
        num_fragments = labels.numel()
        if num_fragments == 0:
            raise ValueError(f"{type(self).__name__}: sample has no atoms to mask")
        # Round half up rather than Python's round-half-to-even, so k grows with F.
        k = min(num_fragments, max(1, math.floor(self.mask_ratio * num_fragments + 0.5)))
        chosen = labels[torch.randperm(num_fragments)[:k]]
        return torch.isin(fragment, chosen)

    def loss(self, batch: Batch, outputs: Mapping[str, EncoderOutput]) -> ObjectiveResult:
        """Cross-entropy of the element class at the masked atoms of the batch."""
        mask = getattr(batch, "atom_mask", None)
        if mask is None:
            raise ValueError(
                f"objective {self.name!r}: batch has no 'atom_mask', so its mask view did not "
                "run; build the data pipeline from the module's pipeline_views()"
            )
        node = outputs["2d"].node
        if mask.shape != (node.size(0),) or mask.dtype != torch.bool:
            raise ValueError(
                f"objective {self.name!r}: atom_mask must be a bool tensor of shape "
                f"({node.size(0)},), got {mask.dtype} {tuple(mask.shape)}"
            )
        targets = element_index(batch.z[mask])
        num_masked = targets.numel()
        if num_masked == 0:
            raise ValueError(f"objective {self.name!r}: the batch has no masked atom")
        logits = self.head(node[mask])
        loss = F.cross_entropy(logits, targets)
        num_graphs = int(getattr(batch, "num_graphs", 1))
        metrics = {
            "accuracy": (logits.detach().argmax(dim=-1) == targets).float().mean(),
            "masked_atoms": torch.tensor(num_masked / num_graphs, device=node.device),
        }
        return ObjectiveResult(loss=loss, metrics=metrics, batch_size=num_masked)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mask_ratio={self.mask_ratio}"

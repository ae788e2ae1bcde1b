"""UniCorn's masked fragment modelling (MFM): hide whole BRICS fragments, predict their atoms.

The view hides the atoms of a random subset of the molecule's BRICS fragments from the 2D
encoder (``batch.atom_mask``; Graphormer swaps their input embedding for a learned mask
embedding), and the objective predicts the element of every hidden atom from the 2D
encoder's output at that atom.

Which atoms are hidden is decided by one method, :meth:`FragmentMask.choose_mask`; the view
calls back into it, so an ablation that masks differently overrides that method and nothing
else (see :class:`~molssl.objectives.atom_mask.AtomMask`). The data pipeline's fast path uses
the NumPy twin :meth:`FragmentMask.choose_mask_array` (same draws, same mask) only when the
class defining ``choose_mask`` also defines it, so such an override is always what runs.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, MutableMapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from molssl.chem.features import NUM_ELEMENT_CLASSES, element_index
from molssl.encoders.base import EncoderOutput
from molssl.objectives.base import Objective, ObjectiveResult, View
from molssl.objectives.lazy_head import LazyHead
from molssl.objectives.views import ArrayTransform, defined_together

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


# Largest fragment label + 1 for which choose_mask_array uses a lookup table (labels are
# BRICS fragment numbers, below the atom count; larger ones take np.unique's sort).
_LOOKUP_LABELS = 1 << 16

_TWO_MASKS = (
    "sample already has 'atom_mask': two masking views ran on it; one run can hold one "
    "masking objective, since they share batch.atom_mask"
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
            raise ValueError(_TWO_MASKS)
        mask = self.objective.choose_mask(data)
        num_atoms = int(data.num_nodes)
        if mask.dtype != torch.bool or mask.shape != (num_atoms,):
            raise ValueError(self._bad_mask(mask.dtype, tuple(mask.shape), num_atoms))
        if not bool(mask.any()):
            raise ValueError(self._empty_mask())
        out = copy.copy(data)
        out.atom_mask = mask
        return out

    def array_transform(self) -> ArrayTransform | None:
        """:meth:`__call__` on a sample's NumPy arrays, through the objective's
        ``choose_mask_array``; ``None`` when the objective overrides ``choose_mask`` alone."""
        if not defined_together(type(self.objective), "choose_mask", "choose_mask_array"):
            return None
        return self._apply_arrays

    def _apply_arrays(self, arrays: MutableMapping[str, np.ndarray]) -> None:
        if arrays.get("atom_mask") is not None:
            raise ValueError(_TWO_MASKS)
        num_atoms = len(arrays["z"])
        mask = self.objective.choose_mask_array(arrays, num_atoms)
        if mask.dtype != np.bool_ or mask.shape != (num_atoms,):
            raise ValueError(self._bad_mask(mask.dtype, mask.shape, num_atoms))
        if not mask.any():
            raise ValueError(self._empty_mask())
        arrays["atom_mask"] = mask

    def _bad_mask(self, dtype: object, shape: tuple[int, ...], num_atoms: int) -> str:
        return (
            f"{type(self.objective).__name__}.choose_mask must return a bool tensor of "
            f"shape ({num_atoms},), got {dtype} {shape}"
        )

    def _empty_mask(self) -> str:
        return (
            f"{type(self.objective).__name__}.choose_mask masked no atom; every sample "
            "needs at least one masked atom"
        )

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
            raise ValueError(self._missing_fragments())
        labels = torch.unique(fragment)
        num_fragments = labels.numel()
        k = self._fragments_to_mask(num_fragments)
        chosen = labels[torch.randperm(num_fragments)[:k]]
        return torch.isin(fragment, chosen)

    def choose_mask_array(self, arrays: Mapping[str, np.ndarray], num_atoms: int) -> np.ndarray:
        """:meth:`choose_mask` on a sample's NumPy arrays: the same draw, the same mask.

        A subclass that overrides :meth:`choose_mask` alone (as
        :class:`~molssl.objectives.atom_mask.AtomMask` does, to stay a one-method example)
        gets its ``choose_mask`` called on the ``Data``; overriding this as well puts it on
        the NumPy path.

        Args:
            arrays: The sample's arrays, with ``fragment`` (N,) integer labels.
            num_atoms: ``N``.

        Returns:
            ``(N,)`` bool mask.
        """
        fragment = arrays.get("fragment")
        if fragment is None:
            raise ValueError(self._missing_fragments())
        fragment = fragment.reshape(-1)
        if (
            fragment.size
            and fragment.dtype.kind in "iu"
            and fragment.min() >= 0
            and fragment.max() < _LOOKUP_LABELS
        ):
            # BRICS labels are small non-negative integers: a lookup table indexed by label
            # finds the sorted distinct labels (those torch.unique gives) and the mask.
            present = np.bincount(fragment)
            labels = np.flatnonzero(present)
            k = self._fragments_to_mask(len(labels))
            picked = np.zeros(len(present), dtype=bool)
            picked[labels[torch.randperm(len(labels))[:k].numpy()]] = True
            return picked[fragment]
        labels, inverse = np.unique(fragment, return_inverse=True)
        k = self._fragments_to_mask(len(labels))
        picked = np.zeros(len(labels), dtype=bool)
        picked[torch.randperm(len(labels))[:k].numpy()] = True
        return picked[inverse.reshape(-1)]

    def _fragments_to_mask(self, num_fragments: int) -> int:
        if num_fragments == 0:
            raise ValueError(f"{type(self).__name__}: sample has no atoms to mask")
        # Round half up rather than Python's round-half-to-even, so k grows with F.
        return min(num_fragments, max(1, math.floor(self.mask_ratio * num_fragments + 0.5)))

    def _missing_fragments(self) -> str:
        return (
            f"{type(self).__name__} needs BRICS fragment labels 'fragment' (N,) on each "
            "sample (see molssl.chem.fragments.brics_fragment_labels)"
        )

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

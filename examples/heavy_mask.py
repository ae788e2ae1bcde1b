"""An ablation in five lines: UniCorn's fragment masking with hydrogens left visible.

``FragmentMask`` picks whole BRICS fragments and hides every atom in them, hydrogens included.
This subclass overrides only ``choose_mask`` to keep hydrogens visible (and unscored); the head,
loss, metrics and data-pipeline view are inherited. Use it with
``molssl fit --config configs/unicorn.yaml --config examples/heavy_mask.yaml``.
"""

from __future__ import annotations

from torch import Tensor
from torch_geometric.data import Data

from molssl.objectives import FragmentMask


class HeavyAtomFragmentMask(FragmentMask):
    """Masks the heavy atoms of the chosen fragments; their hydrogens stay visible."""

    def choose_mask(self, data: Data) -> Tensor:
        """The fragment mask of :class:`FragmentMask`, restricted to heavy atoms."""
        return super().choose_mask(data) & (data.z > 1)

"""AttrMask baseline (Hu et al., "Strategies for Pre-training Graph Neural Networks", 2020).

The worked example of an ablation: a subclass of
:class:`~molssl.objectives.fragment_mask.FragmentMask` that overrides only how the mask is
chosen (single atoms instead of whole fragments). Head, loss, metrics and view are inherited;
a YAML names it by ``class_path`` like any other objective.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import Data

from molssl.objectives.fragment_mask import FragmentMask

__all__ = ["AtomMask"]


class AtomMask(FragmentMask):
    """Mask each atom independently with probability ``mask_ratio`` (default 0.15), at least one.

    Constructor arguments are :class:`FragmentMask`'s; logged under ``atom_mask``.
    """

    default_mask_ratio = 0.15

    def choose_mask(self, data: Data) -> Tensor:
        """Each atom with probability ``mask_ratio``; one random atom if none was drawn."""
        mask = torch.rand(int(data.num_nodes)) < self.mask_ratio
        if not bool(mask.any()):
            mask[torch.randint(mask.numel(), ())] = True
        return mask

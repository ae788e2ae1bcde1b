"""A user's own objective and view, living outside molssl and named in YAML by ``class_path``.

It regresses the number of heavy atoms of each molecule from the 2D encoder's molecule
embedding; the target is added per sample by its own view. Nothing in molssl knows about it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Batch, Data

from molssl.encoders.base import EncoderOutput
from molssl.objectives import Objective, ObjectiveResult, View


class HeavyAtomCountView(View):
    """Stores ``num_heavy`` (1,) float: the sample's number of non-hydrogen atoms."""

    order = 40

    def __call__(self, data: Data) -> Data:
        out = copy.copy(data)
        out.num_heavy = (data.z > 1).sum().to(torch.float32).view(1)
        return out


class HeavyAtomCount(Objective):
    """Mean squared error of the predicted heavy-atom count (divided by ``scale``).

    Args:
        weight: Multiplier of the loss in the total.
        scale: Targets are divided by this, to keep the loss near 1.
        name: Name in logged metrics (default ``heavy_atom_count``).
    """

    requires = ("2d",)

    def __init__(self, weight: float = 1.0, scale: float = 10.0, name: str | None = None) -> None:
        super().__init__(weight=weight, name=name)
        self.scale = scale
        self.head = nn.LazyLinear(1)

    def views(self) -> list[View]:
        """The target comes from this objective's own view."""
        return [HeavyAtomCountView()]

    def loss(self, batch: Batch, outputs: Mapping[str, EncoderOutput]) -> ObjectiveResult:
        """MSE of the scaled count, per molecule."""
        prediction = self.head(outputs["2d"].graph).squeeze(-1)
        target = batch.num_heavy / self.scale
        error = (prediction.detach() - target).abs().mean() * self.scale
        return ObjectiveResult(
            loss=F.mse_loss(prediction, target),
            metrics={"mae_atoms": error},
            batch_size=int(batch.num_graphs),
        )

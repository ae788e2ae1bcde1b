"""Coordinate denoising (Zaidi et al. 2023; the 3D objective of Frad and UniCorn).

The view adds Gaussian noise to the (possibly torsion-augmented) conformer; an equivariant
head on the 3D encoder predicts, per atom, the noise that was added. Molecules without a
rotatable bond get no torsion change, so for them this is plain coordinate denoising with no
special case.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Batch

from molssl.encoders.base import EncoderOutput
from molssl.encoders.heads import EquivariantVectorHead
from molssl.objectives.base import Objective, ObjectiveResult, View
from molssl.objectives.lazy_head import LazyHead
from molssl.objectives.views import CoordNoise

__all__ = ["CoordDenoise"]


class CoordDenoise(Objective):
    """Predict the coordinate noise from the noisy conformer with an equivariant head.

    The target is the noise in units of a scale ``s``: ``coord_noise / s``, where ``s`` is
    the fixed ``sigma`` (``target_norm="sigma"``, so targets are N(0, 1) per component) or a
    running estimate of the noise's standard deviation (``target_norm="running"``), kept in
    the buffer ``running_std`` so it is saved in checkpoints. The running estimate is a
    cumulative mean of the per-batch mean square for the first ``1 / momentum`` training
    batches and an exponential moving average after; it starts at ``sigma`` and is only
    updated in training mode, before the batch's targets are formed.

    Loss: mean squared error over atoms and Cartesian components, so predicting zero scores
    about 1. Metric ``rmse_angstrom``: the root mean squared length of the per-atom error
    vector with the prediction converted back to Å (predicting zero scores about
    ``sqrt(3) * sigma``).

    Args:
        weight: Multiplier of the loss in the total.
        sigma: Standard deviation of the coordinate noise in Å (paper: 0.04).
        target_norm: ``"sigma"`` or ``"running"``, see above.
        name: Name in logged metrics (default ``coord_denoise``).
        hidden_channels: Width of the 3D encoder; ``None`` reads it from the first batch.
        momentum: Weight of a new batch in the running estimate once it is past warm-up.
    """

    requires = ("3d",)
    running_std: Tensor
    num_updates: Tensor

    def __init__(
        self,
        weight: float = 1.0,
        sigma: float = 0.04,
        target_norm: Literal["sigma", "running"] = "sigma",
        name: str | None = None,
        hidden_channels: int | None = None,
        momentum: float = 0.01,
    ) -> None:
        super().__init__(weight=weight, name=name)
        if target_norm not in ("sigma", "running"):
            raise ValueError(f"target_norm must be 'sigma' or 'running', got {target_norm!r}")
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        self.noise_view = CoordNoise(sigma)
        self.sigma = self.noise_view.sigma
        self.target_norm = target_norm
        self.momentum = float(momentum)
        self.head = LazyHead(EquivariantVectorHead, in_dim=hidden_channels)
        self.register_buffer("running_std", torch.tensor(self.sigma))
        self.register_buffer("num_updates", torch.tensor(0, dtype=torch.long))

    def views(self) -> list[View]:
        """Gaussian coordinate noise of this objective's ``sigma``."""
        return [self.noise_view]

    @torch.no_grad()
    def update_running_std(self, noise: Tensor) -> None:
        """Fold one batch's noise into :attr:`running_std` (mean is zero by construction)."""
        # On-device arithmetic: reading num_updates on the host would sync the GPU each step.
        rate = (1.0 / (self.num_updates + 1.0)).clamp(min=self.momentum)
        variance = self.running_std.square() * (1.0 - rate) + noise.square().mean() * rate
        self.running_std.copy_(variance.sqrt())
        self.num_updates.add_(1)

    def target_scale(self, noise: Tensor) -> Tensor | float:
        """The scale ``s`` of the targets for this batch (updates the running estimate)."""
        if self.target_norm == "sigma":
            return self.sigma
        if self.training:
            self.update_running_std(noise)
        return self.running_std

    def loss(self, batch: Batch, outputs: Mapping[str, EncoderOutput]) -> ObjectiveResult:
        """MSE between the predicted and the true scaled noise, over atoms and components."""
        noise = getattr(batch, "coord_noise", None)
        if noise is None:
            raise ValueError(
                f"objective {self.name!r}: batch has no 'coord_noise', so its CoordNoise view "
                "did not run; build the data pipeline from the module's pipeline_views()"
            )
        output = outputs["3d"]
        if noise.shape != (output.node.size(0), 3):
            raise ValueError(
                f"objective {self.name!r}: coord_noise must have shape "
                f"({output.node.size(0)}, 3), got {tuple(noise.shape)}"
            )
        prediction = self.head(output, batch)
        scale = self.target_scale(noise)
        loss = F.mse_loss(prediction, noise.to(prediction.dtype) / scale)
        with torch.no_grad():
            error = prediction * scale - noise
            rmse = error.square().sum(dim=-1).mean().sqrt()
        return ObjectiveResult(
            loss=loss, metrics={"rmse_angstrom": rmse}, batch_size=int(noise.size(0))
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, sigma={self.sigma}, target_norm={self.target_norm!r}" + (
            f", momentum={self.momentum}" if self.target_norm == "running" else ""
        )

"""Coordinate denoising as an auxiliary loss of fine-tuning (Frad's "noisy nodes" term).

Frad fine-tunes with a denoising term next to the task loss (``fengshikun/FradNMI``:
``torchmdnet/data.py`` adds Gaussian noise of ``position_noise_scale`` to the positions,
``torchmdnet/module.py`` adds ``denoising_weight * MSE`` of a vector head's noise prediction;
``examples/ET-MD17_FT-angle_9500.yaml``: weight 0.1, sigma 0.005 A;
``examples/ET-QM9-FT_dw_0.2_long.yaml``: weight 0.2, sigma 0.005 A). In training, the task is
then predicted from the noised conformer and the same encoder output feeds a
:class:`~molssl.objectives.CoordDenoise` head that predicts the noise. Validation and test see
the clean conformers and no denoising loss.

The noise target is divided by ``sigma`` (``CoordDenoise(target_norm="sigma")``); Frad divides
by a running standard deviation of the noise, which tends to the same ``sigma``.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch

from molssl.encoders.base import EncoderOutput
from molssl.objectives.denoise import CoordDenoise

__all__ = ["FinetuneDenoising"]


class FinetuneDenoising(nn.Module):
    """Noises a training batch and scores the prediction of that noise.

    Args:
        weight: Multiplier of the denoising loss in the fine-tuning total (> 0).
        sigma: Standard deviation of the coordinate noise per component, in Å.
        hidden_channels: Width of the encoder, for the equivariant noise head.
    """

    def __init__(self, weight: float, sigma: float, hidden_channels: int) -> None:
        super().__init__()
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"denoise_weight must be a finite number > 0, got {weight}")
        self.weight = float(weight)
        self.objective = CoordDenoise(
            weight=weight, sigma=sigma, target_norm="sigma", hidden_channels=hidden_channels
        )

    @property
    def sigma(self) -> float:
        """The noise's standard deviation in Å."""
        return self.objective.sigma

    def noised(self, batch: Batch) -> Batch:
        """A shallow copy of ``batch`` with ``pos`` noised and the noise as ``coord_noise``."""
        noise = torch.randn_like(batch.pos) * self.sigma
        noisy = copy.copy(batch)
        noisy.pos = batch.pos + noise
        noisy.coord_noise = noise
        return noisy

    def loss(self, noisy: Batch, output: EncoderOutput) -> Tensor:
        """The unweighted denoising MSE of the encoder's ``output`` on ``noisy``."""
        return self.objective.loss(noisy, {"3d": output}).loss

    def extra_repr(self) -> str:
        return f"weight={self.weight}, sigma={self.sigma}"

"""Activation functions by the names TorchMD-NET configs use (``"silu"``, ``"ssp"``, ...)."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn


class ShiftedSoftplus(nn.Module):
    """``softplus(x) - log(2)``: SchNet's activation, zero at the origin."""

    def forward(self, x: Tensor) -> Tensor:
        return F.softplus(x) - math.log(2.0)


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "silu": nn.SiLU,
    "ssp": ShiftedSoftplus,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
}


def activation(name: str) -> nn.Module:
    """A fresh activation module for ``name``.

    Raises:
        ValueError: If ``name`` is not one of :data:`ACTIVATIONS`.
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()

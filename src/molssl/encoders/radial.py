"""Radial basis expansions of interatomic distances and smooth cutoff envelopes.

These follow TorchMD-NET (Thölke & De Fabritiis, ICLR 2022): the exponential-normal basis of
PhysNet (Unke & Meuwly, 2019) with trainable means and widths, a Gaussian basis as the
alternative, and a cosine envelope that takes every interaction smoothly to zero at the cutoff.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def cosine_cutoff(distances: Tensor, cutoff_lower: float, cutoff_upper: float) -> Tensor:
    """Cosine envelope that is 1 at ``cutoff_lower`` and falls smoothly to 0 at ``cutoff_upper``.

    Args:
        distances: Interatomic distances, any shape.
        cutoff_lower: Distance below which interactions are dropped (0 keeps everything closer
            than ``cutoff_upper``, with the envelope equal to 1 at distance 0).
        cutoff_upper: Distance at and beyond which the envelope is exactly 0.

    Returns:
        Envelope values in ``[0, 1]``, same shape and dtype as ``distances``.
    """
    if cutoff_lower > 0:
        span = cutoff_upper - cutoff_lower
        envelope = 0.5 * (torch.cos(math.pi * (2 * (distances - cutoff_lower) / span + 1.0)) + 1.0)
        inside = (distances < cutoff_upper) & (distances > cutoff_lower)
    else:
        envelope = 0.5 * (torch.cos(distances * math.pi / cutoff_upper) + 1.0)
        inside = distances < cutoff_upper
    return envelope * inside.to(distances.dtype)


class CosineCutoff(nn.Module):
    """Module form of :func:`cosine_cutoff`, so the bounds travel with the model's config."""

    def __init__(self, cutoff_lower: float = 0.0, cutoff_upper: float = 5.0) -> None:
        super().__init__()
        if cutoff_upper <= cutoff_lower:
            raise ValueError(
                f"cutoff_upper ({cutoff_upper}) must be greater than cutoff_lower ({cutoff_lower})"
            )
        self.cutoff_lower = cutoff_lower
        self.cutoff_upper = cutoff_upper

    def forward(self, distances: Tensor) -> Tensor:
        """Envelope values, same shape as ``distances``."""
        return cosine_cutoff(distances, self.cutoff_lower, self.cutoff_upper)

    def extra_repr(self) -> str:
        return f"cutoff_lower={self.cutoff_lower}, cutoff_upper={self.cutoff_upper}"


class _RadialBasis(nn.Module):
    """Shared bookkeeping: parameters that are trainable or fixed buffers, and their reset."""

    def __init__(
        self, cutoff_lower: float, cutoff_upper: float, num_rbf: int, trainable: bool
    ) -> None:
        super().__init__()
        if num_rbf < 2:
            raise ValueError(f"num_rbf must be at least 2, got {num_rbf}")
        if cutoff_upper <= cutoff_lower:
            raise ValueError(
                f"cutoff_upper ({cutoff_upper}) must be greater than cutoff_lower ({cutoff_lower})"
            )
        self.cutoff_lower = cutoff_lower
        self.cutoff_upper = cutoff_upper
        self.num_rbf = num_rbf
        self.trainable = trainable

    def _register(self, name: str, value: Tensor) -> None:
        if self.trainable:
            self.register_parameter(name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    def extra_repr(self) -> str:
        return (
            f"cutoff_lower={self.cutoff_lower}, cutoff_upper={self.cutoff_upper}, "
            f"num_rbf={self.num_rbf}, trainable={self.trainable}"
        )


class ExpNormalSmearing(_RadialBasis):
    """Exponential-normal radial basis with a cosine envelope (PhysNet, as used by TorchMD-NET).

    ``phi_k(r) = f_cut(r) * exp(-beta_k * (exp(alpha * (r_lower - r)) - mu_k) ** 2)`` with
    ``alpha = 5 / (r_upper - r_lower)``. The means ``mu_k`` start evenly spaced between
    ``exp(r_lower - r_upper)`` and 1, and all widths start at ``(2 / K * (1 - exp(r_lower -
    r_upper))) ** -2``. The envelope uses a lower bound of 0, as in TorchMD-NET.

    Args:
        cutoff_lower: Lower distance bound of the basis.
        cutoff_upper: Upper distance bound; the basis is exactly 0 beyond it.
        num_rbf: Number of basis functions ``K``.
        trainable: Whether ``means`` and ``betas`` are learned parameters or fixed buffers.
    """

    means: Tensor
    betas: Tensor

    def __init__(
        self,
        cutoff_lower: float = 0.0,
        cutoff_upper: float = 5.0,
        num_rbf: int = 64,
        trainable: bool = True,
    ) -> None:
        super().__init__(cutoff_lower, cutoff_upper, num_rbf, trainable)
        self.alpha = 5.0 / (cutoff_upper - cutoff_lower)
        means, betas = self._initial_params()
        self._register("means", means)
        self._register("betas", betas)

    def _initial_params(self) -> tuple[Tensor, Tensor]:
        start = math.exp(self.cutoff_lower - self.cutoff_upper)
        means = torch.linspace(start, 1.0, self.num_rbf)
        betas = torch.full((self.num_rbf,), (2.0 / self.num_rbf * (1.0 - start)) ** -2)
        return means, betas

    def reset_parameters(self) -> None:
        """Restore the PhysNet initial means and widths."""
        means, betas = self._initial_params()
        with torch.no_grad():
            self.means.copy_(means)
            self.betas.copy_(betas)

    def forward(self, distances: Tensor) -> Tensor:
        """Expand distances of shape ``(E,)`` into features of shape ``(E, num_rbf)``."""
        d = distances.unsqueeze(-1)
        envelope = cosine_cutoff(d, 0.0, self.cutoff_upper)
        shifted = torch.exp(self.alpha * (self.cutoff_lower - d)) - self.means
        return envelope * torch.exp(-self.betas * shifted.pow(2))


class GaussianSmearing(_RadialBasis):
    """Gaussians centred evenly between the cutoffs, width set by their spacing (SchNet).

    Args:
        cutoff_lower: Centre of the first Gaussian.
        cutoff_upper: Centre of the last Gaussian.
        num_rbf: Number of Gaussians.
        trainable: Whether ``offset`` and ``coeff`` are learned parameters or fixed buffers.
    """

    offset: Tensor
    coeff: Tensor

    def __init__(
        self,
        cutoff_lower: float = 0.0,
        cutoff_upper: float = 5.0,
        num_rbf: int = 64,
        trainable: bool = True,
    ) -> None:
        super().__init__(cutoff_lower, cutoff_upper, num_rbf, trainable)
        offset, coeff = self._initial_params()
        self._register("offset", offset)
        self._register("coeff", coeff)

    def _initial_params(self) -> tuple[Tensor, Tensor]:
        offset = torch.linspace(self.cutoff_lower, self.cutoff_upper, self.num_rbf)
        coeff = torch.tensor(-0.5 / float(offset[1] - offset[0]) ** 2)
        return offset, coeff

    def reset_parameters(self) -> None:
        """Restore evenly spaced centres and the spacing-derived width."""
        offset, coeff = self._initial_params()
        with torch.no_grad():
            self.offset.copy_(offset)
            self.coeff.copy_(coeff)

    def forward(self, distances: Tensor) -> Tensor:
        """Expand distances of shape ``(E,)`` into features of shape ``(E, num_rbf)``."""
        return torch.exp(self.coeff * (distances.unsqueeze(-1) - self.offset).pow(2))


RADIAL_BASES: dict[str, type[_RadialBasis]] = {
    "expnorm": ExpNormalSmearing,
    "gauss": GaussianSmearing,
}


def radial_basis(
    name: str, cutoff_lower: float, cutoff_upper: float, num_rbf: int, trainable: bool
) -> nn.Module:
    """Build a radial basis by its TorchMD-NET name (``"expnorm"`` or ``"gauss"``).

    Raises:
        ValueError: If ``name`` is not a known basis.
    """
    if name not in RADIAL_BASES:
        raise ValueError(f"unknown rbf_type {name!r}; choose from {sorted(RADIAL_BASES)}")
    return RADIAL_BASES[name](cutoff_lower, cutoff_upper, num_rbf, trainable)

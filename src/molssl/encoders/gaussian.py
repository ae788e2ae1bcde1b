"""Gaussian-kernel embedding of interatomic distances, turned into per-head attention biases.

This is the 3D relation of Transformer-M (Luo et al., ICLR 2023), also used by MoleBLEND and
Graph-3D encoders: a distance ``d`` between atoms of elements ``(a, b)`` is first mapped by a
learned affine transform of its pair type, ``d' = mul[a, b] * d + bias[a, b]``, then expanded
in ``K`` Gaussians with learned means and widths, and an MLP maps the ``K`` features to one
bias per attention head.

The pair type is the unordered element pair, so the embedding of ``(i, j)`` equals that of
``(j, i)`` and the resulting attention bias is symmetric.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

# Widths are kept away from 0 so a kernel can never collapse into a spike with infinite gradient.
_MIN_STD = 1e-2


def unordered_pair_index(type_a: Tensor, type_b: Tensor, num_types: int) -> Tensor:
    """Index of the unordered pair ``{a, b}`` in a table of ``num_types ** 2`` rows.

    Both orders map to ``min * num_types + max``, which makes pair embeddings symmetric.

    Args:
        type_a: Integer types, any shape, values in ``[0, num_types)``.
        type_b: Integer types, same shape as ``type_a``.
        num_types: Size of the type vocabulary.

    Returns:
        Long tensor of pair indices, same shape as the inputs.
    """
    low = torch.minimum(type_a, type_b)
    high = torch.maximum(type_a, type_b)
    return low * num_types + high


class PairGaussianBasis(nn.Module):
    """Gaussian basis of distances with a learned affine transform per atom-pair type.

    Args:
        num_gaussians: Number of Gaussian kernels ``K``.
        num_atom_types: Size of the atom type vocabulary; pair types are unordered pairs of it.
        max_initial_mean: Kernel means start uniform in ``[0, max_initial_mean]`` Å, as do the
            widths, which covers bonded and short non-bonded distances of small molecules.
    """

    def __init__(
        self, num_gaussians: int = 128, num_atom_types: int = 16, max_initial_mean: float = 3.0
    ) -> None:
        super().__init__()
        if num_gaussians < 1:
            raise ValueError(f"num_gaussians must be positive, got {num_gaussians}")
        if num_atom_types < 1:
            raise ValueError(f"num_atom_types must be positive, got {num_atom_types}")
        self.num_gaussians = num_gaussians
        self.num_atom_types = num_atom_types
        self.max_initial_mean = max_initial_mean
        self.means = nn.Parameter(torch.empty(num_gaussians))
        self.stds = nn.Parameter(torch.empty(num_gaussians))
        self.pair_mul = nn.Embedding(num_atom_types * num_atom_types, 1)
        self.pair_bias = nn.Embedding(num_atom_types * num_atom_types, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Identity affine transform for every pair type, spread-out kernel means and widths."""
        nn.init.uniform_(self.means, 0.0, self.max_initial_mean)
        nn.init.uniform_(self.stds, 0.0, self.max_initial_mean)
        nn.init.ones_(self.pair_mul.weight)
        nn.init.zeros_(self.pair_bias.weight)

    def forward(self, distances: Tensor, pair_types: Tensor) -> Tensor:
        """Expand distances into normalised Gaussian features.

        Args:
            distances: Interatomic distances, shape ``(M,)``.
            pair_types: Pair type index of each distance (see :func:`unordered_pair_index`),
                shape ``(M,)``.

        Returns:
            Features of shape ``(M, num_gaussians)``.
        """
        scaled = self.pair_mul(pair_types).squeeze(-1) * distances
        shifted = scaled + self.pair_bias(pair_types).squeeze(-1)
        std = self.stds.abs() + _MIN_STD
        z = (shifted.unsqueeze(-1) - self.means) / std
        return torch.exp(-0.5 * z.pow(2)) / (math.sqrt(2.0 * math.pi) * std)

    def extra_repr(self) -> str:
        return f"num_gaussians={self.num_gaussians}, num_atom_types={self.num_atom_types}"


class DistanceAttentionBias(nn.Module):
    """Per-head attention bias from distances: :class:`PairGaussianBasis` then a 2-layer MLP.

    Args:
        num_heads: Number of attention heads (outputs per pair).
        num_gaussians: Number of Gaussian kernels.
        num_atom_types: Size of the atom type vocabulary used for the pair-type affine.
    """

    def __init__(self, num_heads: int, num_gaussians: int = 128, num_atom_types: int = 16) -> None:
        super().__init__()
        self.basis = PairGaussianBasis(num_gaussians, num_atom_types)
        self.hidden = nn.Linear(num_gaussians, num_gaussians)
        self.out = nn.Linear(num_gaussians, num_heads)

    def forward(self, distances: Tensor, pair_types: Tensor) -> tuple[Tensor, Tensor]:
        """Biases and the underlying Gaussian features for ``M`` atom pairs.

        Args:
            distances: Shape ``(M,)``.
            pair_types: Shape ``(M,)``.

        Returns:
            ``(bias, features)`` of shapes ``(M, num_heads)`` and ``(M, num_gaussians)``; the
            features let an encoder also build per-atom 3D features from the same kernels.
        """
        features = self.basis(distances, pair_types)
        bias = self.out(F.gelu(self.hidden(features)))
        return bias, features

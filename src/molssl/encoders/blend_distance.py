"""MoleBLEND's 3D inputs: the distance relation of atom pairs and the atoms' 3D features.

Both come from one Gaussian-kernel embedding of the interatomic distances
(:class:`~molssl.encoders.gaussian.DistanceAttentionBias`, Transformer-M's ``GaussianLayer`` and
``NonLinear``), as in the official ``Molecule3DBias`` (``MoleBlend/modules/moleblend_layers.py``):

* the **pair bias** ``(B, N, N, H)``: the kernel features of each pair through an MLP to one
  bias per head; the encoder keeps it at the pairs whose blend choice is the distance;
* the **atom feature** ``(B, N, D)``: the kernel features summed over every atom of the
  molecule, the atom itself included (its zero distance), projected to the model width and
  scaled by ``0.01`` (``merged_edge_features * 0.01`` in the official
  ``MoleBlend/modules/moleblend_encoder.py``); the encoder adds it to the atoms whose feature
  is drawn from 3D.

The official code computes both over all pairs of the padded batch; here only the unordered
pairs ``i <= j`` of real atoms are evaluated and mirrored, which gives the same values.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from molssl.encoders.gaussian import DistanceAttentionBias, unordered_pair_index

__all__ = ["ATOM_3D_FEATURE_SCALE", "DistanceRelation"]

#: Scale of the atoms' 3D features (official ``merged_edge_features * 0.01``).
ATOM_3D_FEATURE_SCALE = 0.01
# Squared distances are floored before the square root so that a zero distance (the diagonal)
# has a finite gradient with respect to the coordinates.
_MIN_SQUARED_DISTANCE = 1e-12


class DistanceRelation(nn.Module):
    """Distance bias per pair and 3D feature per atom from padded coordinates.

    Args:
        num_heads: Attention heads ``H``.
        num_gaussians: Gaussian kernels ``K`` (MoleBLEND: 128).
        num_atom_types: Element vocabulary of the per-pair-type affine of the distances.
        hidden_channels: Model width ``D`` of the atom features.
    """

    def __init__(
        self, num_heads: int, num_gaussians: int, num_atom_types: int, hidden_channels: int
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.num_atom_types = num_atom_types
        self.bias = DistanceAttentionBias(num_heads, num_gaussians, num_atom_types)
        self.node_proj = nn.Linear(num_gaussians, hidden_channels)

    def reset_parameters(self) -> None:
        """The Gaussian basis starts as the identity affine with spread-out kernels."""
        self.bias.basis.reset_parameters()

    def forward(self, pos: Tensor, element: Tensor, node_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Pair biases and atom features.

        Args:
            pos: ``(B, N, 3)`` padded coordinates.
            element: ``(B, N)`` element class of each atom (column 0 of ``x``).
            node_mask: ``(B, N)`` bool, ``True`` at real atoms.

        Returns:
            ``(bias (B, N, N, H), atom_features (B, N, D))``: symmetric biases (zero at pairs
            with padding) and the scaled, projected kernel sums (zero at padding).
        """
        num_graphs, num_nodes = node_mask.shape
        pairs = node_mask.unsqueeze(-1) & node_mask.unsqueeze(-2)
        upper = torch.ones(num_nodes, num_nodes, dtype=torch.bool, device=pos.device).triu()
        graph_idx, row, col = (pairs & upper).nonzero(as_tuple=True)
        diff = pos[graph_idx, row] - pos[graph_idx, col]
        dist = diff.pow(2).sum(-1).clamp(min=_MIN_SQUARED_DISTANCE).sqrt()
        types = unordered_pair_index(
            element[graph_idx, row], element[graph_idx, col], self.num_atom_types
        )
        pair_bias, features = self.bias(dist, types)
        shape = (num_graphs, num_nodes, num_nodes, self.num_heads)
        bias = pair_bias.new_zeros(shape).index_put((graph_idx, row, col), pair_bias)
        bias = bias.index_put((graph_idx, col, row), pair_bias)

        # Sum over all atoms j of the molecule: each off-diagonal pair counts for both atoms,
        # the diagonal (i, i) once.
        summed = features.new_zeros(num_graphs, num_nodes, features.size(-1))
        summed = summed.index_put((graph_idx, row), features, accumulate=True)
        off = row != col
        summed = summed.index_put((graph_idx[off], col[off]), features[off], accumulate=True)
        atom_features = ATOM_3D_FEATURE_SCALE * self.node_proj(summed)
        return bias, atom_features * node_mask.unsqueeze(-1).to(atom_features.dtype)

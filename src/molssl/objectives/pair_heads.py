"""Pair representations and heads for blend-then-predict (:mod:`molssl.objectives.blend_predict`).

* :class:`OuterProductPairHead`: MoleBLEND's relation head for an ordered atom pair ``(i, j)``:
  the outer product of a row projection of atom ``i`` and a column projection of atom ``j``,
  then linear layers (the official ``TransformN2Head`` with ``PredictSPDHead``,
  ``PredictEdgeHead`` or ``Predict3DHead`` of ``MoleBlend/modules/moleblend_layers.py``).
* :class:`SymmetricPairFeatures`: a pair representation built from the blended encoder's final
  atom states, symmetric in the two atoms by construction, so the prediction for ``(i, j)`` is
  the prediction for ``(j, i)``; it feeds the pairwise weights of the denoising prediction.
* :func:`pair_mlp`: the per-relation classifier on a pair representation.
* :func:`pairwise_noise`: the equivariant noise prediction ``sum_j w_ij (r_i - r_j) / |r_i - r_j|``
  from per-pair scalar weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "OuterProductPairHead",
    "SymmetricPairFeatures",
    "pair_mlp",
    "pairwise_noise",
    "scalar_pair_head",
]

# Squared distances are floored so that two atoms on top of each other give a zero unit
# vector (and a finite gradient) instead of 0/0.
_MIN_SQUARED_DISTANCE = 1e-12


class OuterProductPairHead(nn.Module):
    """Outputs for ordered atom pairs from the outer product of two atom projections.

    ``r = LN(GELU(W_r h))`` and ``c = LN(GELU(W_c h))`` (``pair_channels`` wide, LayerNorm
    eps 1e-12), then ``out_ij = Linear(vec(r_i c_j^T))`` for the ``pair_channels ** 2`` products
    in row-major order; with ``inner_dim``, two linear layers without an activation between
    them (the official 3D head: ``Linear(1024, 256)`` then one ``Linear(256, 1)`` per
    coordinate). The head is not symmetric: ``(i, j)`` and ``(j, i)`` are two examples, as in
    the official code, whose targets may differ (the path from ``i`` to ``j`` runs the other
    way; the relative position changes sign). Linear weights start from N(0, 0.02) with zero
    biases, the official ``init_params``.

    Args:
        in_dim: Width ``D`` of the atom states.
        out_dim: Outputs per pair.
        pair_channels: Width of each projection (official ``d_hidden``: 32).
        inner_dim: Width of the optional hidden linear layer (official 3D head: 256).

    Shapes:
        ``node (B, Nmax, D)`` and index triples ``(M,)`` each -> ``(M, out_dim)``.
    """

    def __init__(
        self, in_dim: int, out_dim: int, pair_channels: int = 32, inner_dim: int | None = None
    ) -> None:
        super().__init__()
        if min(in_dim, out_dim, pair_channels) < 1 or (inner_dim is not None and inner_dim < 1):
            raise ValueError(
                f"widths must be positive: in_dim={in_dim}, out_dim={out_dim}, "
                f"pair_channels={pair_channels}, inner_dim={inner_dim}"
            )
        self.row = nn.Sequential(
            nn.Linear(in_dim, pair_channels), nn.GELU(), nn.LayerNorm(pair_channels, eps=1e-12)
        )
        self.col = nn.Sequential(
            nn.Linear(in_dim, pair_channels), nn.GELU(), nn.LayerNorm(pair_channels, eps=1e-12)
        )
        squared = pair_channels * pair_channels
        if inner_dim is None:
            self.out = nn.Sequential(nn.Linear(squared, out_dim))
        else:
            self.out = nn.Sequential(nn.Linear(squared, inner_dim), nn.Linear(inner_dim, out_dim))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, node: Tensor, graph_idx: Tensor, first: Tensor, second: Tensor) -> Tensor:
        """Outputs for the ordered pairs ``(node[graph_idx, first], node[graph_idx, second])``.

        Only the listed pairs are read, so padded positions (whatever they hold) never enter.
        """
        row, col = self.row(node), self.col(node)
        outer = row[graph_idx, first].unsqueeze(-1) * col[graph_idx, second].unsqueeze(-2)
        return self.out(outer.flatten(-2))


class SymmetricPairFeatures(nn.Module):
    """``p_ij = LayerNorm(a_i * b_j + a_j * b_i)`` with ``a = W_a h`` and ``b = W_b h``.

    The element-wise product of row and column projections of the atom states is MoleBLEND's
    outer-product pair representation; adding its transpose makes it symmetric.

    Args:
        in_dim: Width ``D`` of the atom states.
        out_dim: Width ``P`` of the pair representation.

    Shapes:
        ``node (B, Nmax, D)`` and index triples ``(M,)`` each -> ``(M, P)``.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.row = nn.Linear(in_dim, out_dim)
        self.col = nn.Linear(in_dim, out_dim)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, node: Tensor, graph_idx: Tensor, first: Tensor, second: Tensor) -> Tensor:
        """Pair features of the pairs ``(node[graph_idx, first], node[graph_idx, second])``.

        Only the listed pairs are read, so padded positions (whatever they hold) never enter.
        """
        # Project the B * Nmax atoms, then gather: a molecule has far more pairs than atoms.
        row, col = self.row(node), self.col(node)
        mixed = row[graph_idx, first] * col[graph_idx, second]
        mixed = mixed + row[graph_idx, second] * col[graph_idx, first]
        return self.norm(mixed)


def pair_mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    """``Linear(in, in) -> GELU -> Linear(in, out)``: a relation head on pair features."""
    return nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim))


def scalar_pair_head(in_dim: int, init_std: float = 0.02) -> nn.Sequential:
    """:func:`pair_mlp` to one weight per pair, its last layer drawn from N(0, ``init_std``).

    The noise prediction sums one weighted unit vector per neighbour, so with PyTorch's default
    initialisation its size at the first step would grow with the number of atoms; small
    initial weights start it near zero, the prediction of least squared error.
    """
    head = pair_mlp(in_dim, 1)
    nn.init.normal_(head[-1].weight, mean=0.0, std=init_std)
    nn.init.zeros_(head[-1].bias)
    return head


def pairwise_noise(
    pos: Tensor, weights: Tensor, graph_idx: Tensor, first: Tensor, second: Tensor
) -> Tensor:
    """Per-atom vectors ``e_i = sum_j w_ij (r_i - r_j) / |r_i - r_j|`` over the listed pairs.

    Each unordered pair ``{i, j}`` is listed once and acts on both atoms with opposite signs
    (a pairwise "force" with ``w_ij = w_ji``). The weights are invariant and the unit vectors
    rotate with the molecule, so the output is equivariant under rotations and invariant
    under translations by construction.

    Args:
        pos: ``(B, Nmax, 3)`` padded coordinates.
        weights: ``(M,)`` or ``(M, 1)`` weight per listed pair.
        graph_idx: ``(M,)`` molecule of each pair.
        first: ``(M,)`` one atom of each pair.
        second: ``(M,)`` the other atom.

    Returns:
        ``(B, Nmax, 3)``, zero at atoms in no listed pair (padding included).
    """
    diff = pos[graph_idx, first] - pos[graph_idx, second]
    length = diff.pow(2).sum(dim=-1, keepdim=True).clamp(min=_MIN_SQUARED_DISTANCE).sqrt()
    push = weights.reshape(-1, 1).to(diff.dtype) * (diff / length)
    out = torch.zeros_like(pos)
    out = out.index_put((graph_idx, first), push, accumulate=True)
    return out.index_put((graph_idx, second), -push, accumulate=True)

"""Pair heads of blend-then-predict: the outer-product head and the symmetric pair features
against their formulas, pairwise noise vs brute force."""

from __future__ import annotations

import torch
from torch.nn import Linear

from molssl.objectives.pair_heads import (
    OuterProductPairHead,
    SymmetricPairFeatures,
    pair_mlp,
    pairwise_noise,
    scalar_pair_head,
)
from tests.encoders.molecules_3d import fixed_rotation, nci_molecules


def test_outer_product_head_follows_the_official_formula() -> None:
    """``Linear(vec(r_i c_j^T))`` with ``r, c = LN(GELU(W h))`` (eps 1e-12), row-major."""
    torch.manual_seed(0)
    head = OuterProductPairHead(in_dim=6, out_dim=3, pair_channels=4, inner_dim=5).double()
    node = torch.randn(2, 4, 6, dtype=torch.float64)
    graph_idx = torch.tensor([0, 0, 1, 1])
    first, second = torch.tensor([0, 1, 2, 0]), torch.tensor([3, 2, 3, 1])
    out = head(node, graph_idx, first, second)
    assert out.shape == (4, 3)

    def projection(layers: torch.nn.Sequential, h: torch.Tensor) -> torch.Tensor:
        linear, _, norm = layers
        hidden = torch.nn.functional.gelu(h @ linear.weight.T + linear.bias)
        return torch.nn.functional.layer_norm(hidden, (4,), norm.weight, norm.bias, eps=1e-12)

    inner, last = head.out
    for k in range(4):
        r = projection(head.row, node[graph_idx[k], first[k]])
        c = projection(head.col, node[graph_idx[k], second[k]])
        products = torch.stack([r[a] * c[b] for a in range(4) for b in range(4)])
        expected = (products @ inner.weight.T + inner.bias) @ last.weight.T + last.bias
        torch.testing.assert_close(out[k], expected, rtol=1e-12, atol=1e-14)
    # Ordered pairs: (i, j) and (j, i) are different examples.
    assert not torch.allclose(out, head(node, graph_idx, second, first))
    # The official init_params: N(0, 0.02) weights, zero biases.
    weights = torch.cat([m.weight.flatten() for m in head.modules() if isinstance(m, Linear)])
    assert 0.015 < weights.std().item() < 0.025
    assert all(torch.count_nonzero(m.bias) == 0 for m in head.modules() if isinstance(m, Linear))


def test_pair_features_are_symmetric_and_follow_their_formula() -> None:
    torch.manual_seed(0)
    features = SymmetricPairFeatures(in_dim=6, out_dim=5).double()
    node = torch.randn(2, 4, 6, dtype=torch.float64)
    graph_idx = torch.tensor([0, 0, 1, 1])
    first, second = torch.tensor([0, 1, 2, 0]), torch.tensor([3, 2, 3, 1])
    forward = features(node, graph_idx, first, second)
    backward = features(node, graph_idx, second, first)
    torch.testing.assert_close(forward, backward, rtol=0, atol=1e-14)
    for k in range(4):
        a, b = node[graph_idx[k], first[k]], node[graph_idx[k], second[k]]
        mixed = features.row(a) * features.col(b) + features.row(b) * features.col(a)
        expected = torch.nn.functional.layer_norm(
            mixed, (5,), features.norm.weight, features.norm.bias
        )
        torch.testing.assert_close(forward[k], expected)


def test_heads_have_their_widths_and_a_small_noise_start() -> None:
    torch.manual_seed(1)
    assert pair_mlp(8, 3)(torch.randn(5, 8)).shape == (5, 3)
    head = scalar_pair_head(64)
    assert head[-1].weight.std().item() < 0.05 and torch.count_nonzero(head[-1].bias) == 0


def test_pairwise_noise_matches_brute_force_on_real_conformers() -> None:
    molecules = nci_molecules()[:3]
    sizes = [int(m.num_nodes) for m in molecules]
    width = max(sizes)
    pos = torch.zeros(3, width, 3, dtype=torch.float64)
    # Padding holds garbage: it must never be read.
    pos[:] = float("nan")
    pairs: list[tuple[int, int, int]] = []
    for b, (molecule, size) in enumerate(zip(molecules, sizes, strict=True)):
        pos[b, :size] = molecule.pos
        pairs += [(b, i, j) for i in range(size) for j in range(i + 1, size)]
    graph_idx, first, second = (torch.tensor(column) for column in zip(*pairs, strict=True))
    generator = torch.Generator().manual_seed(2)
    weights = torch.randn(len(pairs), generator=generator, dtype=torch.float64)

    out = pairwise_noise(pos, weights, graph_idx, first, second)

    expected = torch.zeros(3, width, 3, dtype=torch.float64)
    lookup = {pair: float(w) for pair, w in zip(pairs, weights, strict=True)}
    for b, size in enumerate(sizes):
        for i in range(size):
            for j in range(size):
                if i == j:
                    continue
                w = lookup[(b, min(i, j), max(i, j))]
                diff = pos[b, i] - pos[b, j]
                expected[b, i] += w * diff / diff.norm()
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    # Equal and opposite pair terms: no net push on any molecule.
    torch.testing.assert_close(out.sum(dim=1), torch.zeros(3, 3, dtype=torch.float64))
    # Equivariant under a rotation of every conformer.
    rotation = fixed_rotation()
    rotated = pairwise_noise(pos @ rotation.T, weights, graph_idx, first, second)
    for b, size in enumerate(sizes):
        torch.testing.assert_close(rotated[b, :size], out[b, :size] @ rotation.T)


def test_pairwise_noise_of_coincident_atoms_is_finite() -> None:
    pos = torch.zeros(1, 2, 3, requires_grad=True)
    weights = torch.ones(1, requires_grad=True)
    out = pairwise_noise(pos, weights, torch.tensor([0]), torch.tensor([0]), torch.tensor([1]))
    assert torch.equal(out, torch.zeros(1, 2, 3))
    out.sum().backward()
    assert torch.isfinite(pos.grad).all() and torch.isfinite(weights.grad).all()

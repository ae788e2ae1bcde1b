"""Biased pre-LN transformer: parity with a brute-force reference, padding, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from rdkit import Chem
from torch import Tensor

from molssl.encoders.padding import to_padded
from molssl.encoders.transformer import (
    BiasedSelfAttention,
    TransformerEncoder,
    TransformerLayer,
    build_attention_mask,
)
from tests.conftest import read_nci_smiles

HIDDEN = 16
HEADS = 4


def real_molecule_sizes(count: int) -> list[int]:
    """Heavy-atom counts of real NCI molecules of different sizes."""
    sizes = sorted({Chem.MolFromSmiles(s).GetNumAtoms() for s in read_nci_smiles(40)})
    return sizes[:: max(1, len(sizes) // count)][:count]


def reference_attention(attn: BiasedSelfAttention, x: Tensor, bias: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(d) + bias) v per head, written out with explicit matrices.

    Args:
        x: ``(N, D)`` one molecule without padding; bias: ``(H, N, N)``.
    """
    weight, b = attn.qkv.weight, attn.qkv.bias
    dim = x.size(1)
    heads = []
    for h in range(attn.num_heads):
        rows = slice(h * attn.head_dim, (h + 1) * attn.head_dim)
        q = x @ weight[rows].T + b[rows]
        k = x @ weight[dim:][rows].T + b[dim:][rows]
        v = x @ weight[2 * dim :][rows].T + b[2 * dim :][rows]
        logits = q @ k.T / math.sqrt(attn.head_dim) + bias[h]
        heads.append(torch.softmax(logits, dim=-1) @ v)
    return torch.cat(heads, dim=-1) @ attn.out_proj.weight.T + attn.out_proj.bias


def reference_layer(layer: TransformerLayer, x: Tensor, bias: Tensor) -> Tensor:
    x = x + reference_attention(layer.attn, layer.attn_norm(x), bias)
    return x + layer.ffn(layer.ffn_norm(x))


def make_padded_inputs(
    sizes: list[int], generator: torch.Generator, dtype: torch.dtype = torch.float64
) -> tuple[list[Tensor], list[Tensor], Tensor, Tensor, Tensor]:
    """Per-molecule inputs and biases, and their padded forms with garbage in the padding."""
    xs = [torch.randn(n, HIDDEN, generator=generator, dtype=dtype) for n in sizes]
    biases = [torch.randn(HEADS, n, n, generator=generator, dtype=dtype) for n in sizes]
    batch = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    x_pad, node_mask = to_padded(torch.cat(xs), batch)
    # Garbage at padded positions must not matter.
    x_pad = torch.where(node_mask.unsqueeze(-1), x_pad, 1e3)
    n_max = max(sizes)
    bias_pad = torch.full((len(sizes), HEADS, n_max, n_max), 7.0, dtype=dtype)
    for i, (n, bias) in enumerate(zip(sizes, biases, strict=True)):
        bias_pad[i, :, :n, :n] = bias
    return xs, biases, x_pad, bias_pad, node_mask


def test_layer_matches_brute_force_reference_on_padded_batch() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    sizes = real_molecule_sizes(4)
    assert len(set(sizes)) == 4
    layer = TransformerLayer(HIDDEN, HEADS, ffn_channels=24).double().eval()
    xs, biases, x_pad, bias_pad, node_mask = make_padded_inputs(sizes, generator)
    attn_mask = build_attention_mask(bias_pad, node_mask, x_pad.dtype)
    out = layer(x_pad, attn_mask, node_mask)
    for i, (x, bias) in enumerate(zip(xs, biases, strict=True)):
        n = x.size(0)
        expected = reference_layer(layer, x, bias)
        torch.testing.assert_close(out[i, :n], expected, rtol=1e-10, atol=1e-10)
        assert torch.all(out[i, n:] == 0)


def test_encoder_batched_equals_each_molecule_alone() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(2)
    sizes = real_molecule_sizes(5)
    encoder = TransformerEncoder(3, HIDDEN, HEADS, dropout=0.1, attention_dropout=0.1).eval()
    xs, biases, x_pad, bias_pad, node_mask = make_padded_inputs(sizes, generator, torch.float32)
    out = encoder(x_pad, bias_pad, node_mask)
    for i, (x, bias) in enumerate(zip(xs, biases, strict=True)):
        alone = encoder(x.unsqueeze(0), bias.unsqueeze(0))
        torch.testing.assert_close(out[i, : x.size(0)], alone[0], rtol=1e-5, atol=1e-5)


def test_bias_changes_attention_and_shared_bias_broadcasts() -> None:
    torch.manual_seed(0)
    encoder = TransformerEncoder(2, HIDDEN, HEADS).eval()
    x = torch.randn(2, 6, HIDDEN)
    bias = torch.randn(1, 1, 6, 6)
    plain = encoder(x)
    biased = encoder(x, bias)
    expanded = encoder(x, bias.expand(2, HEADS, 6, 6))
    assert not torch.allclose(plain, biased)
    torch.testing.assert_close(biased, expanded)


def test_fully_padded_rows_give_finite_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    encoder = TransformerEncoder(2, HIDDEN, HEADS)
    x = torch.randn(3, 5, HIDDEN, requires_grad=True)
    node_mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    bias = torch.randn(3, HEADS, 5, 5, requires_grad=True)
    out = encoder(x, bias, node_mask)
    assert torch.isfinite(out).all()
    assert torch.all(out[~node_mask] == 0)
    out.pow(2).sum().backward()
    assert x.grad is not None and bias.grad is not None
    assert torch.isfinite(x.grad).all() and torch.isfinite(bias.grad).all()
    # Padded inputs receive no gradient: nothing flows out of padding.
    assert torch.all(x.grad[~node_mask] == 0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_with_empty_molecule_stays_finite(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    encoder = TransformerEncoder(2, HIDDEN, HEADS).to(dtype).eval()
    x = (torch.randn(2, 5, HIDDEN) * 50).to(dtype)
    node_mask = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    bias = torch.full((2, HEADS, 5, 5), -200.0, dtype=dtype)
    mask = build_attention_mask(bias, node_mask, dtype)
    assert mask is not None and torch.isfinite(mask).all()
    assert torch.isfinite(encoder(x, bias, node_mask)).all()


def test_training_mode_dropout_is_active() -> None:
    torch.manual_seed(0)
    encoder = TransformerEncoder(2, HIDDEN, HEADS, dropout=0.5, attention_dropout=0.5).train()
    x = torch.randn(2, 6, HIDDEN)
    assert not torch.allclose(encoder(x), encoder(x))


def test_bad_shapes_raise_clear_errors() -> None:
    encoder = TransformerEncoder(1, HIDDEN, HEADS)
    x = torch.randn(2, 6, HIDDEN)
    with pytest.raises(ValueError, match="node_mask"):
        encoder(x, node_mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="attn_bias"):
        encoder(x, torch.zeros(2, HEADS, 5, 5))
    with pytest.raises(ValueError, match="heads"):
        encoder(x, torch.zeros(2, 3, 6, 6))
    with pytest.raises(ValueError, match=r"\(B, N, D\)"):
        encoder(torch.randn(6, HIDDEN))
    with pytest.raises(ValueError, match="divisible"):
        TransformerEncoder(1, 10, 4)
    with pytest.raises(ValueError, match="num_layers"):
        TransformerEncoder(0, HIDDEN, HEADS)

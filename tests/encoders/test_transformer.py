"""Biased transformer, pre- and post-LN: parity with a brute-force reference, padding,
drop-path, bad input."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from rdkit import Chem
from torch import Tensor

from molssl.encoders.padding import to_padded
from molssl.encoders.transformer import (
    BiasedSelfAttention,
    DropPath,
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


def reference_norm(norm: torch.nn.LayerNorm, x: Tensor) -> Tensor:
    """LayerNorm written out: ``(x - mean) / sqrt(var + eps) * weight + bias`` per row."""
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def reference_ffn(layer: TransformerLayer, x: Tensor) -> Tensor:
    first, second = layer.ffn[0], layer.ffn[3]
    hidden = torch.nn.functional.gelu(x @ first.weight.T + first.bias)
    return hidden @ second.weight.T + second.bias


def reference_layer(
    layer: TransformerLayer,
    x: Tensor,
    bias: Tensor,
    keep: tuple[float, float] = (1.0, 1.0),
) -> Tensor:
    """One block written out; ``keep`` scales each branch (0: dropped, 1 / (1 - p): kept)."""
    attn_norm = functools.partial(reference_norm, layer.attn_norm)
    ffn_norm = functools.partial(reference_norm, layer.ffn_norm)
    if layer.norm_first:  # x + attn(LN(x)), then x + FFN(LN(x))
        x = x + keep[0] * reference_attention(layer.attn, attn_norm(x), bias)
        return x + keep[1] * reference_ffn(layer, ffn_norm(x))
    # Post-LN, as MoleBLEND: LN(x + attn(x)), then LN(x + FFN(x)).
    x = attn_norm(x + keep[0] * reference_attention(layer.attn, x, bias))
    return ffn_norm(x + keep[1] * reference_ffn(layer, x))


def randomise_norms(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Give every LayerNorm a non-trivial scale and shift, so that where it applies matters."""
    with torch.no_grad():
        for norm in module.modules():
            if isinstance(norm, torch.nn.LayerNorm):
                norm.weight.copy_(1 + 0.3 * torch.randn(norm.weight.shape, generator=generator))
                norm.bias.copy_(0.3 * torch.randn(norm.bias.shape, generator=generator))


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


@pytest.mark.parametrize("norm_first", [True, False])
def test_layer_matches_brute_force_reference_on_padded_batch(norm_first: bool) -> None:
    """Pre-LN ``x + f(LN(x))`` and post-LN ``LN(x + f(x))`` blocks against the formulas."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    sizes = real_molecule_sizes(4)
    assert len(set(sizes)) == 4
    layer = TransformerLayer(HIDDEN, HEADS, ffn_channels=24, norm_first=norm_first)
    layer = layer.double().eval()
    randomise_norms(layer, generator)
    xs, biases, x_pad, bias_pad, node_mask = make_padded_inputs(sizes, generator)
    attn_mask = build_attention_mask(bias_pad, node_mask, x_pad.dtype)
    out = layer(x_pad, attn_mask, node_mask)
    for i, (x, bias) in enumerate(zip(xs, biases, strict=True)):
        n = x.size(0)
        expected = reference_layer(layer, x, bias)
        torch.testing.assert_close(out[i, :n], expected, rtol=1e-10, atol=1e-10)
        assert torch.all(out[i, n:] == 0)


@pytest.mark.parametrize("norm_first", [True, False])
def test_encoder_matches_brute_force_stack(norm_first: bool) -> None:
    """Pre-LN stacks end with a LayerNorm (Graphormer), post-LN stacks do not (MoleBLEND);
    the default is the pre-LN stack, so Graphormer's encoder is what it was."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(5)
    sizes = real_molecule_sizes(3)
    encoder = TransformerEncoder(3, HIDDEN, HEADS, ffn_channels=24, norm_first=norm_first)
    encoder = encoder.double().eval()
    randomise_norms(encoder, generator)
    xs, biases, x_pad, bias_pad, node_mask = make_padded_inputs(sizes, generator)
    out = encoder(x_pad, bias_pad, node_mask)
    assert isinstance(encoder.final_norm, torch.nn.LayerNorm) == norm_first
    for i, (x, bias) in enumerate(zip(xs, biases, strict=True)):
        expected = x
        for layer in encoder.layers:
            assert layer.norm_first == norm_first
            expected = reference_layer(layer, expected, bias)
        if norm_first:
            expected = reference_norm(encoder.final_norm, expected)
        torch.testing.assert_close(out[i, : x.size(0)], expected, rtol=1e-10, atol=1e-10)
        assert torch.all(out[i, x.size(0) :] == 0)
    # The default is the pre-LN stack: the same weights give the same outputs.
    default = TransformerEncoder(3, HIDDEN, HEADS, ffn_channels=24).double().eval()
    if norm_first:
        default.load_state_dict(encoder.state_dict())
        torch.testing.assert_close(default(x_pad, bias_pad, node_mask), out)
    else:
        assert "final_norm.weight" in default.state_dict()
        assert "final_norm.weight" not in encoder.state_dict()


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


def test_drop_path_off_is_the_identity() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 5, HIDDEN)
    assert DropPath(0.0).train()(x) is x
    assert DropPath(0.4).eval()(x) is x
    # No dropout and no drop-path: training mode computes exactly what evaluation does.
    encoder = TransformerEncoder(3, HIDDEN, HEADS, drop_path=0.0).double()
    x = x.double()
    assert torch.equal(encoder.train()(x), encoder.eval()(x))


def test_drop_path_keeps_or_drops_whole_molecules_with_the_right_expectation() -> None:
    torch.manual_seed(1)
    x = torch.randn(1, 6, HIDDEN, dtype=torch.float64).expand(20_000, -1, -1)
    out = DropPath(0.3).train()(x)
    kept = (out != 0).all(dim=(1, 2))
    dropped = (out == 0).all(dim=(1, 2))
    assert bool((kept | dropped).all()), "a molecule is kept or dropped as a whole"
    torch.testing.assert_close(out[kept], x[kept] / 0.7)
    # Kept with probability 0.7 (binomial s.e. 0.0032), and E[out] = x.
    assert abs(kept.double().mean().item() - 0.7) < 0.015
    torch.testing.assert_close(out.mean(dim=0), x[0], atol=0.05, rtol=0.0)


@pytest.mark.parametrize("norm_first", [True, False])
def test_drop_path_layer_is_stochastic_depth_of_both_branches(norm_first: bool) -> None:
    """Each molecule's output is one of the four brute-force outcomes (each branch kept and
    scaled by 1 / (1 - p), or skipped), the branches drawn independently; in a post-LN block
    the branch is dropped before the residual addition and its LayerNorm, as officially
    (``LN(x + drop(attn(x)))``)."""
    torch.manual_seed(2)
    p = 0.5
    layer = TransformerLayer(HIDDEN, HEADS, drop_path=p, norm_first=norm_first).double().train()
    randomise_norms(layer, torch.Generator().manual_seed(3))
    num = 400
    x = torch.randn(num, 5, HIDDEN, dtype=torch.float64)
    bias = torch.randn(HEADS, 5, 5, dtype=torch.float64)
    out = layer(x, bias.expand(num, -1, -1, -1))
    outcomes = []
    scales = {False: 0.0, True: 1 / (1 - p)}
    with torch.no_grad():
        for b in range(num):
            matches = []
            for keep_attn in (False, True):
                for keep_ffn in (False, True):
                    keep = (scales[keep_attn], scales[keep_ffn])
                    candidate = reference_layer(layer, x[b], bias, keep)
                    if torch.allclose(out[b], candidate, atol=1e-10, rtol=1e-10):
                        matches.append((keep_attn, keep_ffn))
            assert len(matches) == 1, (b, matches)
            outcomes.append(matches[0])
    counts = torch.tensor(outcomes, dtype=torch.float64)
    # Each branch kept half the time (s.e. 0.025), independently of the other.
    assert torch.allclose(
        counts.mean(dim=0), torch.tensor([0.5, 0.5], dtype=torch.float64), atol=0.1
    )
    both = (counts[:, 0] * counts[:, 1]).mean().item()
    assert abs(both - 0.25) < 0.08


def test_drop_path_rate_grows_linearly_over_the_blocks() -> None:
    encoder = TransformerEncoder(12, HIDDEN, HEADS, drop_path=0.1)
    rates = [layer.drop_path.p for layer in encoder.layers]
    assert rates == pytest.approx([0.1 * i / 11 for i in range(12)])
    assert TransformerEncoder(1, HIDDEN, HEADS, drop_path=0.1).layers[0].drop_path.p == 0.0
    with pytest.raises(ValueError, match="drop_path"):
        TransformerEncoder(2, HIDDEN, HEADS, drop_path=1.0)
    with pytest.raises(ValueError, match="drop-path"):
        DropPath(-0.1)


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

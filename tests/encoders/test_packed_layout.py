"""Packed tokens and size-bucketed attention give what the padded transformer gives."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch_geometric.data import Batch

import molssl.encoders.packed_layout as packed_layout
from molssl.chem.conformers import ConformerOptions, embed_conformers
from molssl.chem.features import mol_from_smiles, mol_to_data
from molssl.encoders.blend import MoleBlendTransformer
from molssl.encoders.graphormer import Graphormer
from molssl.encoders.packed_layout import PackedLayout, size_buckets
from molssl.encoders.transformer import DropPath, TransformerEncoder
from tests.conftest import read_nci_smiles
from tests.encoders.molecules_3d import TINY_BLEND

HIDDEN, HEADS = 16, 4


def brute_force_buckets(lengths: list[int], max_buckets: int, overhead: float) -> float:
    """Least cost over every split of the size-sorted molecules into at most ``max_buckets``."""
    sizes = sorted(lengths, reverse=True)
    best = float("inf")
    for k in range(1, max_buckets + 1):
        for cuts in itertools.combinations(range(1, len(sizes)), k - 1):
            bounds = [0, *cuts, len(sizes)]
            cost = sum(
                (bounds[i + 1] - bounds[i]) * sizes[bounds[i]] ** 2 + overhead for i in range(k)
            )
            best = min(best, cost)
    return best


@pytest.mark.parametrize("overhead", [0.0, 50.0, 400.0, 1e9])
def test_size_buckets_are_a_least_cost_partition(overhead: float) -> None:
    lengths = [12, 30, 7, 7, 45, 22, 13, 30, 9]
    buckets = size_buckets(lengths, 3, overhead)
    assert sorted(i for bucket in buckets for i in bucket) == list(range(len(lengths)))
    assert len(buckets) <= 3
    for bucket in buckets:
        assert [lengths[i] for i in bucket] == sorted((lengths[i] for i in bucket), reverse=True)
    cost = sum(len(b) * lengths[b[0]] ** 2 + overhead for b in buckets)
    assert cost == pytest.approx(brute_force_buckets(lengths, 3, overhead))
    assert size_buckets(lengths, 1, 0.0) == [sorted(range(9), key=lambda i: (-lengths[i], i))]


def padded_batch(sizes: list[int], dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    """Random ``x (B, N, D)``, bias ``(B, H, N, N)`` and prefix node mask for these sizes."""
    torch.manual_seed(0)
    largest = max(sizes)
    mask = torch.arange(largest)[None, :] < torch.tensor(sizes)[:, None]
    x = torch.randn(len(sizes), largest, HIDDEN, dtype=dtype)
    bias = torch.randn(len(sizes), HEADS, largest, largest, dtype=dtype)
    return x, bias, mask


def test_pack_and_pad_round_trip() -> None:
    x, _, mask = padded_batch([3, 7, 1, 5])
    layout = PackedLayout(mask)
    packed = layout.pack(x)
    torch.testing.assert_close(packed, x[mask])
    assert torch.equal(layout.pad(packed), x * mask[..., None])
    assert layout.groups.tolist() == [0] * 3 + [1] * 7 + [2] + [3] * 5


def run_encoder(
    encoder: TransformerEncoder, x: torch.Tensor, bias: torch.Tensor | None, mask: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
    encoder.zero_grad()
    leaf = x.clone().requires_grad_(True)
    bias_leaf = None if bias is None else bias.clone().requires_grad_(True)
    out = encoder(leaf, bias_leaf, mask)
    (out.sin() * mask[..., None]).sum().backward()
    grads = {name: p.grad for name, p in encoder.named_parameters()}
    grads["x"] = leaf.grad
    grads["bias"] = None if bias_leaf is None else bias_leaf.grad
    return out.detach(), grads


@pytest.mark.parametrize("buckets", [1, 4])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("norm_first", [True, False], ids=["pre-LN", "post-LN"])
def test_packed_encoder_equals_padded(
    monkeypatch: pytest.MonkeyPatch, buckets: int, bias: bool, norm_first: bool
) -> None:
    monkeypatch.setattr(packed_layout, "BUCKET_OVERHEAD_PAIR_HEADS", 0.0)
    x, attn_bias, mask = padded_batch([5, 17, 2, 9, 9, 30, 1])
    encoder = TransformerEncoder(
        3, HIDDEN, HEADS, attention_dropout=0.3, dropout=0.2, norm_first=norm_first
    ).double()
    encoder.eval()  # dropout off: the draws differ between layouts, the functions do not
    encoder.max_buckets = buckets
    attn_bias = attn_bias if bias else None
    encoder.packed = False
    plain, plain_grads = run_encoder(encoder, x, attn_bias, mask)
    encoder.packed = True
    packed, packed_grads = run_encoder(encoder, x, attn_bias, mask)
    torch.testing.assert_close(packed, plain, rtol=1e-12, atol=1e-12)
    assert (packed[~mask] == 0).all()
    for name, grad in plain_grads.items():
        if grad is None:
            assert packed_grads[name] is None
            continue
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-10, atol=1e-12, msg=name)


def test_buckets_are_used_and_cover_every_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packed_layout, "BUCKET_OVERHEAD_PAIR_HEADS", 0.0)
    _, _, mask = padded_batch([5, 17, 2, 9, 9, 30, 1])
    layout = PackedLayout(mask, max_buckets=3, num_heads=HEADS)
    assert len(layout.buckets) == 3
    rows = torch.cat([bucket.rows for bucket in layout.buckets])
    assert sorted(rows.tolist()) == list(range(int(mask.sum())))
    assert [b.num_nodes for b in layout.buckets] == [30, 17, 9]
    # A mask that is not "real tokens first" gets one padded block.
    holes = mask.clone()
    holes[1, 0] = False
    assert not PackedLayout(holes, max_buckets=3, num_heads=HEADS).buckets


def test_packed_drop_path_draws_as_the_padded_one() -> None:
    _, _, mask = padded_batch([3, 7, 1, 5])
    x = torch.randn(*mask.shape, HIDDEN, dtype=torch.float64)
    layout = PackedLayout(mask)
    drop = DropPath(0.5).train()
    torch.manual_seed(3)
    padded = drop(x)
    torch.manual_seed(3)
    packed = drop(layout.pack(x), layout.groups, layout.batch_size)
    torch.testing.assert_close(packed, padded[mask])


def test_packed_training_step_with_drop_path_equals_padded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No dropout, so the only draws are drop-path's, made alike in both layouts.
    monkeypatch.setattr(packed_layout, "BUCKET_OVERHEAD_PAIR_HEADS", 0.0)
    x, attn_bias, mask = padded_batch([5, 17, 2, 9])
    encoder = TransformerEncoder(4, HIDDEN, HEADS, drop_path=0.5, norm_first=False).double()
    encoder.train()
    outs = []
    for packed in (False, True):
        encoder.packed = packed
        torch.manual_seed(7)
        outs.append(run_encoder(encoder, x, attn_bias, mask)[0])
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-12, atol=1e-12)


@pytest.fixture(scope="module")
def graphs() -> Batch:
    smiles = read_nci_smiles(40)
    picked = [smiles[i] for i in (0, 3, 8, 15, 18, 25, 33)]
    return Batch.from_data_list([mol_to_data(mol_from_smiles(s)) for s in picked])


def test_graphormer_packed_equals_padded(monkeypatch: pytest.MonkeyPatch, graphs: Batch) -> None:
    monkeypatch.setattr(packed_layout, "BUCKET_OVERHEAD_PAIR_HEADS", 0.0)
    torch.manual_seed(0)
    model = Graphormer(num_layers=2, num_heads=4, hidden_channels=16, max_hops=3).double().eval()
    results = []
    for packed in (False, True):
        model.transformer.packed = packed
        model.zero_grad()
        out = model(graphs)
        (out.node.sin().sum() + out.graph.sum()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((out, grads))
    (plain, plain_grads), (packed_out, packed_grads) = results
    torch.testing.assert_close(packed_out.node, plain.node, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(packed_out.graph, plain.graph, rtol=1e-12, atol=1e-12)
    assert packed_grads.keys() == plain_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-10, atol=1e-12, msg=name)


def test_moleblend_packed_equals_padded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packed_layout, "BUCKET_OVERHEAD_PAIR_HEADS", 0.0)
    smiles = read_nci_smiles(20)
    options = ConformerOptions(num_conformers=1, seed=7)
    batch = Batch.from_data_list(
        [
            mol_to_data(embed_conformers(mol_from_smiles(smiles[i]), options), conf_id=0)
            for i in (0, 3, 8, 15)
        ]
    )
    batch.pos = batch.pos.double()
    torch.manual_seed(0)
    model = MoleBlendTransformer(**TINY_BLEND, relation_mode="all").double().eval()
    outs = []
    for packed in (False, True):
        model.transformer.packed = packed
        outs.append(model(batch))
    torch.testing.assert_close(outs[1].node, outs[0].node, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(outs[1].graph, outs[0].graph, rtol=1e-12, atol=1e-12)

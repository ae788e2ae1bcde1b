"""The chunked edge path of the ET layers equals the plain path (outputs and gradients)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch, Data

import molssl.encoders.et_edges as et_edges
from molssl.encoders.activations import ShiftedSoftplus
from molssl.encoders.et import EquivariantTransformer
from molssl.encoders.et_edges import ChunkedEdgeAttention, activation_backward
from tests.encoders.molecules_3d import as_batch, nci_molecules

TINY = {"hidden_channels": 32, "num_layers": 2, "num_heads": 4, "num_rbf": 16}


@pytest.fixture(scope="module")
def batch() -> Batch:
    return as_batch(nci_molecules(), torch.float64)


@pytest.fixture
def always_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Take the chunked path at test sizes (it is skipped for small edge tensors)."""
    monkeypatch.setattr(et_edges, "MIN_CHUNKED_FLOATS", 0)


def perturbed(**kwargs: object) -> EquivariantTransformer:
    """A float64 encoder whose biases are non-zero too, so that no term hides."""
    torch.manual_seed(0)
    encoder = EquivariantTransformer(**{**TINY, **kwargs}).double()
    with torch.no_grad():
        for parameter in encoder.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return encoder


def outputs_and_grads(
    encoder: EquivariantTransformer, batch: Batch, chunk: int | None
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    encoder.pair_edges = False  # the per-edge path is the reference (pairs: test_et_pairs.py)
    for layer in encoder.attention_layers:
        layer.edge_chunk = chunk
    encoder.zero_grad()
    out = encoder(batch)
    # Weights that differ per output entry, so that every gradient path is exercised.
    loss = out.node.sin().sum() + (out.vec * out.vec.detach().cos()).sum()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in encoder.named_parameters() if p.grad is not None}
    return out.node.detach(), out.vec.detach(), grads


VARIANTS = [
    {},
    {"distance_influence": "keys"},
    {"distance_influence": "values"},
    {"distance_influence": "none"},
    {"vector_cutoff": True},
    {"activation": "ssp", "attn_activation": "tanh"},
    {"activation": "tanh", "attn_activation": "sigmoid", "rbf_trainable": False},
    {"activation": "gelu", "layernorm_on_vec": "whitened", "rbf_type": "gauss"},
    {"cutoff_lower": 0.8},
]


@pytest.mark.usefixtures("always_chunk")
@pytest.mark.parametrize("kwargs", VARIANTS)
def test_chunked_equals_plain(batch: Batch, kwargs: dict[str, object]) -> None:
    encoder = perturbed(**kwargs)
    node, vec, grads = outputs_and_grads(encoder, batch, None)
    # 7 edges per chunk: many chunks, and a last one shorter than the others.
    node_c, vec_c, grads_c = outputs_and_grads(encoder, batch, 7)
    torch.testing.assert_close(node_c, node, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(vec_c, vec, rtol=1e-12, atol=1e-12)
    assert grads_c.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grads_c[name], grad, rtol=1e-10, atol=1e-12, msg=name)


def count_calls(monkeypatch: pytest.MonkeyPatch, function: type) -> list[int]:
    """A list that grows by one at every ``function.apply`` (an autograd Function) call."""
    calls: list[int] = []
    original = function.apply

    def counting(*args: object) -> object:
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(function, "apply", counting)
    return calls


def force_training_step(encoder: EquivariantTransformer, batch: Batch) -> None:
    """Forward and backward through the forces (the gradient of the output by the positions),
    as force training does: a second-order pass."""
    moved = batch.clone()
    moved.pos = batch.pos.clone().requires_grad_(True)
    out = encoder(moved)
    (forces,) = torch.autograd.grad(out.node.sum(), moved.pos, create_graph=True)
    forces.pow(2).sum().backward()


def test_path_choice(batch: Batch, monkeypatch: pytest.MonkeyPatch) -> None:
    encoder = perturbed()
    calls = count_calls(monkeypatch, ChunkedEdgeAttention)
    encoder(batch)
    assert not calls, "small edge tensors take the plain path"
    monkeypatch.setattr(et_edges, "MIN_CHUNKED_FLOATS", 0)
    encoder(batch)
    assert len(calls) == TINY["num_layers"]
    # Force training differentiates the forces again: the plain path, which supports it.
    calls.clear()
    force_training_step(encoder, batch)
    assert not calls
    encoder.attention_layers[0].edge_chunk = None
    encoder.attention_layers[1].edge_chunk = None
    encoder(batch)
    assert not calls, "edge_chunk=None turns the chunked path off"


@pytest.mark.usefixtures("always_chunk")
def test_chunked_inference_and_one_molecule() -> None:
    encoder = perturbed()
    single = nci_molecules()[0]
    data = Data(z=single.z, pos=single.pos)
    with torch.no_grad():
        chunked = encoder(data)
        encoder.pair_edges = False
        for layer in encoder.attention_layers:
            layer.edge_chunk = None
        plain = encoder(data)
    torch.testing.assert_close(chunked.node, plain.node, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chunked.vec, plain.vec, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "module",
    [nn.SiLU(), nn.Tanh(), nn.Sigmoid(), ShiftedSoftplus(), nn.GELU(), nn.GELU("tanh"), nn.ELU()],
    ids=lambda m: type(m).__name__ + getattr(m, "approximate", ""),
)
def test_activation_backward_matches_autograd(module: nn.Module) -> None:
    torch.manual_seed(0)
    pre = torch.randn(50, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(50, dtype=torch.float64)
    act = module(pre)
    (expected,) = torch.autograd.grad(act, pre, grad)
    result = activation_backward(module, pre.detach(), act.detach(), grad)
    torch.testing.assert_close(result, expected, rtol=1e-12, atol=1e-14)
    out = torch.empty(50, dtype=torch.float64)
    assert activation_backward(module, pre.detach(), act.detach(), grad, out=out) is out
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-14)


def test_chunk_sizes() -> None:
    assert et_edges.chunk_edges(256) * 3 * 256 <= et_edges.CHUNK_FLOATS
    assert et_edges.chunk_edges(1 << 20) == 32
    assert not et_edges.worth_chunking(1000, 64)
    assert et_edges.worth_chunking(16_000, 256)

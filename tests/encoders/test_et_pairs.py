"""The pair layout of the ET's edges (``molssl.encoders.et_pairs``) equals the per-edge path:
outputs and every parameter gradient, in float64, on real molecules."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch, Data

from molssl.encoders.et_pairs import EdgePairs, PairedEdgeAttention, edge_pairs
from tests.encoders.molecules_3d import as_batch, nci_molecules
from tests.encoders.test_et_edges import VARIANTS, count_calls, force_training_step, perturbed


@pytest.fixture(scope="module")
def batch() -> Batch:
    return as_batch(nci_molecules(), torch.float64)


def outputs_and_grads(
    encoder: torch.nn.Module, batch: Batch | Data, pairs: bool
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    encoder.pair_edges = pairs
    for layer in encoder.attention_layers:
        layer.edge_chunk = None  # the per-edge path, not chunks, is the reference
    encoder.zero_grad()
    out = encoder(batch)
    # Weights that differ per output entry, so that every gradient path is exercised.
    loss = out.node.sin().sum() + (out.vec * out.vec.detach().cos()).sum() + out.graph.sum()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in encoder.named_parameters() if p.grad is not None}
    return out.node.detach(), out.vec.detach(), grads


def assert_same(encoder: torch.nn.Module, batch: Batch | Data) -> None:
    node, vec, grads = outputs_and_grads(encoder, batch, pairs=False)
    node_p, vec_p, grads_p = outputs_and_grads(encoder, batch, pairs=True)
    # Float64 sums in another order: round-off only, relative to each tensor's scale (the
    # perturbed weights make some gradients ~1e4, whose small entries carry its round-off).
    for got, expected, name in [(node_p, node, "node"), (vec_p, vec, "vec")] + [
        (grads_p[name], grad, name) for name, grad in grads.items()
    ]:
        scale = float(expected.abs().max())
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12 * scale, msg=name)
    assert grads_p.keys() == grads.keys()


@pytest.mark.parametrize("kwargs", VARIANTS)
def test_pairs_equal_per_edge(batch: Batch, kwargs: dict[str, object]) -> None:
    assert_same(perturbed(**kwargs), batch)


def test_pairs_with_a_neighbour_cap(batch: Batch) -> None:
    """A cap keeps some edges whose reverse it drops: their dummy reverses send nothing."""
    encoder = perturbed(max_num_neighbors=5)
    with pytest.warns(UserWarning, match="dropped"):
        assert_same(encoder, batch)
    assert encoder.dropped_neighbour_edges > 0


def test_pairs_one_molecule_inference() -> None:
    encoder = perturbed()
    single = nci_molecules()[0]
    data = Data(z=single.z, pos=single.pos)
    with torch.no_grad():
        encoder.pair_edges = True
        paired = encoder(data)
        encoder.pair_edges = False
        plain = encoder(data)
    torch.testing.assert_close(paired.node, plain.node, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(paired.vec, plain.vec, rtol=1e-11, atol=1e-11)


def test_edge_pairs_layout() -> None:
    """Every directed edge once: the forward half, then its reverses in the same order; self-loops
    set aside; an edge without its reverse gets a dummy one summed into the spare row."""
    edge_index = torch.tensor([[0, 1, 2, 1, 0, 2, 1], [1, 0, 1, 2, 0, 0, 1]])
    # Pairs {0,1} and {1,2} both ways, self-loops 0 and 1, and 2 -> 0 without 0 -> 2.
    distances = torch.arange(7, dtype=torch.float64) + 1.0
    unit = torch.randn(7, 3, dtype=torch.float64)
    pairs = edge_pairs(edge_index, distances, unit, num_atoms=3)
    assert pairs.self_loops and pairs.num_pairs == 3
    half = pairs.num_pairs
    torch.testing.assert_close(pairs.source[half:], pairs.target[:half], rtol=0, atol=0)
    torch.testing.assert_close(pairs.target[half:], pairs.source[:half], rtol=0, atol=0)
    torch.testing.assert_close(pairs.unit[half:], -pairs.unit[:half], rtol=0, atol=0)
    directed = set(zip(pairs.source[:half].tolist(), pairs.target[:half].tolist(), strict=True))
    assert directed == {(1, 0), (2, 1), (2, 0)}
    assert pairs.scatter_target is not None and pairs.rows == 4
    dummy = pairs.scatter_target[half:] == 3
    assert dummy.sum() == 1
    assert pairs.target[half:][dummy].item() == 2 and pairs.source[half:][dummy].item() == 0


def test_path_choice(batch: Batch, monkeypatch: pytest.MonkeyPatch) -> None:
    encoder = perturbed()
    calls = count_calls(monkeypatch, PairedEdgeAttention)
    encoder(batch)
    assert len(calls) == len(encoder.attention_layers), "the CPU default at small sizes"
    calls.clear()
    # Force training differentiates the forces again: the per-edge path (pairs are first-order).
    force_training_step(encoder, batch)
    assert not calls
    encoder.pair_edges = False
    encoder(batch)
    assert not calls, "pair_edges=False turns the pair path off"


def test_direction_matrices_are_the_scatter_of_unit_vectors() -> None:
    """``S @ g`` sums ``g_e * unit_e`` into each edge's row and component, ``S^T`` is its
    transpose: compared with dense matrices written entry by entry, a spare row included."""
    torch.manual_seed(0)
    index = torch.tensor([2, 0, 3, 2, 1, 0, 2, 3])  # row 3 stands for the spare row
    unit = torch.nn.functional.normalize(torch.randn(8, 3, dtype=torch.float64), dim=1)
    pairs = EdgePairs(
        source=index.flip(0), target=index, scatter_target=None, distances=torch.ones(4),
        unit=unit, num_atoms=4, self_loops=False,
    )  # fmt: skip
    dense = torch.zeros(12, 8, dtype=torch.float64)
    for edge, row in enumerate(index.tolist()):
        for c in range(3):
            dense[4 * c + row, edge] = unit[edge, c]  # component-major: 4 rows per component
    direction_sum, direction_gather = pairs.direction_matrices()
    torch.testing.assert_close(direction_sum.to_dense(), dense, rtol=0, atol=0)
    torch.testing.assert_close(direction_gather.to_dense(), dense.T, rtol=0, atol=0)
    assert pairs.direction_matrices()[0] is direction_sum, "built once per batch"
    g = torch.randn(8, 5, dtype=torch.float64)
    expected = torch.zeros(3, 4, 5, dtype=torch.float64)
    for c in range(3):
        expected[c].index_add_(0, index, unit[:, c : c + 1] * g)
    torch.testing.assert_close((direction_sum @ g).view(3, 4, 5), expected, rtol=1e-14, atol=1e-14)


def test_pairs_under_cpu_bf16_autocast() -> None:
    """``precision="bf16-mixed"`` on the CPU: the pair path runs its edges in float32 (they
    failed on mixed dtypes before) and agrees with the per-edge path to bfloat16 precision."""
    batch = as_batch(nci_molecules(), torch.float32)
    encoder = perturbed().float()
    results = {}
    for pairs in (True, False):
        encoder.pair_edges = pairs
        encoder.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = encoder(batch)
        out.node.float().square().sum().backward()
        results[pairs] = out.node.float().detach(), encoder.attention_layers[0].q_proj.weight.grad
    (node_p, grad_p), (node, grad) = results[True], results[False]
    torch.testing.assert_close(node_p, node, rtol=0.05, atol=0.05 * float(node.abs().max()))
    torch.testing.assert_close(grad_p, grad, rtol=0.1, atol=0.1 * float(grad.abs().max()))

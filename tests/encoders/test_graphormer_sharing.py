"""UniCorn's masked and unmasked 2D passes share the Graphormer's graph relations and attention
bias (:meth:`Graphormer.shared_inputs`): same losses and gradients as two separate passes, one
relation computation, and nothing served to a pass it does not fit."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Batch

import molssl.encoders.graphormer as graphormer_module
from molssl.modules import PretrainModule
from molssl.objectives import CoordDenoise, CrossModalInfoNCE, FragmentMask
from tests.modules.pretrain_fixtures import (
    prepare_small_cache,
    small_datamodule,
    tiny_et,
    tiny_graphormer,
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_small_cache(tmp_path_factory.getbasetemp() / "molssl_cache")


def unicorn() -> PretrainModule:
    torch.manual_seed(0)
    module = PretrainModule(
        objectives=[FragmentMask(), CoordDenoise(), CrossModalInfoNCE(proj_dim=8)],
        encoder_3d=tiny_et(),
        encoder_2d=tiny_graphormer(),
    )
    return module.eval()  # dropout off: the two runs see the same computation


@pytest.fixture(scope="module")
def batches(cache_dir: Path) -> list[Batch]:
    data = small_datamodule(cache_dir)
    data.set_views(unicorn().pipeline_views())
    data.setup("fit")
    loader = iter(data.train_dataloader())
    return [next(loader), next(loader)]


def count_relations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = graphormer_module.dense_graph_relations

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(graphormer_module, "dense_graph_relations", counting)
    return calls


def loss_and_grads(module: PretrainModule, batch: Batch) -> tuple[torch.Tensor, dict]:
    module.zero_grad()
    total, _ = module.objective_results(batch)
    total.backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}
    return total.detach(), grads


def test_shared_bias_gives_the_same_step(
    batches: list[Batch], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = unicorn()
    batch = batches[0]
    assert batch.atom_mask.any(), "the fragment mask must be on for two 2D passes"
    calls = count_relations(monkeypatch)
    module.encoder_2d.share_graph_bias = False
    separate, separate_grads = loss_and_grads(module, batch)
    assert len(calls) == 2
    calls.clear()
    module.encoder_2d.share_graph_bias = True
    shared, shared_grads = loss_and_grads(module, batch)
    assert len(calls) == 1, "the unmasked pass reuses the masked pass's relations"
    # The same operations, the bias's gradient summed before (not after) its backward: float32
    # round-off only.
    torch.testing.assert_close(shared, separate, rtol=1e-5, atol=1e-6)
    assert shared_grads.keys() == separate_grads.keys()
    assert any(name.startswith("encoder_2d.attention_bias") for name in shared_grads)
    for name, grad in separate_grads.items():
        scale = float(grad.abs().max())
        torch.testing.assert_close(
            shared_grads[name], grad, rtol=1e-4, atol=1e-5 * scale + 1e-8, msg=name
        )
    assert module.encoder_2d._shared is None, "the scope forgets on leaving"


def test_scope_serves_only_the_same_graph(batches: list[Batch]) -> None:
    encoder = tiny_graphormer().eval()
    first, second = batches
    with torch.no_grad():
        expected = encoder(second).graph
        with encoder.shared_inputs():
            encoder(first)
            assert encoder._shared.serves(copy.copy(first)), "a shallow copy shares the graph"
            # An equal copy of the graph tensors is not the same graph: recomputed.
            copied = copy.copy(first)
            copied.edge_index = first.edge_index.clone()
            assert not encoder._shared.serves(copied)
            got = encoder(second)
    torch.testing.assert_close(got.graph, expected, rtol=1e-6, atol=1e-6)


def test_no_grad_pass_does_not_serve_a_grad_pass(batches: list[Batch]) -> None:
    encoder = tiny_graphormer().eval()
    batch = batches[0]
    with encoder.shared_inputs():
        with torch.no_grad():
            encoder(batch)
        graph = encoder(batch).graph
        # Weights per entry: a plain sum of a layer-normalised output is constant, and its
        # gradient only round-off.
        weights = torch.randn(graph.shape, generator=torch.Generator().manual_seed(0))
        (graph * weights.to(graph.dtype)).sum().backward()
    bias_grads = [p.grad for p in encoder.attention_bias.parameters()]
    assert all(grad is not None for grad in bias_grads)
    assert any(float(grad.abs().sum()) > 0 for grad in bias_grads)

"""molssl's ET equals the official TorchMD-NET ET with the same weights and edges.

Skipped unless TorchMD-NET is importable: an installed ``torchmdnet`` or a source checkout
named by ``TORCHMD_NET_SRC`` (see ``benchmarks/torchmd_reference.py``); it is never a
dependency of molssl.
"""

from __future__ import annotations

from types import ModuleType

import pytest
import torch

import molssl.encoders.et_edges as et_edges
from molssl.encoders.et import EquivariantTransformer
from tests.benchmarks.scripts import load_script
from tests.encoders.molecules_3d import as_batch, nci_molecules


@pytest.fixture(scope="module")
def reference() -> ModuleType:
    module = load_script("torchmd_reference.py", "torchmd_reference")
    try:
        module.load_torchmd_et()
    except ImportError as error:
        pytest.skip(str(error))
    return module


@pytest.mark.parametrize("chunked", [False, True], ids=["plain", "chunked"])
@pytest.mark.parametrize("kwargs", [{}, {"vector_cutoff": True, "distance_influence": "keys"}])
def test_same_outputs_and_gradients_as_torchmd_net(
    reference: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    chunked: bool,
    kwargs: dict[str, object],
) -> None:
    if chunked:
        monkeypatch.setattr(et_edges, "MIN_CHUNKED_FLOATS", 0)
    batch = as_batch(nci_molecules(), torch.float64)
    torch.manual_seed(0)
    # No neighbour cap: TorchMD-NET's edges are symmetric, and so are these.
    encoder = EquivariantTransformer(
        hidden_channels=32, num_layers=2, num_heads=4, num_rbf=16, max_num_neighbors=None, **kwargs
    ).double()
    with torch.no_grad():
        for parameter in encoder.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    official = reference.reference_like(encoder)
    ours = encoder(batch)
    x, vec = reference.reference_outputs(official, batch)
    torch.testing.assert_close(ours.node, x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.vec, vec, rtol=1e-12, atol=1e-12)
    for node, vectors in ((ours.node, ours.vec), (x, vec)):
        (node.sin().sum() + vectors.pow(2).sum()).backward()
    theirs = dict(official.named_parameters())
    for name, parameter in encoder.named_parameters():
        torch.testing.assert_close(
            parameter.grad, theirs[name].grad.to(parameter.dtype), rtol=1e-10, atol=1e-12
        )

"""``compile_layers=True`` (torch.compile of the ET layers) gives the eager outputs and grads."""

from __future__ import annotations

import pytest
import torch

from molssl.encoders.et import EquivariantTransformer
from tests.encoders.molecules_3d import as_batch, nci_molecules

TINY = {"hidden_channels": 16, "num_layers": 2, "num_heads": 2, "num_rbf": 8}


@pytest.mark.slow
def test_compiled_layers_equal_eager() -> None:
    batch = as_batch(nci_molecules(), torch.float64)
    torch.manual_seed(0)
    compiled = EquivariantTransformer(**TINY, compile_layers=True).double()
    eager = EquivariantTransformer(**TINY).double()
    eager.load_state_dict(compiled.state_dict())
    results = []
    for encoder in (eager, compiled):
        out = encoder(batch)
        (out.node.sin().sum() + out.vec.pow(2).sum()).backward()
        grads = {name: p.grad for name, p in encoder.named_parameters()}
        results.append((out.node.detach(), out.vec.detach(), grads))
    (node, vec, grads), (node_c, vec_c, grads_c) = results
    torch.testing.assert_close(node_c, node, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(vec_c, vec, rtol=1e-10, atol=1e-10)
    for name, grad in grads.items():
        torch.testing.assert_close(grads_c[name], grad, rtol=1e-9, atol=1e-10, msg=name)
    # Force training (a double backward) runs the layers eagerly and still works.
    moved = batch.clone()
    moved.pos = batch.pos.clone().requires_grad_(True)
    energy = compiled(moved).node.sum()
    (forces,) = torch.autograd.grad(energy, moved.pos, create_graph=True)
    forces.pow(2).sum().backward()

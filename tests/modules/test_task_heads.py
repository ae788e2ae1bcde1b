"""The equivariant task head: TorchMD-NET's multi-output form (shared gated blocks), the
per-task form it replaced, and one task being the same network in both, on real molecules."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.utils import scatter

from molssl.encoders import EquivariantTransformer
from molssl.encoders.heads import EquivariantScalarHead
from molssl.modules.task_heads import EquivariantScalarsHead
from tests.encoders.molecules_3d import as_batch, fixed_rotation, nci_molecules


@pytest.fixture(scope="module")
def encoded() -> tuple[Batch, EquivariantTransformer]:
    torch.manual_seed(0)
    encoder = EquivariantTransformer(hidden_channels=16, num_layers=2, num_heads=2, num_rbf=8)
    return as_batch(nci_molecules(), torch.float64), encoder.double()


def test_tasks_share_the_gated_blocks(encoded: tuple[Batch, EquivariantTransformer]) -> None:
    """One network whose last block gives the 3 outputs, pooled per molecule: equal to running
    its two blocks by hand and summing the atoms' scalars."""
    batch, encoder = encoded
    head = EquivariantScalarsHead(16, num_tasks=3, output_init="xavier").double()
    assert len(head.heads) == 1 and head.heads[0].output_network[1].out_channels == 3
    output = encoder(batch)
    x, v = output.node, output.vec
    for block in head.heads[0].output_network:
        x, v = block(x, v)
    expected = scatter(x, batch.batch, dim=0, dim_size=batch.num_graphs, reduce="sum")
    got = head(output, batch)
    assert got.shape == (batch.num_graphs, 3)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_outputs_are_rotation_invariant(encoded: tuple[Batch, EquivariantTransformer]) -> None:
    batch, encoder = encoded
    head = EquivariantScalarsHead(16, num_tasks=3, pool="mean", output_init="xavier").double()
    rotated = batch.clone()
    rotated.pos = batch.pos @ fixed_rotation(torch.float64).T
    before, after = head(encoder(batch), batch), head(encoder(rotated), rotated)
    torch.testing.assert_close(after, before, rtol=1e-10, atol=1e-10)


def test_one_task_is_the_same_network_in_both_forms(
    encoded: tuple[Batch, EquivariantTransformer],
) -> None:
    """Same parameter names (checkpoints of single-task heads load either way), same outputs."""
    batch, encoder = encoded
    shared = EquivariantScalarsHead(16, num_tasks=1, output_init="xavier").double()
    per_task = EquivariantScalarsHead(16, num_tasks=1, per_task=True).double()
    assert shared.state_dict().keys() == per_task.state_dict().keys()
    per_task.load_state_dict(shared.state_dict())
    output = encoder(batch)
    torch.testing.assert_close(per_task(output, batch), shared(output, batch), rtol=0, atol=0)


def test_per_task_form_has_one_network_per_task(
    encoded: tuple[Batch, EquivariantTransformer],
) -> None:
    batch, encoder = encoded
    head = EquivariantScalarsHead(16, num_tasks=3, per_task=True, output_init="xavier").double()
    assert len(head.heads) == 3
    output = encoder(batch)
    columns = [single(output, batch) for single in head.heads]
    torch.testing.assert_close(head(output, batch), torch.stack(columns, dim=-1), rtol=0, atol=0)


@pytest.mark.parametrize("per_task", [False, True])
def test_zero_start_outputs_zero_then_learns(
    encoded: tuple[Batch, EquivariantTransformer], per_task: bool
) -> None:
    """``output_init="zero"`` (the default): exactly 0 for every molecule and task at the start
    (a fine-tuned model starts as the training mean); one optimiser step on a real target makes
    the outputs non-zero and differ between molecules, and a second reaches the first block."""
    batch, encoder = encoded
    torch.manual_seed(0)
    head = EquivariantScalarsHead(16, num_tasks=3, per_task=per_task).double()
    with torch.no_grad():  # the head's training only
        output = encoder(batch)
    start = head(output, batch)
    assert torch.count_nonzero(start) == 0  # exact: a zero layer times anything is 0
    target = torch.stack([batch.pos.norm(dim=-1).new_tensor(range(batch.num_graphs))] * 3, -1)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    first_block = [p.detach().clone() for p in head.heads[0].output_network[0].parameters()]
    for _ in range(2):
        optimizer.zero_grad()
        (head(output, batch) - target).square().mean().backward()
        optimizer.step()
    after = head(output, batch).detach()
    assert after.abs().min() > 1e-6 and after[:, 0].std() > 1e-6
    now = head.heads[0].output_network[0].parameters()
    assert any((p - q).abs().max() > 1e-8 for p, q in zip(now, first_block, strict=True))


def test_output_init_must_be_known() -> None:
    with pytest.raises(ValueError, match="output_init"):
        EquivariantScalarsHead(16, num_tasks=2, output_init="small")


def test_atomref_needs_one_output() -> None:
    with pytest.raises(ValueError, match="outputs=1"):
        EquivariantScalarHead(16, atomref=[0.0] * 10, outputs=2)

"""LazyHead: built at the first input's width, trainable by an earlier optimiser, loadable."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from molssl.encoders.base import EncoderOutput
from molssl.encoders.heads import EquivariantVectorHead
from molssl.objectives.lazy_head import LazyHead, input_width


def mlp(width: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(width, width), nn.SiLU(), nn.LayerNorm(width), nn.Linear(width, 3)
    )


def grows_with_width(width: int) -> nn.Module:
    return nn.Sequential(*[nn.Linear(width, width) for _ in range(width // 4)])


def vector_output(num_atoms: int, width: int) -> EncoderOutput:
    return EncoderOutput(
        node=torch.randn(num_atoms, width),
        graph=torch.zeros(1, width),
        vec=torch.randn(num_atoms, 3, width),
    )


def test_builds_at_first_width_with_the_factory_initialisation() -> None:
    head = LazyHead(mlp)
    assert not head.is_materialized
    assert all(isinstance(p, nn.parameter.UninitializedParameter) for p in head.parameters())
    torch.manual_seed(0)
    out = head(torch.randn(5, 6))
    assert out.shape == (5, 3)
    assert head.is_materialized and int(head.in_dim) == 6
    assert head.module[0].weight.shape == (6, 6)
    # Same initial values as the factory itself with the same seed after the input draw.
    torch.manual_seed(0)
    torch.randn(5, 6)
    reference = mlp(6)
    for built, expected in zip(head.parameters(), reference.parameters(), strict=True):
        assert torch.equal(built, expected)


def test_an_optimiser_made_before_the_first_call_trains_the_head() -> None:
    head = LazyHead(mlp)
    optimizer = torch.optim.AdamW(head.parameters(), lr=0.05)
    inputs, targets = torch.randn(32, 4), torch.randn(32, 3)
    losses = []
    for _ in range(30):
        loss = (head(inputs) - targets).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_first_call_under_inference_mode_leaves_trainable_parameters() -> None:
    head = LazyHead(mlp)
    with torch.inference_mode():
        head(torch.randn(2, 5))
    assert not any(p.is_inference() for p in head.parameters())
    head(torch.randn(2, 5)).sum().backward()
    assert all(p.grad is not None for p in head.parameters())


def test_equivariant_vector_head_width_from_encoder_output() -> None:
    head = LazyHead(EquivariantVectorHead)
    assert head(vector_output(7, 12)).shape == (7, 3)
    assert int(head.in_dim) == 12
    with pytest.raises(ValueError, match="width 12"):
        head.materialize(16)


def test_state_dict_round_trip_into_a_fresh_lazy_head() -> None:
    head = LazyHead(EquivariantVectorHead)
    output = vector_output(4, 10)
    expected = head(output)
    fresh = LazyHead(EquivariantVectorHead)
    fresh.load_state_dict(head.state_dict())
    assert fresh.is_materialized
    assert torch.equal(fresh(output), expected)
    sized = LazyHead(EquivariantVectorHead, in_dim=10)
    sized.load_state_dict(head.state_dict())
    assert torch.equal(sized(output), expected)


def test_saving_before_the_first_call_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="run one batch"):
        LazyHead(mlp).state_dict()


def test_dtype_follows_the_module() -> None:
    head = LazyHead(mlp).double()
    out = head(torch.randn(3, 4, dtype=torch.float64))
    assert out.dtype == torch.float64
    assert all(p.dtype == torch.float64 for p in head.parameters())


def test_pickle_and_deepcopy_before_and_after() -> None:
    head = LazyHead(mlp)
    clone = pickle.loads(pickle.dumps(head))
    assert not clone.is_materialized
    assert clone(torch.randn(2, 5)).shape == (2, 3)
    head(torch.randn(2, 7))
    copied = copy.deepcopy(head)
    x = torch.randn(3, 7)
    assert torch.equal(copied(x), head(x))


def test_width_dependent_factories_are_refused() -> None:
    head = LazyHead(grows_with_width)
    with pytest.raises(ValueError, match="width-independent"):
        head(torch.randn(2, 16))


def test_input_width_and_bad_inputs() -> None:
    assert input_width(torch.zeros(3, 9)) == 9
    assert input_width(vector_output(2, 5)) == 5
    with pytest.raises(TypeError, match="input width"):
        input_width([1, 2, 3])
    with pytest.raises(ValueError, match="positive"):
        LazyHead(mlp, in_dim=0)

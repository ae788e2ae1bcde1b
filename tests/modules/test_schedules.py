"""The warm-up + cosine learning-rate factor, against its closed form and through LambdaLR."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from molssl.modules.schedules import WarmupCosineSchedule, warmup_cosine_scheduler


def reference_factor(step: int, warmup: int, total: int, floor: float) -> float:
    """The schedule written out independently, one branch per phase."""
    if step < warmup:
        return (step + 1) / warmup
    if step >= total:
        return floor
    angle = math.pi * (step - warmup) / (total - warmup)
    return floor + (1 - floor) * (1 + math.cos(angle)) / 2


@pytest.mark.parametrize(("warmup", "total", "floor"), [(10, 100, 0.0), (7, 50, 0.1), (0, 20, 0.0)])
def test_factor_matches_closed_form(warmup: int, total: int, floor: float) -> None:
    schedule = WarmupCosineSchedule(warmup, total, floor)
    for step in range(total + 5):
        assert schedule(step) == pytest.approx(reference_factor(step, warmup, total, floor))


def test_warmup_is_linear_and_reaches_the_peak() -> None:
    schedule = WarmupCosineSchedule(warmup_steps=10, total_steps=100)
    values = [schedule(step) for step in range(10)]
    increments = [b - a for a, b in itertools.pairwise(values)]
    assert increments == pytest.approx([0.1] * 9)
    assert values[0] == pytest.approx(0.1)  # the first step already learns
    assert schedule(9) == pytest.approx(1.0)
    assert schedule(10) == pytest.approx(1.0)


def test_cosine_decays_monotonically_to_the_floor() -> None:
    schedule = WarmupCosineSchedule(warmup_steps=5, total_steps=45, min_lr_ratio=0.2)
    decay = [schedule(step) for step in range(5, 46)]
    assert all(b < a for a, b in itertools.pairwise(decay))
    assert schedule(25) == pytest.approx(0.6)  # halfway: the mean of peak and floor
    assert schedule(45) == pytest.approx(0.2)
    assert schedule(10_000) == pytest.approx(0.2)


def test_no_decay_window_drops_to_the_floor_after_warmup() -> None:
    schedule = WarmupCosineSchedule(warmup_steps=4, total_steps=4, min_lr_ratio=0.5)
    assert [schedule(step) for step in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 0.5, 0.5])


@pytest.mark.parametrize(
    ("warmup", "total", "floor", "message"),
    [(-1, 10, 0.0, "warmup_steps"), (10, 5, 0.0, "total_steps"), (1, 10, 1.5, "min_lr_ratio")],
)
def test_bad_settings_are_rejected(warmup: int, total: int, floor: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WarmupCosineSchedule(warmup, total, floor)


def test_scheduler_sets_the_learning_rate_per_step() -> None:
    parameter = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([parameter], lr=1e-3)
    scheduler = warmup_cosine_scheduler(optimizer, warmup_steps=3, total_steps=9, min_lr_ratio=0.1)
    seen = []
    for _ in range(12):
        seen.append(optimizer.param_groups[0]["lr"])
        parameter.grad = torch.ones_like(parameter)
        optimizer.step()
        scheduler.step()
    expected = [1e-3 * reference_factor(step, 3, 9, 0.1) for step in range(12)]
    assert seen == pytest.approx(expected)


def test_scheduler_state_round_trips() -> None:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=1.0)
    scheduler = warmup_cosine_scheduler(optimizer, warmup_steps=2, total_steps=10)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    restored_optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    restored = warmup_cosine_scheduler(restored_optimizer, warmup_steps=2, total_steps=10)
    restored.load_state_dict(scheduler.state_dict())
    restored_optimizer.param_groups[0]["lr"] = restored.get_last_lr()[0]
    restored_optimizer.step()
    restored.step()
    optimizer.step()
    scheduler.step()
    assert restored.get_last_lr() == pytest.approx(scheduler.get_last_lr())

"""Learning-rate schedule of pre-training: linear warm-up, then cosine decay to a floor.

UniCorn (Table 8) and its lineage (Coord, Frad) warm AdamW up linearly over 10k steps to the
peak learning rate, then follow a cosine down over the rest of the run. The schedule here is a
multiplicative factor of the peak, for :class:`torch.optim.lr_scheduler.LambdaLR` stepped once
per optimiser step::

    step < warmup:          (step + 1) / warmup
    warmup <= step < total: min + (1 - min) * (1 + cos(pi * (step - warmup) / (total - warmup))) / 2
    step >= total:          min

where ``min`` is ``min_lr_ratio``. The first optimiser step already has a non-zero learning
rate (``1 / warmup`` of the peak), the peak is reached at the last warm-up step and held for
the first decay step, and the floor is reached exactly at ``total``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["WarmupCosineSchedule", "warmup_cosine_scheduler"]


@dataclass(frozen=True)
class WarmupCosineSchedule:
    """Factor of the peak learning rate at a given optimiser step (see the module docstring).

    A dataclass rather than a lambda so that the scheduler it drives can be pickled and its
    settings appear in the scheduler's ``state_dict``.

    Args:
        warmup_steps: Steps of linear warm-up (0: start at the peak).
        total_steps: Step at which the cosine reaches ``min_lr_ratio``; must be
            ``>= warmup_steps``.
        min_lr_ratio: Floor of the factor after the decay, in ``[0, 1]``.
    """

    warmup_steps: int
    total_steps: int
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.total_steps < self.warmup_steps:
            raise ValueError(
                f"total_steps ({self.total_steps}) must be >= warmup_steps ({self.warmup_steps})"
            )
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if step >= self.total_steps:
            return self.min_lr_ratio
        progress = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    total_steps: int,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """A per-step :class:`LambdaLR` following :class:`WarmupCosineSchedule`.

    Args:
        optimizer: Optimiser whose parameter groups hold the peak learning rate.
        warmup_steps: Steps of linear warm-up.
        total_steps: Step at which the learning rate reaches ``min_lr_ratio`` of the peak.
        min_lr_ratio: Floor of the learning rate as a fraction of the peak.
    """
    return LambdaLR(optimizer, WarmupCosineSchedule(warmup_steps, total_steps, min_lr_ratio))

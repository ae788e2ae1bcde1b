"""Losses of fine-tuning over labelled entries only (NaN targets are missing labels)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["masked_bce", "masked_mse"]


def _masked_mean(values: Tensor, labelled: Tensor) -> Tensor:
    # A batch without any label gives 0 that is still tied to the graph (zero gradients).
    total = torch.where(labelled, values, torch.zeros_like(values)).sum()
    return total / labelled.sum().clamp(min=1)


def masked_bce(logits: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy with logits, averaged over the non-NaN entries of ``target``.

    Args:
        logits: ``(B, T)`` raw scores.
        target: ``(B, T)`` labels in {0, 1}, NaN where missing.
    """
    labelled = ~torch.isnan(target)
    filled = torch.where(labelled, target, torch.zeros_like(target))
    losses = F.binary_cross_entropy_with_logits(logits, filled, reduction="none")
    return _masked_mean(losses, labelled)


def masked_mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error averaged over the non-NaN entries of ``target``."""
    labelled = ~torch.isnan(target)
    diff = torch.where(labelled, pred - torch.nan_to_num(target), torch.zeros_like(pred))
    return _masked_mean(diff * diff, labelled)

"""AdamW parameter groups and the cosine horizon shared by pre-training and fine-tuning.

:class:`CosineAdamWModule` is the common base of
:class:`~molssl.modules.pretrain.PretrainModule` and
:class:`~molssl.modules.finetune_optim.FinetuneOptimization`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from torch import nn

__all__ = [
    "NO_DECAY_MODULES",
    "CosineAdamWModule",
    "check_adamw_settings",
    "cosine_horizon",
    "decay_parameter_groups",
]

#: Modules whose parameters (normalisation scales and shifts) get no weight decay.
NO_DECAY_MODULES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


def check_adamw_settings(
    lr: float,
    betas: Sequence[float],
    weight_decay: float,
    warmup_steps: int,
    max_steps: int | None,
) -> None:
    """Checks the AdamW and warm-up settings common to pre-training and fine-tuning.

    Raises:
        ValueError: Naming the first setting out of range.
    """
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr}")
    if len(betas) != 2 or not all(0.0 <= beta < 1.0 for beta in betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {tuple(betas)}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1 or None, got {max_steps}")


def decay_parameter_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups of ``module``'s trainable parameters.

    Biases and the parameters of normalisation layers (:data:`NO_DECAY_MODULES`) get no weight
    decay: decaying them only pulls activations towards zero. With ``weight_decay == 0`` there
    is one group.
    """
    trainable = [p for p in module.parameters() if p.requires_grad]
    if weight_decay == 0.0:
        return [{"params": trainable, "weight_decay": 0.0}]
    exempt: set[int] = set()
    for child in module.modules():
        for name, parameter in child.named_parameters(recurse=False):
            if name.endswith("bias") or isinstance(child, NO_DECAY_MODULES):
                exempt.add(id(parameter))
    return [
        {"params": [p for p in trainable if id(p) not in exempt], "weight_decay": weight_decay},
        {"params": [p for p in trainable if id(p) in exempt], "weight_decay": 0.0},
    ]


def cosine_horizon(max_steps: int | None, trainer: Trainer) -> int:
    """Optimiser step at which the cosine decay reaches its floor.

    ``max_steps`` when given, else the run's length as the trainer estimates it.

    Raises:
        ValueError: Neither is bounded.
    """
    if max_steps is not None:
        return max_steps
    estimated = trainer.estimated_stepping_batches
    if not math.isfinite(estimated):
        raise ValueError(
            "the run's length is unbounded, so the cosine decay has no horizon: set "
            "trainer.max_epochs or trainer.max_steps, or model.init_args.max_steps"
        )
    return int(estimated)


class CosineAdamWModule(LightningModule):
    """A ``LightningModule`` whose AdamW groups and cosine horizon follow its settings.

    Subclasses set ``weight_decay`` (float) and ``max_steps`` (int or ``None``) in their
    ``__init__`` and build the optimiser and schedule in ``configure_optimizers``.
    """

    weight_decay: float
    max_steps: int | None

    def parameter_groups(self) -> list[dict[str, Any]]:
        """AdamW parameter groups: with weight decay, and without (biases, normalisation)."""
        return decay_parameter_groups(self, self.weight_decay)

    def schedule_horizon(self) -> int:
        """Step at which the cosine reaches its floor: ``max_steps``, else the run's length."""
        return cosine_horizon(self.max_steps, self.trainer)

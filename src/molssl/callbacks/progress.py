"""``StepProgressBar``: Lightning's progress bar with the global step and molecules per second.

Lightning's bar counts the batches of the current epoch; a pre-training run of 1.5M steps in
epochs of arbitrary length needs the step it is at out of how many, and its speed in molecules
(:class:`~molssl.callbacks.throughput.MoleculeThroughput`)::

    Epoch 3:  41%|████      | 7/17 [00:01<00:01, 6.5it/s, step=58/850, mol/s=210, train/loss=0.84]

The total is ``trainer.max_steps``, or for a run bounded by epochs the number of optimiser
steps Lightning estimates for it.
"""

from __future__ import annotations

import math
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.trainer.states import TrainerFn

from molssl.callbacks.throughput import THROUGHPUT_KEY

__all__ = ["StepProgressBar"]


class StepProgressBar(TQDMProgressBar):
    """TQDM progress bar showing ``step=<global step>/<total>`` and ``mol/s`` while training."""

    def __init__(self, refresh_rate: int = 1, leave: bool = False) -> None:
        super().__init__(refresh_rate=refresh_rate, leave=leave)
        self._total_steps: int | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Fixes the total number of steps of the run."""
        super().on_train_start(trainer, pl_module)
        total = trainer.max_steps
        if total is None or total < 0:
            estimate = trainer.estimated_stepping_batches
            total = int(estimate) if math.isfinite(estimate) else -1
        self._total_steps = total if total > 0 else None

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """The step first, then molecules per second, then Lightning's items."""
        items = dict(super().get_metrics(trainer, pl_module))
        rate = items.pop(THROUGHPUT_KEY, None)
        if trainer.state.fn != TrainerFn.FITTING:
            return items
        step = f"{trainer.global_step}"
        if self._total_steps is not None:
            step += f"/{self._total_steps}"
        shown: dict[str, Any] = {"step": step}
        if rate is not None:
            shown["mol/s"] = f"{float(rate):.0f}"
        return {**shown, **items}

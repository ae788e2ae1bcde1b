"""``LogCadence``: a few training log points per epoch however short the epoch.

Lightning logs every 50 steps unless told otherwise. A FreeSolv fine-tune has 17 batches per
epoch: in 3 epochs that is one point on the training curve. When the run leaves
``trainer.log_every_n_steps`` unset, ``molssl fit`` adds this callback, which sets it, once the
epoch length is known, to a quarter of an epoch (at least 1, at most Lightning's 50), so that
every epoch contributes at least four points. A value the user sets is never changed.
"""

from __future__ import annotations

import math
import warnings

from lightning.pytorch import Callback, LightningModule, Trainer

__all__ = ["LogCadence", "steps_between_logs"]

_LIGHTNING_DEFAULT = 50
_POINTS_PER_EPOCH = 4


def steps_between_logs(batches_per_epoch: float, default: int = _LIGHTNING_DEFAULT) -> int:
    """Logging interval giving :data:`_POINTS_PER_EPOCH` points per epoch, within [1, default]."""
    if not math.isfinite(batches_per_epoch) or batches_per_epoch <= 0:
        return default
    return max(1, min(default, int(batches_per_epoch) // _POINTS_PER_EPOCH))


class LogCadence(Callback):
    """Sets ``trainer.log_every_n_steps`` from the epoch length (see the module docstring)."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Lightning's "fewer batches than the logging interval" warning no longer applies."""
        warnings.filterwarnings(
            "ignore", message=r"The number of training batches \(\d+\) is smaller than"
        )

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Sets the interval from the number of training batches per epoch."""
        trainer.log_every_n_steps = steps_between_logs(trainer.num_training_batches)

"""Optimiser and learning-rate schedules of fine-tuning (paper Appendix C.3, Tables 9-12).

The paper's fine-tuning tables use three schedules, all after a linear warm-up counted in
optimiser steps:

- ``"cosine"``: decay to ``min_lr`` over ``max_steps`` (QM9: 10k warm-up, cosine cycle 300k;
  MD22: cosine over 50 epochs);
- ``"plateau"``: ``ReduceLROnPlateau`` on ``val/loss`` per validation epoch, factor 0.8,
  patience 30, floor 1e-7 (MD17, as TorchMD-NET);
- ``"constant"``: the peak learning rate after warm-up (a MoleculeNet grid point without a
  schedule).

AdamW's weight decay skips biases and normalisation layers, as in pre-training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_warn

from molssl.modules.optimization import CosineAdamWModule, check_adamw_settings
from molssl.modules.schedules import warmup_cosine_scheduler

__all__ = ["SCHEDULES", "FinetuneOptimization", "Schedule"]

Schedule = Literal["cosine", "plateau", "constant"]
#: Learning-rate schedules of fine-tuning.
SCHEDULES: tuple[str, ...] = ("cosine", "plateau", "constant")
#: The metric ``ReduceLROnPlateau`` watches.
PLATEAU_MONITOR = "val/loss"


class FinetuneOptimization(CosineAdamWModule):
    """A LightningModule base owning AdamW and the fine-tuning schedules.

    Subclasses call :meth:`configure_optimization` in ``__init__``. Settings:

    Args (of :meth:`configure_optimization`):
        lr: Peak learning rate.
        betas: AdamW's betas.
        weight_decay: Decoupled weight decay (not on biases and normalisation layers).
        schedule: ``"cosine"``, ``"plateau"`` or ``"constant"`` (see the module docstring).
        warmup_steps: Optimiser steps of linear warm-up from ``lr / warmup_steps`` to ``lr``.
        max_steps: Cosine horizon in optimiser steps; ``None`` takes the run's length.
        min_lr: Floor of the cosine and of the plateau reductions.
        plateau_factor: Multiplier of each plateau reduction.
        plateau_patience: Validation epochs without improvement before a reduction.
        encoder_lr_scale: The learning rate of the subclass's ``encoder`` as a fraction of
            ``lr``; it scales the whole schedule of those parameters.
    """

    def configure_optimization(
        self,
        lr: float,
        betas: Sequence[float],
        weight_decay: float,
        schedule: str,
        warmup_steps: int,
        max_steps: int | None,
        min_lr: float,
        plateau_factor: float,
        plateau_patience: int,
        encoder_lr_scale: float = 1.0,
    ) -> None:
        """Checks and stores the optimiser settings.

        Raises:
            ValueError: Naming the first setting out of range.
        """
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        check_adamw_settings(lr, betas, weight_decay, warmup_steps, max_steps)
        if not 0.0 <= min_lr <= lr:
            raise ValueError(f"min_lr must be in [0, lr={lr}], got {min_lr}")
        if not 0.0 < plateau_factor < 1.0:
            raise ValueError(f"plateau_factor must be in (0, 1), got {plateau_factor}")
        if plateau_patience < 0:
            raise ValueError(f"plateau_patience must be >= 0, got {plateau_patience}")
        if not (math.isfinite(encoder_lr_scale) and encoder_lr_scale > 0):
            raise ValueError(
                f"encoder_lr_scale must be a finite number > 0, got {encoder_lr_scale}"
            )
        self.encoder_lr_scale = float(encoder_lr_scale)
        self.lr = float(lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.weight_decay = float(weight_decay)
        self.schedule = schedule
        self.warmup_steps = int(warmup_steps)
        self.max_steps = None if max_steps is None else int(max_steps)
        self.min_lr = float(min_lr)
        self.plateau_factor = float(plateau_factor)
        self.plateau_patience = int(plateau_patience)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """AdamW groups; with ``encoder_lr_scale != 1`` the ``encoder``'s get ``lr * scale``.

        Each group carries its ``lr_scale`` so that the plateau warm-up scales it too.
        """
        groups = super().parameter_groups()
        if self.encoder_lr_scale == 1.0:
            return groups
        encoder_ids = {id(parameter) for parameter in self.encoder.parameters()}
        split: list[dict[str, Any]] = []
        for group in groups:
            for in_encoder, scale in ((True, self.encoder_lr_scale), (False, 1.0)):
                params = [p for p in group["params"] if (id(p) in encoder_ids) == in_encoder]
                if params:
                    split.append(
                        {**group, "params": params, "lr": self.lr * scale, "lr_scale": scale}
                    )
        return split

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW and the per-step (cosine, constant) or per-epoch (plateau) schedule."""
        optimizer = torch.optim.AdamW(self.parameter_groups(), lr=self.lr, betas=self.betas)
        if self.schedule == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer,
                mode="min",
                factor=self.plateau_factor,
                patience=self.plateau_patience,
                min_lr=self.min_lr,
            )
            return {
                "optimizer": optimizer,
                "lr_scheduler": {
                    "scheduler": scheduler,
                    "monitor": PLATEAU_MONITOR,
                    "interval": "epoch",
                    "frequency": 1,
                },
            }
        if self.schedule == "constant":
            total, floor = self.warmup_steps, 1.0
        else:
            total, floor = self.schedule_horizon(), self.min_lr / self.lr
            if total < self.warmup_steps and not self.trainer.fast_dev_run:
                rank_zero_warn(
                    f"the run ({total} steps) is shorter than the warm-up ({self.warmup_steps} "
                    "steps): the learning rate never reaches its peak; lower "
                    "model.init_args.warmup_steps",
                    category=UserWarning,
                )
        scheduler = warmup_cosine_scheduler(
            optimizer, self.warmup_steps, max(total, self.warmup_steps), floor
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """The plateau schedule's linear warm-up, set per step (as TorchMD-NET does).

        ``ReduceLROnPlateau`` owns the learning rate after the warm-up; during it, each step's
        learning rate is ``lr * (step + 1) / warmup_steps`` (times a group's ``lr_scale``).
        """
        if self.schedule != "plateau" or self.trainer.global_step >= self.warmup_steps:
            return
        factor = (self.trainer.global_step + 1) / self.warmup_steps
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = self.lr * group.get("lr_scale", 1.0) * factor

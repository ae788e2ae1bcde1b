"""What fine-tuning logs: the losses per step, the task metrics per epoch, and the check that
every checkpoint callback monitors one of them.

Names: ``<stage>/loss`` and its parts (``energy_loss``, ``force_loss``, ``denoise_loss``) per
step, averaged over molecules; the metrics of :class:`~molssl.modules.finetune_metrics.TaskMetrics`
(``auroc``, ``rmse``, ``mae``, per-task entries, ``force_mae``, ...) per epoch.
"""

from __future__ import annotations

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from molssl.modules.finetune_metrics import check_checkpoint_monitors

__all__ = ["FinetuneLogging"]


class FinetuneLogging:
    """Logging hooks of :class:`~molssl.modules.FinetuneModule` (a mixin: it reads the
    module's ``task``, ``metrics``, ``task_names``, ``monitor`` and ``denoising``)."""

    def _log_losses(self, stage: str, loss: Tensor, parts: dict[str, Tensor], size: int) -> None:
        sync = stage != "train"
        self.log(f"{stage}/loss", loss.detach(), batch_size=size, prog_bar=True, sync_dist=sync)
        for name, value in parts.items():
            self.log(f"{stage}/{name}", value.detach(), batch_size=size, sync_dist=sync)

    def on_train_epoch_end(self) -> None:
        """Logs the epoch's training metrics."""
        self._log_metrics("train")

    def on_validation_epoch_end(self) -> None:
        """Logs the validation metrics (``val/auroc``, ``val/rmse``, ...)."""
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        """Logs the test metrics."""
        self._log_metrics("test")

    def _log_metrics(self, stage: str) -> None:
        values = self.metrics.compute(stage, self.task_names)
        if self.task == "classification" and not torch.isfinite(values[f"{stage}/auroc"]):
            rank_zero_warn(
                f"{stage}/auroc is NaN: no task has both classes among the {stage} molecules",
                category=UserWarning,
            )
        for name, value in values.items():
            self.log(name, value, prog_bar=name == self.monitor[0])

    def metric_names(self, stage: str) -> list[str]:
        """Names logged under ``stage`` (losses and metrics)."""
        names = [f"{stage}/loss", *self.metrics.names(stage, self.task_names)]
        if self.task == "energy_forces":
            names += [f"{stage}/energy_loss", f"{stage}/force_loss"]
        if self.denoising is not None and stage == "train":
            names.append(f"{stage}/denoise_loss")
        return names

    def on_fit_start(self) -> None:
        """Checks that every ``ModelCheckpoint`` monitors a metric logged here, the right way."""
        logged = set(self.metric_names("val")) | set(self.metric_names("train"))
        check_checkpoint_monitors(self.trainer.checkpoint_callbacks, logged, self.monitor)

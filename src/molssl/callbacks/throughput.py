"""``MoleculeThroughput``: training molecules per second, in the progress bar and the logs.

A rolling average over the last ``window`` training batches (Lightning's
:class:`~lightning.fabric.utilities.throughput.Throughput`), of the whole world (one process's
rate times the number of processes), logged as ``train/molecules_per_sec`` on the steps the
Trainer logs (so it lands in TensorBoard beside the losses) and shown in the progress bar. The
time of validation runs is left out, so that a validation does not look like a slow step.
"""

from __future__ import annotations

import time
from typing import Any

from lightning.fabric.utilities.throughput import Throughput
from lightning.pytorch import Callback, LightningModule, Trainer

__all__ = ["THROUGHPUT_KEY", "MoleculeThroughput", "batch_size_of"]

#: The logged name.
THROUGHPUT_KEY = "train/molecules_per_sec"


def batch_size_of(batch: Any) -> int:
    """Molecules (samples) in a batch: a PyG ``Batch``'s graphs, else the first dimension."""
    num_graphs = getattr(batch, "num_graphs", None)
    if isinstance(num_graphs, int):
        return num_graphs
    first = batch[0] if isinstance(batch, (list, tuple)) and batch else batch
    shape = getattr(first, "shape", None)
    return int(shape[0]) if shape else 1


class MoleculeThroughput(Callback):
    """Logs ``train/molecules_per_sec`` (see the module docstring).

    Args:
        window: Training batches averaged over; the rate appears after this many.
    """

    def __init__(self, window: int = 10) -> None:
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window}")
        self.window = window
        self._throughput: Throughput | None = None
        self._start = 0.0
        self._paused_at: float | None = None
        self._batches = 0
        self._samples = 0

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Starts the clock."""
        self._throughput = Throughput(window_size=self.window)
        self._start = time.perf_counter()
        self._batches = self._samples = 0

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Counts the batch and logs the rate once the window is full."""
        if self._throughput is None:
            return
        self._batches += 1
        self._samples += batch_size_of(batch)
        self._throughput.update(
            time=time.perf_counter() - self._start, batches=self._batches, samples=self._samples
        )
        rate = self._throughput.compute().get("device/samples_per_sec")
        if rate is not None:
            pl_module.log(
                THROUGHPUT_KEY,
                float(rate) * trainer.world_size,
                on_step=True,
                on_epoch=False,
                prog_bar=True,
                batch_size=1,
            )

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Stops the clock while validating."""
        if self._throughput is not None and not trainer.sanity_checking:
            self._paused_at = time.perf_counter()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Restarts the clock, the validation's time left out."""
        if self._paused_at is not None:
            self._start += time.perf_counter() - self._paused_at
            self._paused_at = None

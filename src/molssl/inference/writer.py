"""``CsvPredictionWriter``: ``molssl predict``'s output, one CSV row per input row, in order.

Columns: ``id``, ``smiles``, one per task named after the training targets (regression: the
value in the targets' units; classification: the probability of the positive class;
energy_forces: the energy), and ``error`` (empty for a predicted row; the reason for a row that
could not be featurised, whose task columns are then empty). Rows are appended as Lightning
finishes each batch (``write_interval="batch"``), into a temporary file that replaces the
output only when every row is written, so a run that fails leaves no partial file.
"""

from __future__ import annotations

import csv
import math
import os
from collections import Counter
from pathlib import Path
from typing import IO, Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from molssl.inference.runner import RowOutput

__all__ = ["CsvPredictionWriter", "format_value"]


def format_value(value: float) -> str:
    """A float32 value as the shortest text that reads back to it; ``""`` for NaN."""
    return "" if math.isnan(value) else f"{value:.9g}"


class CsvPredictionWriter(BasePredictionWriter):
    """Writes :class:`~molssl.inference.runner.RowOutput` batches to a CSV file.

    Args:
        path: The output file (its folder is created).
        value_columns: Names of the value columns, in order.

    Attributes:
        rows: Rows written.
        failures: Failed rows by reason.
    """

    def __init__(self, path: str | os.PathLike[str], value_columns: list[str]) -> None:
        super().__init__(write_interval="batch")
        self.path = Path(path)
        self.value_columns = list(value_columns)
        self.rows = 0
        self.failures: Counter[str] = Counter()
        self._temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._handle: IO[str] | None = None
        self._writer: Any = None

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Opens the temporary file and writes the header."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self._temporary, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._writer = csv.writer(self._handle)
        self._writer.writerow(["id", "smiles", *self.value_columns, "error"])

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Appends the batch's rows."""
        output: RowOutput = prediction
        for position, error in enumerate(output.errors):
            values = [format_value(float(v)) for v in output.values[position].tolist()]
            self._writer.writerow(
                [output.ids[position], output.smiles[position], *values, error or ""]
            )
            if error:
                self.failures[error.split(":", 1)[0]] += 1
        self.rows += len(output.errors)

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Closes the file and moves it into place."""
        self._close()
        os.replace(self._temporary, self.path)

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        """Drops the partial file."""
        self._close()
        self._temporary.unlink(missing_ok=True)

    def _close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

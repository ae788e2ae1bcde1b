"""``ValidationSummary``: held-out losses at step 0 against the end of training.

Lightning validates during training only after some steps, and its sanity check neither logs
nor covers the whole validation set, so nothing records how the untrained model scores. This
callback runs the full validation set once when training starts (before the first optimiser
step), logs those values as ``val/...`` at that step, keeps the epoch-level ``val/...`` metrics
of every later validation, and when fitting ends prints, per objective, the validation loss at
the start and at the last validation, and writes the same as JSON into the run's log dir.

The start-of-training pass averages exactly as Lightning does for ``validation_step`` logs
(weighted by each objective's ``batch_size``), so the two ends of the table are comparable. It
needs a module with ``objective_results(batch)`` (:class:`~molssl.modules.PretrainModule`) and
reads the datamodule's (or the module's) ``val_dataloader`` directly; under DDP every process
validates the whole split once at the start, which is only slower.

Used by ``make demo``: ``--trainer.callbacks+=molssl.modules.ValidationSummary``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor

__all__ = ["ValidationSummary"]

TOTAL_KEY = "val/loss"


class ValidationSummary(Callback):
    """Validate at the start of training; print and save start-vs-end validation losses.

    Args:
        filename: JSON file written into ``trainer.log_dir`` at the end of fitting; ``None``
            writes nothing.

    Attributes:
        history: ``(global step, {metric: value})`` for the start-of-training pass and every
            later validation, in order.
    """

    def __init__(self, filename: str | None = "validation_summary.json") -> None:
        self.filename = filename
        self.history: list[tuple[int, dict[str, float]]] = []

    # -- hooks -----------------------------------------------------------------------------

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Validates the model as it starts training and logs the result at this step."""
        metrics = validate_now(trainer, pl_module)
        if not metrics:
            return
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        self.history.append((trainer.global_step, metrics))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Keeps the epoch-level ``val/...`` metrics of a validation during training."""
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        metrics = {
            key: float(value)
            for key, value in trainer.callback_metrics.items()
            if key.startswith("val/") and isinstance(value, Tensor) and value.numel() == 1
        }
        if metrics:
            self.history.append((trainer.global_step, metrics))

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Prints the table and where the run's logs and checkpoints are; writes the JSON."""
        if not trainer.is_global_zero or len(self.history) < 1:
            return
        summary = self.summary(objective_names(pl_module, self.history[0][1]))
        lines = [format_summary(summary)]
        log_dir = trainer.log_dir
        if log_dir is not None and self.filename is not None:
            path = Path(log_dir) / self.filename
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(summary, indent=2) + "\n")
            lines.append(f"summary written to {path}")
        if trainer.loggers and log_dir is not None:
            lines.append(f"TensorBoard logs: {log_dir}  (view: make tensorboard)")
        checkpoint = getattr(trainer.checkpoint_callback, "last_model_path", "") or getattr(
            trainer.checkpoint_callback, "best_model_path", ""
        )
        if checkpoint:
            lines.append(f"checkpoint: {checkpoint}")
        print("\n".join(lines), flush=True)

    # -- summary ---------------------------------------------------------------------------

    def summary(self, names: Iterable[str]) -> dict[str, Any]:
        """Start and end validation loss of each objective and of the total.

        Args:
            names: Objective names, as in ``val/<name>/loss``.

        Returns:
            ``{"start_step", "end_step", "losses": {name: {"start", "end"}}, "all_lower"}``,
            where ``"total"`` is ``val/loss`` and ``all_lower`` says whether every objective's
            end value is below its start value.
        """
        if not self.history:
            raise ValueError("no validation recorded yet")
        start_step, start = self.history[0]
        end_step, end = self.history[-1]
        losses: dict[str, dict[str, float | None]] = {}
        for name in names:
            key = f"val/{name}/loss"
            losses[name] = {"start": start.get(key), "end": end.get(key)}
        losses["total"] = {"start": start.get(TOTAL_KEY), "end": end.get(TOTAL_KEY)}
        objective_rows = [row for name, row in losses.items() if name != "total"]
        all_lower = len(self.history) > 1 and all(
            row["start"] is not None and row["end"] is not None and row["end"] < row["start"]
            for row in objective_rows
        )
        return {
            "start_step": start_step,
            "end_step": end_step,
            "losses": losses,
            "all_lower": all_lower,
        }


def objective_names(pl_module: LightningModule, metrics: dict[str, float]) -> list[str]:
    """The module's objective names, else those found as ``val/<name>/loss`` in ``metrics``."""
    objectives = getattr(pl_module, "objectives", None)
    if objectives is not None:
        return [objective.name for objective in objectives]
    return [key[4:-5] for key in metrics if key.startswith("val/") and key.endswith("/loss")]


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text table of :meth:`ValidationSummary.summary`."""
    start_step, end_step = summary["start_step"], summary["end_step"]
    rows = summary["losses"]
    width = max(len("objective"), *(len(name) for name in rows))
    start_label, end_label = f"step {start_step}", f"step {end_step}"
    header = f"{'objective':<{width}}  {start_label:>12}  {end_label:>12}"
    lines = [
        f"validation loss on held-out molecules, step {start_step} vs step {end_step}:",
        header + f"  {'change':>8}",
    ]
    for name, row in rows.items():
        start, end = row["start"], row["end"]
        change = ""
        if start is not None and end is not None and start != 0:
            change = f"{100.0 * (end - start) / abs(start):+.1f}%"
        lines.append(f"{name:<{width}}  {_number(start):>12}  {_number(end):>12}  {change:>8}")
    verdict = "yes" if summary["all_lower"] else "NO"
    lines.append(f"every objective lower at the end than at the start: {verdict}")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


@torch.no_grad()
def validate_now(trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
    """The ``val/...`` metrics of ``pl_module`` on the whole validation set, right now.

    Averages every value over its objective's ``batch_size`` (``val/loss`` over molecules),
    as Lightning's epoch-level logging does; honours ``trainer.limit_val_batches``. The module
    is put in eval mode for the pass and restored afterwards.

    Returns:
        ``{}`` when there is no validation data.
    """
    results_of = getattr(pl_module, "objective_results", None)
    if not callable(results_of):
        raise TypeError(
            f"ValidationSummary needs a module with objective_results(batch) (PretrainModule), "
            f"got {type(pl_module).__name__}"
        )
    sums: dict[str, float] = defaultdict(float)
    weights: dict[str, float] = defaultdict(float)

    def add(key: str, value: Tensor, weight: int) -> None:
        sums[key] += float(value) * weight
        weights[key] += weight

    was_training = pl_module.training
    pl_module.eval()
    try:
        for loader in _validation_loaders(trainer, pl_module):
            for index, batch in enumerate(loader):
                if index >= _batch_limit(trainer.limit_val_batches, loader):
                    break
                batch = move_data_to_device(batch, pl_module.device)
                total, results = results_of(batch)
                num_graphs = int(batch.num_graphs)
                add(TOTAL_KEY, total, num_graphs)
                for name, result in results.items():
                    batch_size = result.batch_size or num_graphs
                    add(f"val/{name}/loss", result.loss, batch_size)
                    for key, value in result.metrics.items():
                        add(f"val/{name}/{key}", value, batch_size)
    finally:
        pl_module.train(was_training)
    return {key: sums[key] / weights[key] for key in sums if weights[key] > 0}


def _validation_loaders(trainer: Trainer, pl_module: LightningModule) -> list[Any]:
    source = trainer.datamodule if trainer.datamodule is not None else pl_module
    loaders = source.val_dataloader()
    return list(loaders) if isinstance(loaders, list | tuple) else [loaders]


def _batch_limit(limit: int | float | None, loader: Any) -> float:
    """How many batches of ``loader`` ``limit_val_batches`` allows."""
    if limit is None:
        return math.inf
    if isinstance(limit, int):
        return limit
    if limit >= 1.0:
        return math.inf
    return math.ceil(len(loader) * limit)

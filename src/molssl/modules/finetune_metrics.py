"""Fine-tuning metrics as torchmetrics ``Metric``s: masked multi-task ROC-AUC and regression errors.

Fine-tuning labels may be missing (NaN in ``y``), so both metrics take a mask: every entry whose
target is NaN is left out of its task.

- :class:`MaskedMultitaskAUROC`: ROC-AUC of each task over the molecules labelled for it,
  averaged over the tasks that have both classes in the split (MoleculeNet's convention: a
  Tox21 task with no positive in a small test split cannot be scored and is not counted as 0.5).
- :class:`MaskedRegressionErrors`: RMSE and MAE per target, in the targets' own units, from
  running sums (exact under any batching and across processes).
- :class:`TaskMetrics`: the metrics of a fine-tuning task per stage, with the names logged.

Both synchronise across DDP processes through torchmetrics' state reduction.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, Metric
from torchmetrics.functional.classification import binary_auroc
from torchmetrics.utilities import dim_zero_cat

__all__ = [
    "MaskedMultitaskAUROC",
    "MaskedRegressionErrors",
    "TaskMetrics",
    "check_checkpoint_monitors",
    "check_prediction_shapes",
]

_STAGES = ("train", "val", "test")


def check_prediction_shapes(preds: Tensor, target: Tensor, num_tasks: int) -> None:
    """Raises ``ValueError`` unless ``preds`` and ``target`` are both ``(B, num_tasks)``."""
    if preds.dim() != 2 or preds.size(1) != num_tasks or target.shape != preds.shape:
        raise ValueError(
            f"predictions {tuple(preds.shape)} and targets {tuple(target.shape)} must both have "
            f"shape (batch, {num_tasks})"
        )


def _ranks_in_unit_interval(scores: Tensor) -> Tensor:
    """Dense ranks of ``scores`` scaled into [0, 1]: same order, same ties.

    torchmetrics treats scores outside [0, 1] as logits and applies a sigmoid, which in float32
    saturates to exactly 1.0 above about 17 and would turn confident logits into ties. ROC-AUC
    depends on the order only, so ranks give the exact value.
    """
    _, ranks = torch.unique(scores, return_inverse=True)
    return ranks.float() / max(int(ranks.max()), 1)


class MaskedMultitaskAUROC(Metric):
    """Mean ROC-AUC over tasks, ignoring missing (NaN) labels.

    Each task's ROC-AUC (torchmetrics' ``binary_auroc``, ties counted half) is computed over the
    molecules with a label for that task. Tasks whose labelled molecules are all of one class
    have no ROC-AUC and are skipped; :meth:`compute` returns the mean over the rest and
    :attr:`last_num_scored_tasks` says how many there were.

    Args:
        num_tasks: Number of binary tasks ``T``.

    Inputs to :meth:`update`: ``preds`` (B, T) logits or probabilities (any monotone score),
    ``target`` (B, T) in {0, 1} with NaN for missing labels.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    preds: list[Tensor]
    target: list[Tensor]

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        self.num_tasks = int(num_tasks)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.last_num_scored_tasks = 0

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Stores one batch of scores and labels."""
        check_prediction_shapes(preds, target, self.num_tasks)
        labelled = target[~torch.isnan(target)]
        if labelled.numel() and not bool(((labelled == 0) | (labelled == 1)).all()):
            raise ValueError("classification targets must be 0, 1 or NaN (missing)")
        self.preds.append(preds.detach().float())
        self.target.append(target.detach().float())

    def per_task(self) -> Tensor:
        """ROC-AUC of each task, NaN where the task has no label or only one class."""
        preds, target = dim_zero_cat(self.preds), dim_zero_cat(self.target)
        scores = torch.full((self.num_tasks,), float("nan"), device=preds.device)
        for task in range(self.num_tasks):
            labelled = ~torch.isnan(target[:, task])
            labels = target[labelled, task]
            if labels.numel() == 0 or bool((labels == labels[0]).all()):
                continue
            scores[task] = binary_auroc(
                _ranks_in_unit_interval(preds[labelled, task]), labels.long()
            )
        return scores

    def compute(self) -> Tensor:
        """Mean ROC-AUC over the tasks with both classes present; NaN if there is none."""
        scores = self.per_task()
        scored = ~torch.isnan(scores)
        self.last_num_scored_tasks = int(scored.sum())
        if self.last_num_scored_tasks == 0:
            return torch.tensor(float("nan"), device=scores.device)
        return scores[scored].mean()


class MaskedRegressionErrors(Metric):
    """RMSE and MAE per target over the labelled (non-NaN) entries.

    Args:
        num_tasks: Number of regression targets ``T``.

    Inputs to :meth:`update`: ``preds`` and ``target`` (B, T) in the same units; NaN targets are
    skipped. :meth:`compute` returns ``{"rmse": (T,), "mae": (T,), "count": (T,)}``; a target with
    no label gets NaN errors.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    squared_error: Tensor
    absolute_error: Tensor
    count: Tensor

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        self.num_tasks = int(num_tasks)
        # float64 sums: a QM9 epoch adds 110k squared errors of very different sizes.
        zeros = torch.zeros(num_tasks, dtype=torch.float64)
        self.add_state("squared_error", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state("absolute_error", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state("count", default=zeros.clone(), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Adds one batch's errors."""
        check_prediction_shapes(preds, target, self.num_tasks)
        labelled = ~torch.isnan(target)
        error = torch.where(labelled, preds.detach().double() - target.double(), 0.0)
        self.squared_error += (error * error).sum(dim=0)
        self.absolute_error += error.abs().sum(dim=0)
        self.count += labelled.sum(dim=0).double()

    def compute(self) -> dict[str, Tensor]:
        """Per-target ``rmse``, ``mae`` and label ``count``."""
        count = self.count
        safe = torch.where(count > 0, count, torch.ones_like(count))
        nan = torch.full_like(count, float("nan"))
        rmse = torch.where(count > 0, (self.squared_error / safe).sqrt(), nan)
        mae = torch.where(count > 0, self.absolute_error / safe, nan)
        return {"rmse": rmse.float(), "mae": mae.float(), "count": count}


class TaskMetrics(nn.Module):
    """The metrics of one fine-tuning task for each stage (train, val, test).

    Names logged (``<stage>`` is ``train``, ``val`` or ``test``):

    - classification: ``<stage>/auroc`` (mean over scored tasks), ``<stage>/auroc_tasks``
      (how many tasks had both classes);
    - regression: ``<stage>/rmse`` and ``<stage>/mae`` (mean over targets), plus
      ``<stage>/rmse/<task>`` and ``<stage>/mae/<task>`` per target when there are several;
    - energy_forces: ``<stage>/energy_mae`` (per molecule) and ``<stage>/force_mae`` (per
      force component), in the data's units.

    Args:
        task: ``"classification"``, ``"regression"`` or ``"energy_forces"``.
        num_tasks: Number of targets ``T``.
    """

    def __init__(self, task: str, num_tasks: int) -> None:
        super().__init__()
        self.task = task
        self.num_tasks = int(num_tasks)
        # "train" is an nn.Module method, so the stage keys carry a suffix.
        self.by_stage = nn.ModuleDict({f"{stage}_metrics": self._build() for stage in _STAGES})

    def _build(self) -> nn.Module:
        if self.task == "classification":
            return MaskedMultitaskAUROC(self.num_tasks)
        if self.task == "regression":
            return MaskedRegressionErrors(self.num_tasks)
        if self.task == "energy_forces":
            return nn.ModuleDict({"energy": MeanAbsoluteError(), "force": MeanAbsoluteError()})
        raise ValueError(f"unknown task {self.task!r}")

    def _stage(self, stage: str) -> nn.Module:
        if stage not in _STAGES:
            raise ValueError(f"stage must be one of {_STAGES}, got {stage!r}")
        return self.by_stage[f"{stage}_metrics"]

    def update(self, stage: str, *inputs: Tensor) -> None:
        """Adds one batch: ``(preds, targets)``, or ``(energy, energy target, forces, force
        target)`` for energy_forces. Predictions are detached."""
        metrics = self._stage(stage)
        if self.task == "energy_forces":
            energy, target_energy, forces, target_forces = (t.detach() for t in inputs)
            metrics["energy"].update(energy.reshape(-1), target_energy.reshape(-1))
            metrics["force"].update(forces.reshape(-1), target_forces.reshape(-1))
            return
        preds, target = inputs
        metrics.update(preds.detach(), target.detach())

    def names(self, stage: str, task_names: list[str]) -> list[str]:
        """Every name :meth:`compute` returns for ``stage``."""
        if self.task == "classification":
            return [f"{stage}/auroc", f"{stage}/auroc_tasks"]
        if self.task == "energy_forces":
            return [f"{stage}/energy_mae", f"{stage}/force_mae"]
        names = [f"{stage}/rmse", f"{stage}/mae"]
        if self.num_tasks > 1:
            names += [f"{stage}/{kind}/{task}" for task in task_names for kind in ("rmse", "mae")]
        return names

    def compute(self, stage: str, task_names: list[str]) -> dict[str, Tensor]:
        """The stage's metrics over everything seen since the last call, then resets them.

        Returns an empty dict when nothing was seen (e.g. every training batch was skipped).
        """
        metrics = self._stage(stage)
        parts = list(metrics.values()) if isinstance(metrics, nn.ModuleDict) else [metrics]
        if not any(part.update_count for part in parts):
            return {}
        if self.task == "classification":
            auroc = metrics.compute()
            values = {
                f"{stage}/auroc": auroc,
                f"{stage}/auroc_tasks": torch.tensor(float(metrics.last_num_scored_tasks)),
            }
        elif self.task == "energy_forces":
            values = {
                f"{stage}/energy_mae": metrics["energy"].compute(),
                f"{stage}/force_mae": metrics["force"].compute(),
            }
        else:
            errors = metrics.compute()
            values = {
                f"{stage}/rmse": errors["rmse"].nanmean(),
                f"{stage}/mae": errors["mae"].nanmean(),
            }
            if self.num_tasks > 1:
                for index, task in enumerate(task_names):
                    values[f"{stage}/rmse/{task}"] = errors["rmse"][index]
                    values[f"{stage}/mae/{task}"] = errors["mae"][index]
        for part in parts:
            part.reset()
        return values


def check_checkpoint_monitors(
    callbacks: Iterable[Callback], logged: set[str], recommended: tuple[str, str]
) -> None:
    """Checks the ``ModelCheckpoint`` callbacks against the metrics a module logs.

    Args:
        callbacks: The trainer's checkpoint callbacks.
        logged: Every name the module logs.
        recommended: The module's ``(monitor, mode)``, named in the error.

    Raises:
        ValueError: A monitored name that is never logged (Lightning would only fail at the
            end of the first validation), or an ``auroc`` monitored with mode ``min`` / an
            error or loss with mode ``max`` (the worst epoch would be kept).
    """
    for callback in callbacks:
        if not isinstance(callback, ModelCheckpoint) or callback.monitor is None:
            continue
        if callback.monitor not in logged:
            raise ValueError(
                f"checkpoint.monitor is {callback.monitor!r}, which this model does not log; use "
                f"{recommended[0]!r} (mode {recommended[1]!r}) or one of {sorted(logged)}"
            )
        expected = "max" if callback.monitor.split("/")[-1].startswith("auroc") else "min"
        if callback.mode != expected:
            raise ValueError(
                f"checkpoint.monitor {callback.monitor!r} needs checkpoint.mode {expected!r}, "
                f"got {callback.mode!r}: the worst epoch would be kept"
            )

"""Target statistics of fine-tuning, read from the datamodule and checked.

The datamodule's ``target_statistics()`` covers the training split only (see
:class:`molssl.datamodules.finetune_base.FinetuneDataModule`): ``"mean"``/``"std"`` per target
for regression, of the energy per atom for energy_forces, and optionally ``"atomref"``
per-element reference values. With references in use, the mean and std the model needs are
those of what is left after subtracting them, so they are recomputed here from one pass over
the training loader.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch_geometric.utils import scatter

__all__ = ["TaskStatistics", "read_task_statistics"]


@dataclass
class TaskStatistics:
    """What the model stores: ``mean`` and ``std`` ``(T,)``, ``atomref`` ``(T, max_z)``."""

    mean: Tensor
    std: Tensor
    atomref: Tensor


def _vector(stats: dict[str, Any], key: str, num_tasks: int) -> Tensor:
    if key not in stats:
        raise ValueError(
            f"the datamodule's target_statistics() has no {key!r} (keys: {sorted(stats)}); "
            "set model.init_args.standardize=false to train without standardisation"
        )
    value = torch.as_tensor(stats[key], dtype=torch.float32).reshape(-1)
    if value.numel() != num_tasks or not bool(torch.isfinite(value).all()):
        raise ValueError(
            f"target_statistics()[{key!r}] must hold {num_tasks} finite value(s), got "
            f"{value.tolist()[:8]}"
        )
    return value


def _atomref_table(stats: dict[str, Any], num_tasks: int, max_z: int) -> Tensor:
    if "atomref" not in stats:
        raise ValueError(
            "atomref=True but the datamodule's target_statistics() has no 'atomref' (per-element "
            f"reference values; keys: {sorted(stats)}); set model.init_args.atomref=false or "
            "use a datamodule that provides them"
        )
    table = torch.as_tensor(stats["atomref"], dtype=torch.float32)
    if table.dim() == 1:
        table = table.unsqueeze(0).expand(num_tasks, -1)
    if table.dim() != 2 or table.size(0) != num_tasks:
        raise ValueError(
            f"target_statistics()['atomref'] must have shape (max_z,) or ({num_tasks}, max_z), "
            f"got {tuple(table.shape)}"
        )
    if table.size(1) > max_z and bool(table[:, max_z:].any()):
        raise ValueError(
            f"atomref has values for atomic numbers >= {max_z}, beyond the encoder's max_z"
        )
    padded = torch.zeros(num_tasks, max_z)
    width = min(max_z, table.size(1))
    padded[:, :width] = table[:, :width]
    return torch.nan_to_num(padded)


def _residual_statistics(
    datamodule: Any, task: str, num_tasks: int, atomref: Tensor
) -> tuple[Tensor, Tensor]:
    """Mean and std over the train loader of the targets minus their atom references.

    For energy_forces the residual is taken per atom, ``(E - sum_i ref[z_i]) / N``.
    """
    total = torch.zeros(num_tasks, dtype=torch.float64)
    squares = torch.zeros(num_tasks, dtype=torch.float64)
    count = torch.zeros(num_tasks, dtype=torch.float64)
    for batch in datamodule.train_dataloader():
        index = batch.batch
        num_graphs = int(batch.num_graphs)
        reference = scatter(
            atomref[:, batch.z].transpose(0, 1).double(), index, 0, dim_size=num_graphs
        )
        if task == "energy_forces":
            atoms = torch.bincount(index, minlength=num_graphs).double().unsqueeze(-1)
            residual = (batch.energy.reshape(-1, 1).double() - reference) / atoms
        else:
            residual = batch.y.reshape(num_graphs, -1).double() - reference
        labelled = ~torch.isnan(residual)
        residual = torch.where(labelled, residual, torch.zeros_like(residual))
        total += residual.sum(0)
        squares += (residual * residual).sum(0)
        count += labelled.sum(0).double()
    safe = count.clamp(min=1)
    mean = total / safe
    variance = (squares / safe - mean * mean).clamp(min=0)
    std = torch.where((count > 1) & (variance > 0), variance.sqrt(), torch.ones_like(variance))
    return mean.float(), std.float()


def read_task_statistics(
    datamodule: Any,
    task: str,
    num_tasks: int,
    standardize: bool,
    use_atomref: bool,
    max_z: int,
) -> TaskStatistics:
    """The statistics a :class:`~molssl.modules.FinetuneModule` stores for ``datamodule``.

    Classification and ``standardize=False`` give mean 0 and std 1.

    Raises:
        ValueError: Statistics missing, of the wrong size, not finite, or a std <= 0.
    """
    mean, std = torch.zeros(num_tasks), torch.ones(num_tasks)
    atomref = torch.zeros(num_tasks, max_z)
    if task == "classification":
        return TaskStatistics(mean, std, atomref)
    stats = dict(datamodule.target_statistics())
    if use_atomref:
        atomref = _atomref_table(stats, num_tasks, max_z)
    if standardize:
        if use_atomref:
            mean, std = _residual_statistics(datamodule, task, num_tasks, atomref)
        else:
            mean, std = _vector(stats, "mean", num_tasks), _vector(stats, "std", num_tasks)
        if not all(math.isfinite(s) and s > 0 for s in std.tolist()):
            raise ValueError(f"target std must be positive, got {std.tolist()[:8]}")
    return TaskStatistics(mean, std, atomref)

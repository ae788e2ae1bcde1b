"""Target statistics of fine-tuning, read from the datamodule and checked.

The datamodule's ``target_statistics()`` covers the training split only (see
:class:`molssl.datamodules.finetune_base.FinetuneDataModule`): ``"mean"``/``"std"`` per target
for regression, of the energy per atom for energy_forces, and optionally ``"atomref"``,
per-element reference values ``(Z,)`` or ``(Z, T)`` indexed by atomic number (QM9's fit on the
train split). With references, ``"mean"``/``"std"`` are those of the residual
``y - sum_i atomref[z_i]`` (the datamodule's contract, e.g.
:class:`~molssl.datamodules.qm9.QM9DataModule`).

With QM9's free-atom energies as references (``atomref="qm9"``, :mod:`molssl.modules.atomref`)
the datamodule's statistics do not fit them: the residual's mean and std are then computed here
over the datamodule's ``train_dataset``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from molssl.modules.atomref import qm9_atomref_table, residual_statistics

__all__ = ["TaskStatistics", "checked_task_names", "read_task_statistics"]


@dataclass
class TaskStatistics:
    """What the model stores: ``mean`` and ``std`` ``(T,)``, ``atomref`` ``(T, max_z)``."""

    mean: Tensor
    std: Tensor
    atomref: Tensor


def checked_task_names(datamodule: Any, task: str, num_tasks: int) -> list[str]:
    """The datamodule's task names, after checking its task type and number of tasks.

    Raises:
        ValueError: Naming the model setting to change.
    """
    task_type = getattr(datamodule, "task_type", None)
    if task_type is not None and task_type != task:
        raise ValueError(
            f"the datamodule's task type is {task_type!r} but the model was built for "
            f"{task!r}: set model.init_args.task to {task_type!r}"
        )
    names = [str(name) for name in datamodule.task_names]
    if len(names) != num_tasks:
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        raise ValueError(
            f"the datamodule has {len(names)} task(s) ({shown}) but the model was built "
            f"with num_tasks={num_tasks}: set model.init_args.num_tasks to {len(names)}"
        )
    return names


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
    """The datamodule's ``(Z,)`` or ``(Z, T)`` references as the model's ``(T, max_z)`` table."""
    if "atomref" not in stats:
        raise ValueError(
            "atomref=true but the datamodule's target_statistics() has no 'atomref' (per-element "
            f"reference values; keys: {sorted(stats)}); set model.init_args.atomref=false or "
            "use a datamodule that fits them (e.g. QM9DataModule with atomref: true)"
        )
    table = torch.as_tensor(stats["atomref"], dtype=torch.float32)
    if table.dim() == 1:
        table = table.unsqueeze(1).expand(-1, num_tasks)
    if table.dim() != 2 or table.size(1) != num_tasks:
        raise ValueError(
            f"target_statistics()['atomref'] must have shape (Z,) or (Z, {num_tasks}), indexed "
            f"by atomic number, got {tuple(table.shape)}"
        )
    if table.size(0) > max_z and bool(table[max_z:].any()):
        raise ValueError(
            f"atomref has values for atomic numbers >= {max_z}, beyond the encoder's max_z"
        )
    padded = torch.zeros(num_tasks, max_z)
    width = min(max_z, table.size(0))
    padded[:, :width] = table[:width].T
    if not bool(torch.isfinite(padded).all()):
        raise ValueError("target_statistics()['atomref'] holds non-finite values")
    return padded


def read_task_statistics(
    datamodule: Any,
    task: str,
    num_tasks: int,
    standardize: bool,
    atomref: str,
    max_z: int,
    task_names: Sequence[str] = (),
) -> TaskStatistics:
    """The statistics a :class:`~molssl.modules.FinetuneModule` stores for ``datamodule``.

    Classification and ``standardize=False`` give mean 0 and std 1.

    Args:
        atomref: ``"none"``, ``"data"`` (the datamodule's references) or ``"qm9"`` (QM9's
            free-atom energies of the targets ``task_names``).

    Raises:
        ValueError: Statistics missing, of the wrong size, not finite, or a std <= 0.
    """
    mean, std = torch.zeros(num_tasks), torch.ones(num_tasks)
    table = torch.zeros(num_tasks, max_z)
    if task == "classification":
        return TaskStatistics(mean, std, table)
    if atomref == "qm9":
        table = qm9_atomref_table(task_names, max_z)
        if standardize:
            molecules = getattr(datamodule, "train_dataset", None)
            if molecules is None:
                raise ValueError(
                    "atomref='qm9' with standardize=true needs the datamodule's "
                    "train_dataset to compute the residual's statistics"
                )
            mean, std = residual_statistics(molecules, table)
        return TaskStatistics(mean, std, table.float())
    stats = dict(datamodule.target_statistics())
    if atomref == "data":
        table = _atomref_table(stats, num_tasks, max_z)
    if standardize:
        mean, std = _vector(stats, "mean", num_tasks), _vector(stats, "std", num_tasks)
        if not all(math.isfinite(s) and s > 0 for s in std.tolist()):
            raise ValueError(f"target std must be positive, got {std.tolist()[:8]}")
    return TaskStatistics(mean, std, table)

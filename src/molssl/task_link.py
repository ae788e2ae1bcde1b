"""The model's task type and number of tasks, taken from the data before anything is built.

A fine-tuning model must have one output per target and the loss of the data's task type. The
data know both: a CSV with two label columns has two tasks. A model class whose constructor
takes ``task`` and ``num_tasks`` (:class:`~molssl.modules.FinetuneModule`) gets them from a
datamodule that declares them (``declared_tasks()``, e.g.
:meth:`~molssl.datamodules.moleculenet.MoleculeNetDataModule.declared_tasks`) when the config
leaves them out (``null``); a value the config does give is checked against the data, and a
mismatch is an error before any molecule is prepared.

LightningCLI's ``link_arguments`` would do the first half, but a link makes its target
impossible to set, and molssl's single CLI serves pre-training modules, which have no tasks.
"""

from __future__ import annotations

from typing import Any

from jsonargparse import ArgumentParser, Namespace
from lightning.pytorch import LightningDataModule

from molssl.errors import UserError

__all__ = ["TaskMismatchError", "declared_tasks_of", "fill_tasks_from_data"]


class TaskMismatchError(UserError):
    """The config's task type or number of tasks differs from what the data hold."""


def declared_tasks_of(data_section: Namespace | dict[str, Any]) -> tuple[str, list[str]] | None:
    """``(task type, task names)`` a data config declares, or ``None`` if it does not say.

    The datamodule is built from its section (a cheap constructor; nothing is read but what
    ``declared_tasks()`` reads, such as a CSV header) and thrown away.
    """
    section = data_section.as_dict() if isinstance(data_section, Namespace) else data_section
    if not isinstance(section, dict) or "class_path" not in section:
        return None
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--data", type=LightningDataModule)
    datamodule = parser.instantiate(parser.parse_object({"data": section})).data
    declared = getattr(datamodule, "declared_tasks", None)
    return declared() if callable(declared) else None


def fill_tasks_from_data(config: Namespace) -> str | None:
    """Sets ``model.init_args.task``/``num_tasks`` from the data when unset; checks them if set.

    Args:
        config: One subcommand's parsed config (``model`` and ``data`` sections).

    Returns:
        A note saying what was taken from the data, or ``None`` when nothing was.

    Raises:
        TaskMismatchError: The config gives a task type or number of tasks the data contradict.
    """
    model, data = config.get("model"), config.get("data")
    init_args = getattr(model, "init_args", None)
    if data is None or not isinstance(init_args, Namespace):
        return None
    if "task" not in init_args or "num_tasks" not in init_args:
        return None
    declared = declared_tasks_of(data)
    if declared is None:
        return None
    task_type, names = declared
    filled = []
    if init_args.task is None:
        init_args.task = task_type
        filled.append(f"task {task_type}")
    elif init_args.task != task_type:
        raise TaskMismatchError(
            f"model.init_args.task is {init_args.task!r} but the data are {task_type!r}; leave "
            "model.init_args.task out (null) to follow the data"
        )
    if init_args.num_tasks is None:
        init_args.num_tasks = len(names)
        filled.append(f"{len(names)} task(s) ({', '.join(names[:8])}{', ...' * (len(names) > 8)})")
    elif init_args.num_tasks != len(names):
        raise TaskMismatchError(
            f"model.init_args.num_tasks is {init_args.num_tasks} but the data have {len(names)} "
            f"target(s) ({', '.join(names[:8])}{', ...' * (len(names) > 8)}); leave "
            "model.init_args.num_tasks out (null) to follow the data"
        )
    return f"from the data: {', '.join(filled)}" if filled else None

"""What a fine-tuning checkpoint records about itself, and the check before its weights load.

Besides the weights and hyper-parameters, a :class:`~molssl.modules.FinetuneModule` checkpoint
carries ``checkpoint["molssl"]`` (:mod:`molssl.modules.checkpoint_metadata`): the task, number
of tasks, head and encoder class it was trained for, the task names, what ``init_from``
loaded and the non-finite guard's counters. Loading it into a module built for something
else fails before any weight is touched.
"""

from __future__ import annotations

from typing import Any

from molssl.modules.checkpoint_metadata import (
    check_checkpoint_metadata,
    class_path,
    write_checkpoint_metadata,
)

__all__ = ["FinetuneCheckpoints"]


class FinetuneCheckpoints:
    """Checkpoint hooks of :class:`~molssl.modules.FinetuneModule` (a mixin: it reads the
    module's ``task``, ``num_tasks``, ``head_kind``, ``encoder``, ``task_names``,
    ``init_report`` and ``nonfinite_guard``)."""

    def checkpoint_description(self) -> dict[str, Any]:
        """What a checkpoint of this module must match: task, tasks, head and encoder class."""
        return {
            "task": self.task,
            "num_tasks": self.num_tasks,
            "head": self.head_kind,
            "encoder": class_path(self.encoder),
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Records molssl's metadata, the task names, ``init_from`` and the guard's counters."""
        write_checkpoint_metadata(
            checkpoint,
            self,
            **self.checkpoint_description(),
            task_names=list(self.task_names),
            init_from=None if self.init_report is None else self.init_report.as_dict(),
            nonfinite=self.nonfinite_guard.state_dict(),
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checks the checkpoint was written for this task and encoder, before the weights load.

        Raises:
            CheckpointError: Another task, number of tasks, head or encoder class.
        """
        entry = check_checkpoint_metadata(checkpoint, self, self.checkpoint_description())
        if entry is None:
            return
        if isinstance(entry.get("task_names"), list):
            self.task_names = [str(name) for name in entry["task_names"]]
        if isinstance(entry.get("nonfinite"), dict):
            self.nonfinite_guard.load_state_dict(entry["nonfinite"])

"""Where ``molssl fit --ckpt_path last`` finds the checkpoint to resume.

Lightning looks for ``last.ckpt`` in the checkpoint callback's folder, which by default is inside
the logger's version folder; a restarted job gets a *new* version folder (``version_N+1``), finds
nothing there and starts from scratch with only a warning. We look where the interrupted run
wrote instead:

1. the checkpoint callback's ``dirpath``, when the user set one;
2. else every version folder of the run's logger: ``<save_dir>/<name>/*/checkpoints``
   (``version_0``, ``version_1``, a pinned string version, ...);
3. else, with no logger, ``<default_root_dir>/checkpoints``.

The newest ``last.ckpt`` (or ``last-vN.ckpt``, Lightning's name when ``last.ckpt`` already
existed) by modification time wins: a restart logs into a new version folder and writes its own
``last.ckpt`` there, which is then the newest for the next restart.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["find_last_checkpoint", "last_checkpoint_folders"]


def last_checkpoint_folders(trainer: Trainer) -> list[str]:
    """Folders (glob patterns) searched for the run's ``last.ckpt``, in the order above."""
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.dirpath is not None:
        return [str(callback.dirpath)]
    if trainer.loggers:
        logger = trainer.loggers[0]
        save_dir = logger.save_dir if logger.save_dir is not None else trainer.default_root_dir
        return [str(Path(save_dir) / str(logger.name) / "*" / "checkpoints")]
    return [str(Path(trainer.default_root_dir) / "checkpoints")]


def _is_last_name(name: str, callback: ModelCheckpoint | None) -> bool:
    stem = callback.CHECKPOINT_NAME_LAST if callback is not None else "last"
    suffix = callback.FILE_EXTENSION if callback is not None else ".ckpt"
    pattern = re.escape(stem) + r"(-v\d+)?" + re.escape(suffix)
    return re.fullmatch(pattern, name) is not None


def find_last_checkpoint(trainer: Trainer) -> Path | None:
    """The newest ``last.ckpt`` in :func:`last_checkpoint_folders`; ``None`` when there is none."""
    callback = trainer.checkpoint_callback
    callback = callback if isinstance(callback, ModelCheckpoint) else None
    found: list[Path] = []
    for folder in last_checkpoint_folders(trainer):
        for name in glob.glob(str(Path(folder) / "*")):
            candidate = Path(name)
            if candidate.is_file() and _is_last_name(candidate.name, callback):
                found.append(candidate)
    if not found:
        return None
    # Ties (same mtime) go to the later path name, e.g. version_10 over version_9 alike.
    return max(found, key=lambda path: (path.stat().st_mtime_ns, str(path)))

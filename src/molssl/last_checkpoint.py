"""Where ``molssl fit --ckpt_path last`` finds the checkpoint to resume.

Lightning looks for ``last.ckpt`` in the checkpoint callback's folder, which by default is inside
the logger's version folder; a restarted job gets a *new* version folder (``version_N+1``), finds
nothing there and starts from scratch with only a warning. We look where the interrupted run
wrote instead:

1. the checkpoint callback's ``dirpath``, when the user set one;
2. else every version folder of the run's logger: ``<save_dir>/<name>/*/checkpoints``
   (``version_0``, ``version_1``, a pinned string version, ...);
3. else, with no logger, ``<default_root_dir>/checkpoints``.

Lightning's SLURM pre-emption checkpoints (``<default_root_dir>/hpc_ckpt_N.ckpt``, written on
``SIGUSR1`` before a requeue) are candidates too. The newest ``last.ckpt`` (or ``last-vN.ckpt``,
Lightning's name when ``last.ckpt`` already existed) or ``hpc_ckpt_N.ckpt`` by modification
time wins: a restart logs into a new version folder and writes its own
``last.ckpt`` there, which is then the newest for the next restart. A candidate that is not a
complete PyTorch checkpoint (a job killed while Lightning wrote it, which it does in place) is
passed over for the next newest: :func:`unreadable_checkpoint_reason` checks the zip archive's
central directory, at the end of the file, without reading the weights.
"""

from __future__ import annotations

import glob
import re
import zipfile
from pathlib import Path

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["find_last_checkpoint", "last_checkpoint_folders", "unreadable_checkpoint_reason"]


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


def unreadable_checkpoint_reason(path: str | Path) -> str | None:
    """Why ``path`` cannot be a complete checkpoint written by ``torch.save``; ``None`` if it can.

    ``torch.save`` writes a zip archive whose directory is at the end, so a truncated file has
    none. The entries' contents are not read (a large checkpoint stays cheap to check).
    """
    path = Path(path)
    if not path.is_file():
        return "not a file"
    if path.stat().st_size == 0:
        return "empty file"
    try:
        with zipfile.ZipFile(path) as archive:
            if not any(name.endswith("data.pkl") for name in archive.namelist()):
                return "a zip archive without data.pkl, not a PyTorch checkpoint"
    except zipfile.BadZipFile:
        return "not a complete PyTorch checkpoint (truncated, or another kind of file)"
    return None


def find_last_checkpoint(trainer: Trainer) -> tuple[Path | None, list[str]]:
    """The newest readable ``last.ckpt`` in :func:`last_checkpoint_folders` or SLURM
    ``hpc_ckpt_N.ckpt`` (``None`` if none), and a ``"<path>: <reason>"`` note for each newer
    candidate passed over as unreadable."""
    callback = trainer.checkpoint_callback
    callback = callback if isinstance(callback, ModelCheckpoint) else None
    found: list[Path] = []
    for folder in last_checkpoint_folders(trainer):
        for name in glob.glob(str(Path(folder) / "*")):
            candidate = Path(name)
            if candidate.is_file() and _is_last_name(candidate.name, callback):
                found.append(candidate)
    for name in glob.glob(str(Path(trainer.default_root_dir) / "hpc_ckpt_*.ckpt")):
        if re.fullmatch(r"hpc_ckpt_\d+\.ckpt", Path(name).name):
            found.append(Path(name))
    # Newest first; ties (same mtime) go to the later path name.
    found.sort(key=lambda path: (path.stat().st_mtime_ns, str(path)), reverse=True)
    skipped: list[str] = []
    for candidate in found:
        reason = unreadable_checkpoint_reason(candidate)
        if reason is None:
            return candidate, skipped
        skipped.append(f"{candidate}: {reason}")
    return None, skipped

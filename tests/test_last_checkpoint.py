"""Where ``molssl fit --ckpt_path last`` looks, which file it takes, and which it passes over."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from molssl.last_checkpoint import (
    find_last_checkpoint,
    last_checkpoint_folders,
    unreadable_checkpoint_reason,
)


def save(path: Path, mtime: int, truncated: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"w": torch.arange(100.0)}}, path)
    if truncated:
        path.write_bytes(path.read_bytes()[:-40])
    os.utime(path, (mtime, mtime))
    return path


def trainer(tmp_path: Path, dirpath: Path | None = None, logger: bool = True) -> Trainer:
    return Trainer(
        default_root_dir=tmp_path,
        logger=TensorBoardLogger(tmp_path / "logs", name="run") if logger else False,
        callbacks=[ModelCheckpoint(dirpath=dirpath, save_last=True)],
        enable_progress_bar=False,
    )


def test_newest_complete_last_checkpoint_of_any_version_folder(tmp_path: Path) -> None:
    versions = tmp_path / "logs" / "run"
    oldest = save(versions / "version_0" / "checkpoints" / "last.ckpt", 1_000)
    renamed = save(versions / "version_1" / "checkpoints" / "last-v1.ckpt", 2_000)
    save(versions / "version_1" / "checkpoints" / "epoch=0-step=9.ckpt", 5_000)  # not a last
    broken = save(versions / "version_2" / "checkpoints" / "last.ckpt", 3_000, truncated=True)
    found, skipped = find_last_checkpoint(trainer(tmp_path))
    assert found == renamed
    assert skipped == [f"{broken}: {unreadable_checkpoint_reason(broken)}"]
    assert "truncated" in skipped[0]
    os.utime(oldest, (4_000, 4_000))
    assert find_last_checkpoint(trainer(tmp_path))[0] == oldest
    # A SLURM pre-emption checkpoint in the root folder, newer still.
    preempted = save(tmp_path / "hpc_ckpt_3.ckpt", 6_000)
    save(tmp_path / "hpc_ckpt_notes.ckpt", 7_000)  # not Lightning's name
    assert find_last_checkpoint(trainer(tmp_path))[0] == preempted


def test_dirpath_or_default_root_and_none_found(tmp_path: Path) -> None:
    pinned = tmp_path / "pinned"
    assert last_checkpoint_folders(trainer(tmp_path, dirpath=pinned)) == [str(pinned)]
    assert find_last_checkpoint(trainer(tmp_path, dirpath=pinned)) == (None, [])
    inside = save(pinned / "last.ckpt", 1_000)
    assert find_last_checkpoint(trainer(tmp_path, dirpath=pinned))[0] == inside
    no_logger = trainer(tmp_path, logger=False)
    assert last_checkpoint_folders(no_logger) == [str(tmp_path / "checkpoints")]
    assert find_last_checkpoint(no_logger)[0] is None


def test_unreadable_reasons(tmp_path: Path) -> None:
    (tmp_path / "empty.ckpt").write_bytes(b"")
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    assert unreadable_checkpoint_reason(tmp_path / "empty.ckpt") == "empty file"
    assert "not a complete" in str(unreadable_checkpoint_reason(tmp_path / "text.ckpt"))
    assert unreadable_checkpoint_reason(tmp_path / "absent.ckpt") == "not a file"
    assert unreadable_checkpoint_reason(save(tmp_path / "ok.ckpt", 1)) is None

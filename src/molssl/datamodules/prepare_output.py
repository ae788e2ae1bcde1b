"""The output directory of ``molssl prepare``: its lock, earlier runs, finished shards.

A data set directory being prepared holds the shards and their sidecars
(:mod:`molssl.datamodules.shards`), and ``.prepare.lock``, which one ``molssl prepare`` at a
time holds with ``flock`` (the OS releases it when the process dies, so a killed run never
blocks the next one). A shard counts as finished when its sidecar holds the current settings
and its tar still hashes to the sha256 the sidecar records.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from molssl.datamodules.shards import MANIFEST_FILE, TEMP_SUFFIX, file_sha256, shard_file_name
from molssl.errors import UserError

__all__ = [
    "PrepareError",
    "check_output",
    "finished_shard",
    "locked",
    "sidecar_file_name",
]

_LOCK_FILE = ".prepare.lock"


class PrepareError(UserError):
    """The output directory cannot take this preparation.

    Attributes:
        reason: ``settings_changed`` (prepared with other settings or inputs), ``output_busy``
            (another ``molssl prepare`` writes to it), ``output_not_directory``.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def sidecar_file_name(shard_index: int) -> str:
    """Sidecar of shard ``shard_index`` (``shard-000003.json``)."""
    return f"shard-{shard_index:06d}.json"


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``root`` (released by the OS if the process dies)."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): run unlocked
        yield
        return
    with open(root / _LOCK_FILE, "a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise PrepareError(
                f"another `molssl prepare` is writing to {root}", reason="output_busy"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _our_files(root: Path) -> list[Path]:
    patterns = ("shard-*.tar", "shard-*.json", MANIFEST_FILE, f".shard-*{TEMP_SUFFIX}")
    patterns += (f".{MANIFEST_FILE}.*{TEMP_SUFFIX}",)
    return sorted({path for pattern in patterns for path in root.glob(pattern)})


def _previous_settings(root: Path) -> dict[str, Any] | None:
    """Settings of an earlier preparation in ``root`` (manifest, else any sidecar)."""
    for path in [root / MANIFEST_FILE, *sorted(root.glob("shard-*.json"))]:
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(found, dict) and isinstance(found.get("settings"), dict):
            return found["settings"]
    return None


def check_output(root: Path, settings: dict[str, Any], overwrite: bool) -> None:
    previous = _previous_settings(root)
    if previous is not None and previous != settings:
        changed = sorted(k for k in {*previous, *settings} if previous.get(k) != settings.get(k))
        if not overwrite:
            raise PrepareError(
                f"{root} holds a preparation with other settings or inputs (changed: "
                f"{', '.join(changed)}); pass --overwrite to start over, or choose another "
                "output directory",
                reason="settings_changed",
            )
        print(
            f"molssl prepare: {root} was prepared with other {', '.join(changed)}; "
            "starting over (--overwrite)",
            file=sys.stderr,
        )
        for path in _our_files(root):
            path.unlink()
    for stale in root.glob(f".*{TEMP_SUFFIX}"):  # left by a killed run
        stale.unlink()


def finished_shard(root: Path, shard_index: int, settings: dict[str, Any]) -> dict | None:
    """The sidecar of shard ``shard_index`` if it and its tar are complete and current."""
    try:
        sidecar = json.loads((root / sidecar_file_name(shard_index)).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(sidecar, dict) or sidecar.get("settings") != settings:
        return None
    info = sidecar.get("info")
    if info is None:
        return sidecar
    tar = root / shard_file_name(shard_index)
    if not tar.is_file() or file_sha256(tar) != info.get("sha256"):
        return None
    return sidecar

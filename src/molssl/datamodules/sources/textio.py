"""Opening text sources, plain or gzipped, and telling a truncated gzip from a bad one."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import TextIO

from molssl.datamodules.sources.entry import SourceError

__all__ = ["TRUNCATION_ERRORS", "check_gzip", "is_gzip", "open_text"]

#: What reading a gzip stream raises when the file is cut or corrupt past its header.
TRUNCATION_ERRORS: tuple[type[BaseException], ...] = (EOFError, gzip.BadGzipFile, zlib.error)

_GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(path: Path) -> bool:
    """Whether ``path`` is named as gzipped (``.gz``)."""
    return path.suffix.lower() == ".gz"


def check_gzip(path: Path) -> None:
    """Raise :class:`SourceError` ``invalid_gzip`` when a ``.gz`` file has no gzip header.

    Checked before reading, so a file that is not gzip at all is a whole-file error rather than
    a ``truncated_file`` failure at line 1.
    """
    if not is_gzip(path):
        return
    with open(path, "rb") as handle:
        magic = handle.read(2)
    if magic and magic != _GZIP_MAGIC:
        raise SourceError(f"{path}: named .gz but is not a gzip file", reason="invalid_gzip")


def open_text(path: Path, newline: str | None = None) -> TextIO:
    """Open ``path`` for streaming text, decompressing ``.gz``.

    Undecodable bytes become U+FFFD instead of raising: a decoding error surfaces far from the
    line it is on, and a replaced character makes just that entry fail to parse. A UTF-8 byte
    order mark (spreadsheet exports) is dropped, so it cannot hide a CSV header's first name.
    """
    if is_gzip(path):
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="replace", newline=newline)
    return open(path, encoding="utf-8-sig", errors="replace", newline=newline)

"""Helpers shared by the source tests: writing real molecules to files, cutting gzip streams."""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from pathlib import Path

from molssl.datamodules.sources.entry import SourceEntry


def write_gzip(path: Path, text: str) -> Path:
    """Write ``text`` gzipped at ``path``."""
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(text)
    return path


def truncate_gzip(source: Path, target: Path, keep_fraction: float) -> Path:
    """Copy the first ``keep_fraction`` of ``source``'s compressed bytes to ``target``."""
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep_fraction)])
    return target


def reasons(entries: Iterable[SourceEntry]) -> list[str | None]:
    """Failure reason of each entry (None when it was read)."""
    return [entry.failure.reason if entry.failure is not None else None for entry in entries]


def assert_accounted(entries: list[SourceEntry]) -> None:
    """Every entry of one file is numbered 0..n-1 in order, lines strictly increasing."""
    assert [entry.index for entry in entries] == list(range(len(entries)))
    lines = [entry.line for entry in entries]
    assert lines == sorted(lines) and len(set(lines)) == len(lines)

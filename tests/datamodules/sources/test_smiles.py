"""SMILES-per-line sources: real NCI molecules, names, blank lines, headers, cut gzip streams."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

import pytest

from molssl.datamodules.sources import iter_source
from molssl.datamodules.sources import smiles as smiles_module
from molssl.datamodules.sources.textio import open_text
from tests.conftest import NCI_SMILES
from tests.datamodules.sources.helpers import (
    assert_accounted,
    reasons,
    truncate_gzip,
    write_gzip,
)


def _nci_lines(n: int) -> list[str]:
    with open(NCI_SMILES) as handle:
        return [next(handle).rstrip("\n") for _ in range(n)]


def test_reads_nci_file_with_names_in_order(tmp_path: Path) -> None:
    lines = _nci_lines(200)
    path = tmp_path / "nci.smi"
    path.write_text("\n".join(lines) + "\n")
    entries = list(iter_source(path))
    assert [e.smiles for e in entries] == [line.split("\t")[0] for line in lines]
    assert [e.source_id for e in entries] == [line.split("\t")[1] for line in lines]
    assert [e.line for e in entries] == list(range(1, 201))
    assert all(e.source == str(path) and e.mol is None and e.failure is None for e in entries)
    assert_accounted(entries)


def test_gzip_reads_the_same_as_plain(tmp_path: Path) -> None:
    text = "\n".join(_nci_lines(50)) + "\n"
    plain = tmp_path / "a.smi"
    plain.write_text(text)
    gz = write_gzip(tmp_path / "a.smi.gz", text)
    fields = [(e.index, e.line, e.source_id, e.smiles) for e in iter_source(plain)]
    assert fields == [(e.index, e.line, e.source_id, e.smiles) for e in iter_source(gz)]


def test_blank_lines_fail_in_place_and_header_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "mixed.txt"
    path.write_text("SMILES Name\nCCO ethanol\n\n   \nC1CC broken ring\n[Xx]\nc1ccccc1\n")
    entries = list(iter_source(path))
    assert reasons(entries) == [None, "empty_input", "empty_input", None, None, None]
    assert [e.line for e in entries] == [2, 3, 4, 5, 6, 7]
    assert [e.smiles for e in entries] == ["CCO", None, None, "C1CC", "[Xx]", "c1ccccc1"]
    # The name is the rest of the line; unnamed entries get "file:index".
    assert [e.source_id for e in entries] == [
        "ethanol",
        "mixed.txt:1",
        "mixed.txt:2",
        "broken ring",
        "mixed.txt:4",
        "mixed.txt:5",
    ]
    assert_accounted(entries)


def test_no_header_means_first_line_is_an_entry(tmp_path: Path) -> None:
    path = tmp_path / "b.smi"
    path.write_text("CCO\nCCN\n")
    assert [e.smiles for e in iter_source(path)] == ["CCO", "CCN"]


@pytest.mark.parametrize("keep_fraction", [0.3, 0.7, 0.95])
def test_truncated_gzip_gives_one_failure_then_stops(tmp_path: Path, keep_fraction: float) -> None:
    lines = _nci_lines(2000)
    full = write_gzip(tmp_path / "full.smi.gz", "\n".join(lines) + "\n")
    cut = truncate_gzip(full, tmp_path / "cut.smi.gz", keep_fraction)
    entries = list(iter_source(cut))
    assert reasons(entries)[-1] == "truncated_file"
    assert all(reason is None for reason in reasons(entries)[:-1])
    read = entries[:-1]
    assert [e.smiles for e in read] == [line.split("\t")[0] for line in lines[: len(read)]]
    assert 0 < len(read) < len(lines)
    assert entries[-1].line == len(read) + 1
    assert_accounted(entries)


class _CountingHandle:
    """A text handle that counts the lines taken from it and keeps the compressed file."""

    def __init__(self, handle: TextIO) -> None:
        self.handle = handle
        self.lines_read = 0

    def __enter__(self) -> _CountingHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()

    def readline(self) -> str:
        line = self.handle.readline()
        self.lines_read += 1 if line else 0
        return line


def test_reads_lazily_from_a_large_gzip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _nci_lines(1000) * 50  # 50k lines, about 0.5 MB compressed
    path = write_gzip(tmp_path / "big.smi.gz", "\n".join(lines) + "\n")
    opened: list[_CountingHandle] = []

    def counting_open(file: Path, newline: str | None = None) -> _CountingHandle:
        opened.append(_CountingHandle(open_text(file, newline)))
        return opened[-1]

    monkeypatch.setattr(smiles_module, "open_text", counting_open)
    iterator = iter_source(path)
    first = [next(iterator) for _ in range(5)]
    assert [e.smiles for e in first] == [line.split("\t")[0] for line in lines[:5]]
    assert opened[0].lines_read == 5
    # The gzip reader pulled a few buffers of compressed bytes, not the whole file.
    compressed_read = opened[0].handle.buffer.fileobj.tell()
    assert compressed_read < path.stat().st_size / 10
    assert sum(1 for _ in iterator) == len(lines) - 5
    assert opened[0].lines_read == len(lines)

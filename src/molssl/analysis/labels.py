"""A label column of the input, aligned with the entries of :func:`iter_source`.

Labels are read apart from the molecules, from the same file, and keyed by the entry's
``(source, index)``: ``index`` counts every entry read, failed ones included, so a label never
moves to another molecule. CSV files give the named column (exact name first, then any case);
SDF files give the data field ``> <name>`` of each record. SMILES files have no columns.

:func:`label_kind` decides how a column is used: numbers with at most ``max_classes``
distinct integer values are classes, other numbers are continuous, text is classes.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from molssl.analysis.errors import EmbedError
from molssl.datamodules.sources import SourceError, source_files
from molssl.datamodules.sources.table import csv_columns
from molssl.datamodules.sources.textio import TRUNCATION_ERRORS, open_text

__all__ = ["LabelKind", "LabelTable", "is_missing", "label_kind", "parse_number"]

LabelKind = Literal["class", "continuous"]
_RECORD_END = "$$$$"
_MISSING = frozenset({"", "nan", "na", "n/a", "none", "null"})


class LabelTable:
    """Raw label text of every entry of an input, by ``(source, index)``.

    Args:
        path: The input given to :func:`~molssl.datamodules.sources.iter_source` (a file or a
            directory of files).
        column: Column (CSV) or data field (SDF) name.

    Raises:
        EmbedError: ``labels_unsupported`` for SMILES/JSON files, ``no_label_column`` when a
            CSV header lacks the column.
    """

    def __init__(self, path: str | Path, column: str) -> None:
        self.column = column
        self._values: dict[str, list[str]] = {}
        for file in source_files(path):
            # The entries' ``source``: the path as given for a file, as listed for a directory.
            name = os.fspath(path) if Path(path) == file else str(file)
            self._values[name] = list(self._read(file))

    def value(self, source: str, index: int) -> str:
        """The label text of entry ``index`` of ``source`` (``""`` when missing)."""
        values = self._values.get(source, [])
        return values[index] if 0 <= index < len(values) else ""

    def _read(self, file: Path) -> Iterator[str]:
        name = file.name.lower().removesuffix(".gz")
        if name.endswith(".csv"):
            return _csv_column(file, self.column)
        if name.endswith(".sdf"):
            return _sdf_field(file, self.column)
        raise EmbedError(
            "labels_unsupported",
            f"{file}: --label-column needs a CSV or SDF input; a {Path(name).suffix} file has "
            "no label columns",
        )


def _csv_column(file: Path, column: str) -> Iterator[str]:
    try:
        position = csv_columns(file, smiles_column=column).smiles
    except SourceError as error:
        raise EmbedError("no_label_column", f"label column {column!r}: {error}") from None
    with open_text(file, newline="") as handle:
        reader = csv.reader(handle)
        try:
            next(reader)
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error:
                    # iter_source counts an unreadable row as an entry too.
                    yield ""
                    continue
                yield row[position].strip() if position < len(row) else ""
        except TRUNCATION_ERRORS:
            return


def _sdf_field(file: Path, field: str) -> Iterator[str]:
    wanted = field.lower()
    value = ""
    take_next = False
    with open_text(file) as handle:
        try:
            for raw in handle:
                line = raw.rstrip("\r\n")
                if take_next:
                    value, take_next = line.strip(), False
                elif line.strip() == _RECORD_END:
                    yield value
                    value = ""
                elif line.startswith(">") and "<" in line:
                    name = line[line.index("<") + 1 :].split(">", 1)[0]
                    take_next = name.lower() == wanted and not value
        except TRUNCATION_ERRORS:
            return


def is_missing(text: str) -> bool:
    """Whether a label cell says "no value" (blank, ``nan``, ``NA``, ``None``, ``null``)."""
    return text.strip().lower() in _MISSING


def parse_number(text: str) -> float:
    """The label as a float; ``nan`` for a missing or non-numeric cell."""
    if is_missing(text):
        return math.nan
    try:
        return float(text)
    except ValueError:
        return math.nan


def label_kind(values: Sequence[str], max_classes: int = 10) -> LabelKind:
    """Whether the labels are classes or continuous (see the module docstring).

    Missing cells (:func:`is_missing`) are ignored; labels all missing count as classes.
    """
    present = [value for value in values if not is_missing(value)]
    numbers = [parse_number(value) for value in present]
    if not present or any(math.isnan(number) for number in numbers):
        return "class"
    distinct = set(numbers)
    if len(distinct) <= max_classes and all(number.is_integer() for number in distinct):
        return "class"
    return "continuous"

"""Reading a MoleculeNet-style CSV: one SMILES column, label columns, blank = missing.

Every data row is one entry: entry ``i`` (0-based, blank lines included) becomes the
molecule's ``mol_id``, so a label can never move to another molecule whatever fails before
it. Row-level problems of the molecule itself (an empty line, an empty SMILES cell, a cell
with whitespace inside, which RDKit would cut at the space) are left to preparation, which
drops the entry with its labels and a reason. Problems of the file (empty, truncated, missing
column, a label that is not a number, a label column blank in every row, a row with the wrong
number of fields) raise :class:`MoleculeNetFormatError` naming the file, line and column.
Columns are found by name as ``molssl prepare`` finds them: the exact name, else any case.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from molssl.datamodules.sources.table import find_column
from molssl.errors import UserError

__all__ = ["LabelTable", "MoleculeNetFormatError", "read_label_table"]


class MoleculeNetFormatError(UserError):
    """A MoleculeNet CSV that cannot be read as asked.

    Attributes:
        path: The file.
        line: 1-based line of the problem (``None`` for the whole file).
        column: The column concerned, if any.
        reason: ``missing_file``, ``empty_file``, ``missing_column``, ``duplicate_column``,
            ``no_label_column``, ``no_labels`` (a label column blank in every row),
            ``ragged_row``, ``truncated_file``, ``non_numeric_label``, ``non_finite_label``,
            ``invalid_class_label`` or ``unreadable_file``.
    """

    def __init__(
        self,
        message: str,
        path: str | os.PathLike[str],
        reason: str,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        where = f"{path}" + (f", line {line}" if line is not None else "")
        where += f", column {column!r}" if column is not None else ""
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line
        self.column = column
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[str, str, str, int | None, str | None]]:
        message = str(self).split(": ", 1)[-1]
        return (type(self), (message, self.path, self.reason, self.line, self.column))


@dataclass
class LabelTable:
    """The entries of a CSV.

    Attributes:
        smiles: SMILES of every entry (``""`` for a blank line or empty cell).
        labels: ``(entries, T)`` float64, NaN where the cell is blank.
        lines: 1-based line where each entry starts.
        task_names: The ``T`` label columns, in order.
    """

    smiles: list[str]
    labels: np.ndarray
    lines: list[int]
    task_names: list[str]

    @property
    def read(self) -> int:
        """Entries read (data rows, blank lines included)."""
        return len(self.smiles)


def _open(path: Path) -> IO[str]:
    # newline="" lets the csv module see quoted newlines; utf-8-sig drops a byte-order mark.
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(first line, fields)`` of every row; file-level read errors become typed errors."""
    line = 0
    try:
        with _open(path) as handle:
            reader = csv.reader(handle, strict=True)
            for fields in reader:
                yield line + 1, fields
                line = reader.line_num
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise MoleculeNetFormatError(
            f"the compressed file ends early or is damaged ({error}); download it again",
            path,
            "truncated_file",
            line=line + 1,
        ) from None
    except csv.Error as error:
        raise MoleculeNetFormatError(
            f"not valid CSV ({error}); the file may be cut off inside a quoted field",
            path,
            "truncated_file",
            line=line + 1,
        ) from None
    except UnicodeDecodeError as error:
        raise MoleculeNetFormatError(
            f"not UTF-8 text ({error})", path, "unreadable_file", line=line + 1
        ) from None


def _ends_with_newline(path: Path) -> bool:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    return data.endswith((b"\n", b"\r"))


def _parse_label(text: str, classification: bool, path: Path, line: int, column: str) -> float:
    cell = text.strip()
    if not cell:
        return math.nan
    try:
        value = float(cell)
    except ValueError:
        hint = "leave the cell blank for a missing label"
        if "\u2212" in cell:
            hint = "'\u2212' is the typographic minus sign U+2212; write '-' (U+002D)"
        raise MoleculeNetFormatError(
            f"label {text!r} is not a number ({hint})",
            path,
            "non_numeric_label",
            line=line,
            column=column,
        ) from None
    if math.isnan(value):
        return math.nan
    if not math.isfinite(value):
        raise MoleculeNetFormatError(
            f"label {text!r} is not finite", path, "non_finite_label", line=line, column=column
        )
    if classification and value not in (0.0, 1.0):
        raise MoleculeNetFormatError(
            f"classification label {text!r} is neither 0 nor 1",
            path,
            "invalid_class_label",
            line=line,
            column=column,
        )
    return value


def read_label_table(
    path: str | os.PathLike[str],
    smiles_column: str,
    target_columns: Sequence[str] | None,
    classification: bool,
) -> LabelTable:
    """Read every entry of a MoleculeNet CSV (``.csv`` or ``.csv.gz``).

    Args:
        path: The file.
        smiles_column: Header of the SMILES column.
        target_columns: Label columns in task order; ``None`` for all other columns.
        classification: Labels must be 0 or 1 (else any finite number).

    Raises:
        MoleculeNetFormatError: Naming the file, line and column of the problem.
    """
    source = Path(path)
    if not source.is_file():
        raise MoleculeNetFormatError("no such file", source, "missing_file")
    rows = _rows(source)
    header_line, header = next(rows, (1, []))
    header = [name.strip() for name in header]
    if not any(header):
        raise MoleculeNetFormatError(
            "empty file: expected a header line naming the SMILES and label columns",
            source,
            "empty_file",
            line=header_line,
        )
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise MoleculeNetFormatError(
            f"header names {duplicates} more than once",
            source,
            "duplicate_column",
            line=header_line,
            column=duplicates[0],
        )
    smiles_at = _column(header, smiles_column, source, header_line)
    if target_columns is None:
        targets = [name for i, name in enumerate(header) if i != smiles_at]
    else:
        targets = list(target_columns)
    if not targets:
        raise MoleculeNetFormatError(
            "no label column besides the SMILES column", source, "no_label_column", header_line
        )
    target_at = [_column(header, name, source, header_line) for name in targets]
    targets = [header[i] for i in target_at]
    smiles: list[str] = []
    labels: list[list[float]] = []
    lines: list[int] = []
    last_ragged: int | None = None
    ragged_fields = 0
    for line, fields in rows:
        if last_ragged is not None:
            raise _ragged(source, last_ragged, ragged_fields, len(header), truncated=False)
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            smiles.append("")
            labels.append([math.nan] * len(targets))
            lines.append(line)
            continue
        if len(fields) != len(header):
            last_ragged = line  # the last row of a cut-off file, or a malformed row
            ragged_fields = len(fields)
            continue
        smiles.append(fields[smiles_at].strip())
        labels.append(
            [
                _parse_label(fields[i], classification, source, line, name)
                for i, name in zip(target_at, targets, strict=True)
            ]
        )
        lines.append(line)
    if last_ragged is not None:
        truncated = ragged_fields < len(header) and not _ends_with_newline(source)
        raise _ragged(source, last_ragged, ragged_fields, len(header), truncated=truncated)
    array = np.asarray(labels, dtype=np.float64).reshape(len(smiles), len(targets))
    unlabelled = [
        name for name, column in zip(targets, array.T, strict=True) if np.isnan(column).all()
    ]
    if len(smiles) and unlabelled:
        raise MoleculeNetFormatError(
            f"no label in any of the {len(smiles)} rows: a task without labels can be neither "
            "trained nor evaluated (leave the column out of target_columns)",
            source,
            "no_labels",
            column=unlabelled[0],
        )
    return LabelTable(smiles=smiles, labels=array, lines=lines, task_names=targets)


def _column(header: list[str], name: str, path: Path, line: int) -> int:
    # The same rule as molssl prepare's CSV reader: the exact name, else the name in any case.
    found = find_column(header, name)
    if found is None:
        raise MoleculeNetFormatError(
            f"no such column (names match in any case); the header has {header}",
            path,
            "missing_column",
            line=line,
            column=name,
        )
    return found


def _ragged(
    path: Path, line: int, found: int, expected: int, truncated: bool
) -> MoleculeNetFormatError:
    if truncated:
        return MoleculeNetFormatError(
            f"the last row is cut off ({found} of the header's {expected} fields and no final "
            "newline); the file looks truncated",
            path,
            "truncated_file",
            line=line,
        )
    return MoleculeNetFormatError(
        f"row has {found} fields, the header {expected} (quote fields that contain commas)",
        path,
        "ragged_row",
        line=line,
    )

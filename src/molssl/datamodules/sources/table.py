"""CSV files with a SMILES column (``.csv``, optionally ``.gz``), read with the ``csv`` module.

The SMILES column is the one named ``smiles_column`` (exact name first, then any case), or else
the one named ``smiles`` in any case. An ``id``, ``name`` or ``cid`` column (any case, first
found in that order) names the molecules. Quoted fields, including quoted line breaks, follow
RFC 4180; an entry's line is the physical line its row starts on. A blank row or an empty SMILES
cell fails as ``empty_input``; a row with another number of fields than the header (an
unquoted comma moves every later field) as ``ragged_row``; one the ``csv`` module rejects as
``invalid_record``. A cell with whitespace inside the SMILES fails when it is parsed
(:func:`~molssl.chem.features.mol_from_smiles`): a CSV cell is one SMILES, not a ``.smi``
line. A gzip stream that ends early gives one ``truncated_file`` failure at the line reached,
and the file stops.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from molssl.chem.errors import InvalidSmilesError, MoleculeError
from molssl.datamodules.sources.entry import (
    SourceEntry,
    SourceError,
    SourceRecordError,
    default_source_id,
)
from molssl.datamodules.sources.textio import TRUNCATION_ERRORS, open_text

__all__ = ["CsvColumns", "csv_columns", "csv_header", "find_column", "iter_csv_file"]

_NAME_COLUMNS = ("id", "name", "cid")


@dataclass(frozen=True)
class CsvColumns:
    """Where the SMILES and the name are in a CSV file's rows."""

    smiles: int
    name: int | None
    header: tuple[str, ...]


def find_column(header: Sequence[str], wanted: str) -> int | None:
    """Position of column ``wanted`` in ``header``: the exact name first, then any case.

    The one rule for naming a column, shared by ``molssl prepare`` and the MoleculeNet reader,
    so that a file one of them accepts the other does too (``SMILES`` for ``smiles``).
    """
    header = list(header)
    if wanted in header:
        return header.index(wanted)
    lowered = [cell.strip().lower() for cell in header]
    return lowered.index(wanted.lower()) if wanted.lower() in lowered else None


def csv_header(path: str | Path) -> list[str]:
    """The first row of a CSV file (``[]`` for an empty file).

    Raises:
        SourceError: ``truncated_file`` when a gzip stream ends inside the header,
            ``unreadable_file`` when the ``csv`` module rejects it.
    """
    try:
        with open_text(Path(path), newline="") as handle:
            return next(csv.reader(handle), None) or []
    except TRUNCATION_ERRORS as error:
        raise SourceError(
            f"{path}: compressed stream ends inside the header ({error})", reason="truncated_file"
        ) from None
    except csv.Error as error:
        raise SourceError(
            f"{path}: unreadable CSV header ({error})", reason="unreadable_file"
        ) from None


def csv_columns(path: str | Path, smiles_column: str | None = None) -> CsvColumns:
    """Read the header of a CSV file and locate its SMILES and name columns.

    Raises:
        SourceError: ``no_smiles_column`` when the header (or the file) has no such column,
            ``truncated_file`` when a gzip stream ends inside the header.
    """
    wanted = smiles_column if smiles_column is not None else "smiles"
    header = csv_header(path)
    if not header:
        raise SourceError(f"{path}: no header row (empty file?)", reason="no_smiles_column")
    smiles = find_column(header, wanted)
    if smiles is None:
        hint = "" if smiles_column is not None else "; name it with smiles_column"
        raise SourceError(
            f"{path}: no column {wanted!r} in the header {header}{hint}",
            reason="no_smiles_column",
        )
    name = next(
        (i for key in _NAME_COLUMNS if (i := find_column(header, key)) is not None and i != smiles),
        None,
    )
    return CsvColumns(smiles=smiles, name=name, header=tuple(header))


def iter_csv_file(path: str | Path, columns: CsvColumns) -> Iterator[SourceEntry]:
    """Entries of a CSV file (one per row after the header), in file order."""
    source = str(path)
    index = 0
    with open_text(Path(path), newline="") as handle:
        reader = csv.reader(handle)
        try:
            next(reader)
        except TRUNCATION_ERRORS:
            # csv_columns read this header a moment ago; a file cut since is a truncated tail.
            yield _truncated(source, index, reader.line_num + 1)
            return
        while True:
            line = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except TRUNCATION_ERRORS as error:
                yield _truncated(source, index, line, error)
                return
            except csv.Error as error:
                yield SourceEntry(
                    source=source,
                    index=index,
                    line=line,
                    source_id=default_source_id(source, index),
                    failure=SourceRecordError(f"{source}:{line}: unreadable row ({error})"),
                )
                index += 1
                continue
            yield _row_entry(source, index, line, row, columns)
            index += 1


def _truncated(
    source: str, index: int, line: int, error: BaseException | None = None
) -> SourceEntry:
    detail = f" ({error})" if error is not None else ""
    return SourceEntry(
        source=source,
        index=index,
        line=line,
        source_id=default_source_id(source, index),
        failure=SourceRecordError(
            f"{source}: compressed stream ends early at line {line}{detail}",
            reason="truncated_file",
        ),
    )


def _row_entry(
    source: str, index: int, line: int, row: list[str], columns: CsvColumns
) -> SourceEntry:
    name = ""
    if columns.name is not None and columns.name < len(row):
        name = row[columns.name].strip()
    source_id = name or default_source_id(source, index)
    failure: MoleculeError | None = None
    smiles = ""
    if not any(cell.strip() for cell in row):
        failure = InvalidSmilesError(f"{source}:{line}: blank row", reason="empty_input")
    elif len(row) != len(columns.header):
        # A field too many or too few (an unquoted comma in a name) moves the SMILES and the
        # name to other columns: the row fails rather than pairing a molecule with a stranger.
        failure = SourceRecordError(
            f"{source}:{line}: row has {len(row)} field(s), the header {len(columns.header)} "
            f"(the SMILES column {columns.header[columns.smiles]!r} is field "
            f"{columns.smiles + 1}; quote fields that contain commas)",
            reason="ragged_row",
        )
    else:
        smiles = row[columns.smiles].strip()
        if not smiles:
            failure = InvalidSmilesError(
                f"{source}:{line}: empty SMILES cell", reason="empty_input"
            )
    if failure is not None:
        return SourceEntry(source, index, line, source_id, failure=failure)
    return SourceEntry(source, index, line, source_id, smiles=smiles)

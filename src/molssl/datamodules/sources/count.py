"""How many entries an input holds, counted without parsing a molecule.

``molssl prepare`` needs the number before it starts: for the total and ETA of its progress
bar, and to choose a shard size that leaves more than one shard for a small input. Parsing
every molecule twice would double the reading time of an SDF, so entries are counted the
cheap way: lines of a SMILES file (blank lines count, as the reader makes them failed entries;
a ``smiles`` header does not), rows of a CSV, ``$$$$`` lines of an SDF (plus a last record cut
before its terminator), one per PubChemQC JSON file. For a damaged file the count may be off
by one; it is an estimate for display and sizing, never used to number entries.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from molssl.datamodules.sources.dispatch import _kind, source_files
from molssl.datamodules.sources.textio import TRUNCATION_ERRORS, open_text

__all__ = ["count_entries", "count_file_entries"]


def count_entries(inputs: Sequence[str | os.PathLike[str]]) -> int:
    """Entries of every input (files or directories, as ``iter_source`` reads them).

    Raises:
        SourceError: An input that :func:`~molssl.datamodules.sources.source_files` refuses.
    """
    return sum(count_file_entries(file) for given in inputs for file in source_files(given))


def count_file_entries(path: str | os.PathLike[str]) -> int:
    """Entries of one input file (see the module docstring)."""
    path = Path(path)
    kind = _kind(path)
    if kind == "json":
        return 1
    count = 0
    try:
        with open_text(path, newline="" if kind == "csv" else None) as handle:
            if kind == "csv":
                count = -1  # the header
                for _ in csv.reader(handle):
                    count += 1
            elif kind == "sdf":
                pending = False
                for line in handle:
                    if line.strip() == "$$$$":
                        count, pending = count + 1, False
                    elif line.strip():
                        pending = True
                count += pending
            else:
                for number, line in enumerate(handle):
                    parts = line.split(maxsplit=1)
                    count += not (number == 0 and parts and parts[0].lower() == "smiles")
    except TRUNCATION_ERRORS:
        count += 1  # the reader gives one truncated_file entry where the stream ends
    except csv.Error:
        pass  # a broken row: the reader reports it; the count so far is the estimate
    return max(count, 0)

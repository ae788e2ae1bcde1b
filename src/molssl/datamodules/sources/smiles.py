"""SMILES-per-line files (``.smi``, ``.txt``, optionally ``.gz``).

Each line is a SMILES followed, after whitespace, by an optional name (the rest of the line,
RDKit's and ChEMBL's convention, so tab- and space-separated files both read). A first line
whose first word is ``smiles`` (any case) is a header and not an entry. A blank line is an
entry that fails as ``empty_input``, so line-aligned label files stay aligned. A gzip stream
that ends early gives one ``truncated_file`` failure at the line reached, and the file stops.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from molssl.chem.errors import InvalidSmilesError
from molssl.datamodules.sources.entry import SourceEntry, SourceRecordError, default_source_id
from molssl.datamodules.sources.textio import TRUNCATION_ERRORS, open_text

__all__ = ["iter_smiles_file"]


def iter_smiles_file(path: str | Path) -> Iterator[SourceEntry]:
    """Entries of a SMILES-per-line file, in file order, one per line after the header."""
    source = str(path)
    index = 0
    line_no = 0
    with open_text(Path(path)) as handle:
        while True:
            try:
                line = handle.readline()
            except TRUNCATION_ERRORS as error:
                yield SourceEntry(
                    source=source,
                    index=index,
                    line=line_no + 1,
                    source_id=default_source_id(source, index),
                    failure=SourceRecordError(
                        f"{source}: compressed stream ends early after line {line_no} ({error})",
                        reason="truncated_file",
                    ),
                )
                return
            if not line:
                return
            line_no += 1
            parts = line.split(maxsplit=1)
            if line_no == 1 and parts and parts[0].lower() == "smiles":
                continue
            name = parts[1].strip() if len(parts) > 1 else ""
            source_id = name or default_source_id(source, index)
            if not parts:
                yield SourceEntry(
                    source=source,
                    index=index,
                    line=line_no,
                    source_id=source_id,
                    failure=InvalidSmilesError(
                        f"{source}:{line_no}: blank line", reason="empty_input"
                    ),
                )
            else:
                yield SourceEntry(
                    source=source, index=index, line=line_no, source_id=source_id, smiles=parts[0]
                )
            index += 1

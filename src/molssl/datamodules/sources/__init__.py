"""Input sources of ``molssl prepare``: files of molecules → :class:`SourceEntry` streams.

:func:`iter_source` reads SMILES files (``.smi``, ``.txt``), CSV files with a SMILES column,
SDF files with 3D coordinates and PubChemQC per-molecule JSON, each optionally gzipped, or a
directory of those. Files are streamed, never loaded whole. Every entry read comes out, in file
order, as a :class:`SourceEntry` holding a SMILES, a 3D molecule or the reason it could not be
read; :func:`entry_to_record` turns the first two into a
:class:`~molssl.datamodules.records.MoleculeRecord`.
"""

from __future__ import annotations

from molssl.datamodules.sources.dispatch import (
    SUPPORTED_SUFFIXES,
    iter_files,
    iter_source,
    source_files,
)
from molssl.datamodules.sources.entry import SourceEntry, SourceError, SourceRecordError
from molssl.datamodules.sources.to_record import InvalidStructureError, entry_to_record

__all__ = [
    "SUPPORTED_SUFFIXES",
    "InvalidStructureError",
    "SourceEntry",
    "SourceError",
    "SourceRecordError",
    "entry_to_record",
    "iter_files",
    "iter_source",
    "source_files",
]

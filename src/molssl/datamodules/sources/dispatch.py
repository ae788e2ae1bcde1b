"""Choosing the reader of each input file by its suffix; directories of inputs.

A ``.csv`` whose header has qm9pack's ``XYZ_Ang`` and ``Elements`` columns is read as QM9 with
its DFT coordinates (:mod:`~molssl.datamodules.sources.qm9pack`), any other as SMILES. The names
of :data:`~molssl.datamodules.sources.packages.PACKAGE_INPUTS` (``qm9pack``, ``moses``, ...)
stand for the data files of those packages (:mod:`~molssl.datamodules.sources.packages`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from molssl.datamodules.sources.entry import SourceEntry, SourceError
from molssl.datamodules.sources.packages import is_package_input, package_input_files
from molssl.datamodules.sources.pubchemqc import iter_pubchemqc_file
from molssl.datamodules.sources.qm9pack import is_qm9pack_header, iter_qm9pack_file
from molssl.datamodules.sources.sdf import iter_sdf_file
from molssl.datamodules.sources.smiles import iter_smiles_file
from molssl.datamodules.sources.table import csv_columns, csv_header, iter_csv_file
from molssl.datamodules.sources.textio import check_gzip

__all__ = ["SUPPORTED_SUFFIXES", "iter_files", "iter_source", "source_files"]

_KINDS = {".smi": "smiles", ".txt": "smiles", ".csv": "csv", ".sdf": "sdf", ".json": "json"}
_READERS: dict[str, Callable[[str], Iterator[SourceEntry]]] = {
    "smiles": iter_smiles_file,
    "sdf": iter_sdf_file,
    "json": iter_pubchemqc_file,
}

#: File suffixes :func:`iter_source` reads (each also with ``.gz`` appended).
SUPPORTED_SUFFIXES: tuple[str, ...] = tuple(sorted(_KINDS))


def _kind(path: Path) -> str | None:
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return _KINDS.get(suffixes[-1]) if suffixes else None


def source_files(
    path: str | os.PathLike[str], exclude: str | os.PathLike[str] | None = None
) -> list[Path]:
    """The files ``path`` stands for: itself, a directory's supported files, or a package's.

    A directory is walked recursively; its files with a supported suffix (hidden ones aside)
    come in sorted order of their path relative to it, and other files are ignored, as is
    everything under ``exclude`` (the output directory of ``molssl prepare``, whose shards and
    ``manifest.json`` must never be read back as input).

    Raises:
        SourceError: ``missing_file``, ``unknown_suffix`` (for a file named directly),
            ``no_supported_files`` (a directory without any), ``missing_package`` (a package
            input whose package is not installed).
    """
    if is_package_input(path):
        return package_input_files(str(path))
    root = Path(path)
    skipped = Path(exclude).resolve() if exclude is not None else None
    if root.is_dir():
        files = sorted(
            (
                file
                for file in root.rglob("*")
                if file.is_file()
                and _kind(file) is not None
                and not any(part.startswith(".") for part in file.relative_to(root).parts)
                and (skipped is None or not file.resolve().is_relative_to(skipped))
            ),
            key=lambda file: file.relative_to(root).as_posix(),
        )
        if not files:
            raise SourceError(
                f"{root}: no file with a supported suffix ({', '.join(SUPPORTED_SUFFIXES)}, "
                "optionally .gz)",
                reason="no_supported_files",
            )
        return files
    if not root.exists():
        raise SourceError(f"{root}: no such file or directory", reason="missing_file")
    if _kind(root) is None:
        raise SourceError(
            f"{root}: unknown input type {''.join(root.suffixes) or '(no suffix)'}; supported: "
            f"{', '.join(SUPPORTED_SUFFIXES)}, each optionally .gz, or a directory of those",
            reason="unknown_suffix",
        )
    return [root]


def iter_source(
    path: str | os.PathLike[str], smiles_column: str | None = None
) -> Iterator[SourceEntry]:
    """Stream the entries of an input file or directory, in file order.

    Whole-file problems (missing file, unknown suffix, a ``.gz`` that is not gzip, a CSV without
    its SMILES column) are found here, before the first entry, for every file of a directory.

    Args:
        path: A ``.smi``/``.txt`` (SMILES per line), ``.csv`` (SMILES column, or qm9pack's
            layout with DFT coordinates), ``.sdf`` (3D records) or ``.json`` (PubChemQC
            B3LYP@PM6) file, each optionally ``.gz``, a directory of those, or a package input
            (``qm9pack``, ``moses``, ``moses:test``, ``moses:test_scaffolds``).
        smiles_column: Name of the SMILES column of CSV files (default: ``smiles``, any case).

    Returns:
        A lazy iterator of :class:`SourceEntry`; ``index`` and ``line`` count per file.

    Raises:
        SourceError: With a ``reason``, see :func:`source_files`; ``no_smiles_column``,
            ``invalid_gzip``.
    """
    names = [
        # When `path` is a file, report it as given, else as listed from its directory.
        os.fspath(path) if Path(path) == file else str(file)
        for file in source_files(path)
    ]
    return iter_files(names, smiles_column)


def iter_files(
    files: Sequence[str | os.PathLike[str]], smiles_column: str | None = None
) -> Iterator[SourceEntry]:
    """Stream the entries of a list of input files, in order (see :func:`iter_source`).

    Every file is checked (suffix, gzip header, CSV header) before the first entry is read.

    Raises:
        SourceError: As :func:`iter_source`.
    """
    readers: list[Callable[[], Iterator[SourceEntry]]] = []
    for given in files:
        file = Path(given)
        kind = _kind(file)
        if kind is None:
            source_files(file)  # a missing file or an unknown suffix: its own error
            raise SourceError(f"{file}: a directory, not an input file", reason="unknown_suffix")
        check_gzip(file)
        name = os.fspath(given)
        if kind == "csv" and is_qm9pack_header(csv_header(file)):
            readers.append(lambda name=name: iter_qm9pack_file(name))
        elif kind == "csv":
            columns = csv_columns(file, smiles_column)
            readers.append(lambda name=name, columns=columns: iter_csv_file(name, columns))
        else:
            readers.append(lambda name=name, read=_READERS[kind]: read(name))
    return _chain(readers)


def _chain(readers: list[Callable[[], Iterator[SourceEntry]]]) -> Iterator[SourceEntry]:
    for reader in readers:
        yield from reader()

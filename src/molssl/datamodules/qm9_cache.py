"""On-disk cache of a parsed QM9 (npz arrays + JSON manifest, no pickle).

Parsing the 133,885 molecules of gdb9.sdf (or the 130,831 rows of qm9pack's CSVs) with RDKit
takes minutes; the result is stored once under ``<cache_dir>/qm9/<key>/`` where the key hashes
the input files' contents, the sanitisation policy (raw layout), the source of the code that
shapes the arrays and the RDKit version.
Entries are written to a temporary directory and renamed into place, so an interrupted run
never leaves a half-written entry, and a damaged entry is parsed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import rdkit

from molssl.datamodules import qm9pack_parse as pack_parse
from molssl.datamodules.embedded import Failure, chemistry_code_sha256, default_cache_dir
from molssl.datamodules.qm9_parse import QM9Parsed, parse_qm9
from molssl.datamodules.qm9_raw import QM9FormatError
from molssl.datamodules.sources import qm9pack as pack_source
from molssl.datamodules.sources.entry import SourceError

__all__ = [
    "QM9_CACHE_VERSION",
    "file_sha256",
    "load_or_parse_qm9",
    "load_or_parse_qm9pack",
    "qm9_cache_key",
]

#: Bumped whenever the cached arrays change meaning.
QM9_CACHE_VERSION = 2
_ARRAYS_FILE = "molecules.npz"
_MANIFEST_FILE = "manifest.json"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _code_sha256(*extra: ModuleType) -> str:
    import molssl.datamodules.qm9_parse as parse
    import molssl.datamodules.qm9_raw as raw

    digest = hashlib.sha256(chemistry_code_sha256().encode())
    for module in (raw, parse, *extra):
        digest.update(Path(str(module.__file__)).read_bytes())
    return digest.hexdigest()


def qm9_cache_key(
    sdf: Path, labels: Path, uncharacterized: Path | None, on_sanitize_error: str
) -> tuple[str, dict[str, Any]]:
    """The cache key and the fields it hashes (stored in the manifest)."""
    fields = {
        "sdf_sha256": file_sha256(sdf),
        "labels_sha256": file_sha256(labels),
        "uncharacterized_sha256": None if uncharacterized is None else file_sha256(uncharacterized),
        "on_sanitize_error": on_sanitize_error,
        "code_sha256": _code_sha256(),
        "rdkit_version": rdkit.__version__,
        "cache_version": QM9_CACHE_VERSION,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest(), fields


def _failures(items: list[dict[str, Any]]) -> list[Failure]:
    return [Failure(**item) for item in items]


def _load(directory: Path, key: str) -> QM9Parsed | None:
    try:
        manifest = json.loads((directory / _MANIFEST_FILE).read_text())
        if manifest.get("cache_key") != key:
            return None
        with np.load(directory / _ARRAYS_FILE, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        parsed = QM9Parsed(
            arrays,
            _failures(manifest["failures"]),
            _failures(manifest["relaxed"]),
            int(manifest["read"]),
            int(manifest["label_rows_without_molecule"]),
            list(manifest["label_rows_without_molecule_examples"]),
        )
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return None
    if len(parsed) != manifest.get("ok") or len(parsed) + len(parsed.failures) != parsed.read:
        return None
    return parsed


def _write(directory: Path, parsed: QM9Parsed, manifest: dict[str, Any]) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        np.savez(temp / _ARRAYS_FILE, **parsed.arrays)
        (temp / _MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
        if directory.exists():
            if _load(directory, manifest["cache_key"]) is not None:
                return  # another process wrote the same entry meanwhile
            shutil.rmtree(directory)
        try:
            os.rename(temp, directory)
        except OSError:
            if _load(directory, manifest["cache_key"]) is None:
                raise
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)


def load_or_parse_qm9(
    sdf: str | os.PathLike[str],
    labels: str | os.PathLike[str],
    uncharacterized: str | os.PathLike[str] | None,
    on_sanitize_error: str = "relax",
    workers: int = 1,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> tuple[QM9Parsed, Path | None, bool]:
    """The parsed QM9 from the cache, or parsed now (and cached when ``use_cache``).

    Returns:
        ``(parsed, cache entry directory or None, whether it came from the cache)``.

    Raises:
        QM9FormatError: A missing input file (before any hashing or parsing), or an
            unreadable label / uncharacterized file.
    """
    sdf, labels = Path(sdf), Path(labels)
    unc = None if uncharacterized is None else Path(uncharacterized)
    for path, what in ((sdf, "SDF file"), (labels, "label file"), (unc, "uncharacterized list")):
        if path is not None and not path.is_file():
            raise QM9FormatError(f"QM9 {what} not found: {path}", reason="missing_file")
    if not use_cache:
        return parse_qm9(sdf, labels, unc, on_sanitize_error, workers), None, False
    key, fields = qm9_cache_key(sdf, labels, unc, on_sanitize_error)
    inputs = {
        "sdf": str(sdf),
        "labels": str(labels),
        "uncharacterized": None if unc is None else str(unc),
    }
    return _cached(
        key,
        fields,
        inputs,
        lambda: parse_qm9(sdf, labels, unc, on_sanitize_error, workers),
        cache_dir,
    )


def load_or_parse_qm9pack(
    files: Sequence[str | os.PathLike[str]],
    workers: int = 1,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> tuple[QM9Parsed, Path | None, bool]:
    """:func:`~molssl.datamodules.qm9pack_parse.parse_qm9pack` through the same cache.

    Raises:
        SourceError: A missing file, or one without qm9pack's columns.
    """
    paths = [Path(file) for file in files]
    for path in paths:
        if not path.is_file():
            raise SourceError(f"QM9 (qm9pack layout) file not found: {path}", "missing_file")
    if not use_cache:
        return pack_parse.parse_qm9pack(paths, workers), None, False
    fields = {
        "layout": "qm9pack",
        "files_sha256": [file_sha256(path) for path in paths],
        "code_sha256": _code_sha256(pack_parse, pack_source),
        "rdkit_version": rdkit.__version__,
        "cache_version": QM9_CACHE_VERSION,
    }
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
    inputs = {"files": [str(path) for path in paths]}
    return _cached(key, fields, inputs, lambda: pack_parse.parse_qm9pack(paths, workers), cache_dir)


def _cached(
    key: str,
    fields: dict[str, Any],
    inputs: dict[str, Any],
    parse: Callable[[], QM9Parsed],
    cache_dir: str | os.PathLike[str] | None,
) -> tuple[QM9Parsed, Path, bool]:
    """The entry ``key`` of the cache, or ``parse()`` stored under it."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    directory = root / "qm9" / key
    cached = _load(directory, key)
    if cached is not None:
        return cached, directory, True
    parsed = parse()
    manifest = {
        "cache_key": key,
        "key_fields": fields,
        "inputs": inputs,
        "read": parsed.read,
        "ok": len(parsed),
        "failed": len(parsed.failures),
        "failures": [asdict(f) for f in parsed.failures],
        "relaxed": [asdict(f) for f in parsed.relaxed],
        "label_rows_without_molecule": parsed.label_rows_without_molecule,
        "label_rows_without_molecule_examples": parsed.label_rows_without_molecule_examples,
    }
    _write(directory, parsed, manifest)
    return parsed, directory, False

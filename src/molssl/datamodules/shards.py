"""Prepared data sets as WebDataset-layout tar shards plus a ``manifest.json``.

A prepared data set is a directory (local, or any fsspec URL such as ``s3://``, ``gs://``,
``https://`` when the filesystem package is installed)::

    manifest.json            counts, failures, inputs and their hashes, settings, shards
    shard-000000.tar         records with mol_id in [0, M)       (M = the shard size)
    shard-000000.json        sidecar of the shard: its ShardInfo, failures, settings hash
    shard-000001.tar         ...

A shard is a plain POSIX (ustar) tar file in the WebDataset layout: one member per chunk of
at most ``chunk_size`` records, named ``{shard:06d}-{chunk:05d}.records.npz`` (WebDataset key
``{shard:06d}-{chunk:05d}``, extension ``records.npz``), in sorted order, whose bytes are a
records ``.npz`` (:func:`~molssl.datamodules.records.write_records_npz`). Any tar reader
streams it front to back (Python's ``tarfile`` in mode ``r|``, ``webdataset``, ``tar -x``),
so a shard is read with constant memory from local disk or object storage, with no server.

Every member has a fixed mtime, owner and mode, so the same records give a byte-identical
shard. Shards are written to a temporary file and renamed into place: a reader or a resumed
preparation never sees half a shard.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import IO, Any

from molssl.datamodules.records import (
    RECORD_FORMAT_VERSION,
    MoleculeRecord,
    PackedRecords,
    RecordsFormatError,
    pack_records,
    read_records_npz,
    records_npz_bytes,
)
from molssl.errors import UserError

__all__ = [
    "MANIFEST_FILE",
    "MEMBER_SUFFIX",
    "ManifestError",
    "ShardFormatError",
    "ShardInfo",
    "dataset_shards",
    "file_sha256",
    "is_prepared_dataset",
    "iter_shard_chunks",
    "load_manifest",
    "member_name",
    "read_shard",
    "shard_file_name",
    "shard_url",
    "verify_shard",
    "write_json_atomic",
    "write_shard",
]

MANIFEST_FILE = "manifest.json"
#: WebDataset extension of a chunk member (the key is ``{shard:06d}-{chunk:05d}``).
MEMBER_SUFFIX = ".records.npz"
_MEMBER_PATTERN = re.compile(r"^(\d{6})-(\d{5})\.records\.npz$")
_SHARD_INDEX_PATTERN = re.compile(r"(\d+)$")
# Temporary files of an unfinished write start with "." and end with this.
TEMP_SUFFIX = ".partial"
_HASH_BLOCK = 1 << 20
_FILE_MODE = 0o644


class ManifestError(UserError):
    """A missing or invalid ``manifest.json``, or a shard that does not match it."""


class ShardFormatError(RecordsFormatError):
    """A file that is not a readable molssl shard (not a tar, truncated, foreign members)."""


@dataclass(frozen=True)
class ShardInfo:
    """One shard of a prepared data set, as listed in ``manifest.json``.

    Attributes:
        file: Path of the tar relative to the data set directory.
        count: Number of records in the shard.
        sha256: Hex SHA-256 of the tar's bytes.
        first_mol_id: ``mol_id`` of the first record (``-1`` for an empty shard).
        last_mol_id: ``mol_id`` of the last record (``-1`` for an empty shard).
    """

    file: str
    count: int
    sha256: str
    first_mol_id: int
    last_mol_id: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (a plain dict of the fields)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, value: Any) -> ShardInfo:
        """Parse the JSON form.

        Raises:
            ManifestError: Missing or mistyped fields.
        """
        names = [f.name for f in fields(cls)]
        if not isinstance(value, dict) or not set(names) <= set(value):
            raise ManifestError(f"a shard entry needs the fields {sorted(names)}, got {value!r}")
        for name in names:
            expected = str if name in ("file", "sha256") else int
            if not isinstance(value[name], expected) or isinstance(value[name], bool):
                raise ManifestError(f"shard entry field {name!r} is not {expected.__name__}")
        return cls(**{name: value[name] for name in names})


def member_name(shard_index: int, chunk_index: int) -> str:
    """Tar member name of chunk ``chunk_index`` of shard ``shard_index``."""
    return f"{shard_index:06d}-{chunk_index:05d}{MEMBER_SUFFIX}"


def shard_file_name(shard_index: int) -> str:
    """File name of shard ``shard_index`` in a data set directory (``shard-000003.tar``)."""
    return f"shard-{shard_index:06d}.tar"


def _shard_index_from(path: Path) -> int:
    found = _SHARD_INDEX_PATTERN.search(path.name.split(".")[0])
    return int(found.group(1)) if found else 0


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a local file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def _atomic_file(target: Path) -> Iterator[IO[bytes]]:
    """A temporary file beside ``target``, renamed onto it when the block completes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent
    )
    try:
        with os.fdopen(handle, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temp_name, _FILE_MODE)  # mkstemp's 0o600 would hide shared data sets
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike[str], value: Any) -> None:
    """Write ``value`` as indented, key-sorted JSON, atomically (temp file + rename)."""
    with _atomic_file(Path(path)) as stream:
        stream.write((json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def write_shard(
    path: str | os.PathLike[str],
    records: Sequence[MoleculeRecord],
    chunk_size: int = 256,
    shard_index: int | None = None,
) -> ShardInfo:
    """Write records as one WebDataset-layout tar shard, atomically and reproducibly.

    Args:
        path: The tar to write; its parent is the data set directory.
        records: The shard's records, in order (a list or :class:`PackedRecords`).
        chunk_size: Records per tar member.
        shard_index: Index in member names; default: the trailing digits of the file name's
            stem (``shard-000003.tar`` gives 3), else 0.

    Returns:
        The shard's :class:`ShardInfo` (``file`` is the file name).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    target = Path(path)
    index = _shard_index_from(target) if shard_index is None else shard_index
    digest = hashlib.sha256()
    with _atomic_file(target) as stream:
        hashing = _HashingWriter(stream, digest)
        with tarfile.open(fileobj=hashing, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for chunk_index, start in enumerate(range(0, len(records), chunk_size)):
                payload = records_npz_bytes(records[start : start + chunk_size])
                info = tarfile.TarInfo(member_name(index, chunk_index))
                info.size = len(payload)
                info.mtime = 0
                info.mode = 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(payload))
    count = len(records)
    return ShardInfo(
        file=target.name,
        count=count,
        sha256=digest.hexdigest(),
        first_mol_id=int(records[0].mol_id) if count else -1,
        last_mol_id=int(records[-1].mol_id) if count else -1,
    )


class _HashingWriter(io.RawIOBase):
    """Write-through stream that hashes what passes (the tar is hashed while written)."""

    def __init__(self, stream: IO[bytes], digest: Any) -> None:
        self._stream = stream
        self._digest = digest
        self._position = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def write(self, data: Any) -> int:
        self._digest.update(data)
        written = self._stream.write(data)
        self._position += written
        return written


class _HashingReader(io.RawIOBase):
    """Read-through stream that hashes what passes (to check a streamed shard's sha256)."""

    def __init__(self, stream: IO[bytes], digest: Any) -> None:
        self._stream = stream
        self._digest = digest

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._digest.update(data)
        return data

    def drain(self) -> None:
        while self.read(_HASH_BLOCK):
            pass


def _is_url(location: str | os.PathLike[str]) -> bool:
    return "://" in str(location) and not str(location).startswith("file://")


@contextmanager
def _open_binary(location: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    if not _is_url(location):
        local = str(location).removeprefix("file://")
        with open(local, "rb") as handle:
            yield handle
        return
    try:
        import fsspec
    except ImportError as error:  # fsspec comes with lightning; this is a broken install
        raise ImportError(f"reading {location} needs fsspec (pip install fsspec)") from error
    with fsspec.open(str(location), "rb") as handle:
        yield handle


def iter_shard_chunks(
    url_or_path: str | os.PathLike[str], expected_sha256: str | None = None
) -> Iterator[PackedRecords]:
    """Stream a shard chunk by chunk, holding one chunk in memory at a time.

    Args:
        url_or_path: A local path, or a URL that fsspec opens (``s3://``, ``gs://``,
            ``https://``, ... when the filesystem package is installed).
        expected_sha256: When given, the shard's bytes are hashed while streaming and
            compared after the last chunk.

    Raises:
        FileNotFoundError: No such local file.
        ShardFormatError: Not a tar, truncated, or a member that is not a records chunk.
        ManifestError: The bytes do not hash to ``expected_sha256``.
    """
    with _open_binary(url_or_path) as raw:
        digest = hashlib.sha256()
        stream = _HashingReader(raw, digest)
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    yield _read_member(tar, member, url_or_path)
        except (tarfile.TarError, EOFError) as error:
            raise ShardFormatError(
                f"{url_or_path} is not a readable shard (tar): {error}"
            ) from None
        if expected_sha256 is not None:
            stream.drain()
            if digest.hexdigest() != expected_sha256:
                raise ManifestError(
                    f"{url_or_path} has sha256 {digest.hexdigest()}, the manifest says "
                    f"{expected_sha256}: the shard changed or is damaged; prepare it again"
                )


def _read_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, source: str | os.PathLike[str]
) -> PackedRecords:
    name = f"{source}:{member.name}"
    if not member.isfile() or not _MEMBER_PATTERN.match(member.name):
        raise ShardFormatError(
            f"{name}: not a molssl records chunk (expected regular members named "
            f"NNNNNN-NNNNN{MEMBER_SUFFIX})"
        )
    handle = tar.extractfile(member)
    if handle is None:
        raise ShardFormatError(f"{name}: member has no content")
    payload = handle.read()
    if len(payload) != member.size:
        raise ShardFormatError(f"{name}: truncated ({len(payload)} of {member.size} bytes)")
    return read_records_npz(io.BytesIO(payload), name=name)


def read_shard(url_or_path: str | os.PathLike[str]) -> PackedRecords:
    """All records of a shard, as one :class:`PackedRecords` (see :func:`iter_shard_chunks`)."""
    chunks = list(iter_shard_chunks(url_or_path))
    return PackedRecords.concatenate(chunks) if chunks else pack_records([])


def verify_shard(root: str | os.PathLike[str], info: ShardInfo) -> None:
    """Check a local shard's bytes against its :class:`ShardInfo` (sha256, then count).

    Raises:
        ManifestError: Missing file, other bytes, or another number of records.
    """
    path = Path(root) / info.file
    if not path.is_file():
        raise ManifestError(f"shard {path} listed in the manifest does not exist")
    actual = file_sha256(path)
    if actual != info.sha256:
        raise ManifestError(f"shard {path} has sha256 {actual}, the manifest says {info.sha256}")
    count = sum(len(chunk) for chunk in iter_shard_chunks(path))
    if count != info.count:
        raise ManifestError(f"shard {path} holds {count} records, the manifest says {info.count}")


def shard_url(root: str | os.PathLike[str], info: ShardInfo) -> str:
    """Location of a shard: ``root`` joined with ``info.file`` (a path or a URL)."""
    if _is_url(root):
        return f"{str(root).rstrip('/')}/{info.file}"
    return str(Path(str(root).removeprefix("file://")) / info.file)


def is_prepared_dataset(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` is a local directory holding a ``manifest.json`` (or is a URL)."""
    if _is_url(root):
        return True
    return (Path(str(root).removeprefix("file://")) / MANIFEST_FILE).is_file()


_REQUIRED_KEYS = ("shards", "ok", "failed", "read", "record_format_version")


def load_manifest(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``root/manifest.json`` (``root`` a directory or a URL).

    Raises:
        ManifestError: No manifest, invalid JSON, missing keys, inconsistent counts, or
            another records format version.
    """
    location = (
        shard_url(root, ShardInfo(MANIFEST_FILE, 0, "", -1, -1))
        if _is_url(root)
        else Path(str(root).removeprefix("file://")) / MANIFEST_FILE
    )
    try:
        with _open_binary(location) as handle:
            manifest = json.loads(handle.read().decode("utf-8"))
    except FileNotFoundError:
        raise ManifestError(
            f"{root} is not a prepared data set: no {MANIFEST_FILE} (run `molssl prepare`)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ManifestError(f"cannot read {location}: {error}") from None
    if not isinstance(manifest, dict):
        raise ManifestError(f"{location} is not a JSON object")
    missing = [key for key in _REQUIRED_KEYS if key not in manifest]
    if missing:
        raise ManifestError(f"{location} lacks {missing}; is it a molssl prepare manifest?")
    version = manifest["record_format_version"]
    if version != RECORD_FORMAT_VERSION:
        raise ManifestError(
            f"{location} holds records format {version}; this molssl reads format "
            f"{RECORD_FORMAT_VERSION}; prepare the data again"
        )
    if not isinstance(manifest["shards"], list):
        raise ManifestError(f"{location}: 'shards' must be a list")
    shards = [ShardInfo.from_dict(entry) for entry in manifest["shards"]]
    if sum(s.count for s in shards) != manifest["ok"]:
        raise ManifestError(f"{location}: the shards hold a different number of records than 'ok'")
    if manifest["ok"] + manifest["failed"] != manifest["read"]:
        raise ManifestError(f"{location}: ok + failed != read")
    return manifest


def dataset_shards(root: str | os.PathLike[str]) -> list[ShardInfo]:
    """The shards listed in ``root/manifest.json``, in mol_id order (see :func:`load_manifest`)."""
    return [ShardInfo.from_dict(entry) for entry in load_manifest(root)["shards"]]

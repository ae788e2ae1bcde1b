"""The embedded default data set: RDKit's bundled NCI molecules, prepared once and cached.

``molssl fit`` without a data path pre-trains on the first ``n`` SMILES of
``RDConfig.RDDataDir/NCI/first_5K.smi``, a file every RDKit wheel ships, so a machine without
network access can run it. Preparation (parse, hydrogens, seeded ETKDGv3 + MMFF94 conformers,
BRICS labels, torsions: :func:`~molssl.datamodules.records.record_from_smiles`) runs once;
the result lands in a cache directory, ``$MOLSSL_CACHE`` or ``~/.cache/molssl``, under a key
hashing the source file's content, ``n``, the conformer options, the heavy-atom limit, the
record format version and the RDKit version. Later calls load it in well under a second.

Guarantees:

* Every line read is accounted for: ``ok + failed == read`` in ``manifest.json``, with the
  reason, line number and message of each failure. A record keeps the index of its line
  (``mol_id``) whatever failed before it.
* Each molecule's conformer seed is derived from ``(options.seed, mol_id)``, so the output
  does not depend on the number of worker processes (ETKDG's per-molecule time budget aside:
  a molecule that only just fits its budget may fail on a heavily loaded machine).
* The cache entry (``records.npz`` + ``manifest.json``) is built in a temporary directory and
  renamed into place, so an interrupted run leaves no half-written entry behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import rdkit
from rdkit import RDConfig
from tqdm.auto import tqdm

from molssl.chem.conformers import ConformerOptions
from molssl.chem.errors import MoleculeError
from molssl.datamodules.records import (
    RECORD_FORMAT_VERSION,
    MoleculeRecord,
    PackedRecords,
    RecordsFormatError,
    load_records,
    pack_records,
    save_records,
)
from molssl.datamodules.workers import WorkerPool
from molssl.errors import UserError

__all__ = [
    "MANIFEST_FILE",
    "NCI_SMILES_PATH",
    "RECORDS_FILE",
    "Failure",
    "Preparation",
    "PreparedDataset",
    "cache_key",
    "default_cache_dir",
    "embedded_default",
    "molecule_seed",
    "prepare_records",
    "prepare_smiles_file",
    "read_smiles_file",
]

#: RDKit's bundled NCI sample: ``SMILES<TAB>id`` per line, 5,000 lines.
NCI_SMILES_PATH = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
RECORDS_FILE = "records.npz"
MANIFEST_FILE = "manifest.json"
# ETKDG adds attempt * 7919 to the seed (up to a few attempts); stay inside a C int.
_MAX_SEED = 2**31 - 1 - 100 * 7919


@dataclass(frozen=True)
class Failure:
    """A molecule that could not be prepared.

    Attributes:
        mol_id: Index of the entry in its source (0-based).
        line: Line number in the source file (1-based), or ``mol_id + 1`` for a plain list.
        smiles: The text that was read.
        reason: Stable snake_case code (``MoleculeError.reason``).
        message: Human explanation.
    """

    mol_id: int
    line: int
    smiles: str
    reason: str
    message: str


@dataclass
class Preparation:
    """Output of :func:`prepare_records`: records in source order, failures, count read."""

    records: list[MoleculeRecord]
    failures: list[Failure]
    read: int

    def failures_by_reason(self) -> dict[str, int]:
        """Failure counts per reason, most frequent first."""
        return dict(Counter(f.reason for f in self.failures).most_common())


@dataclass
class PreparedDataset:
    """A prepared (possibly cached) data set.

    Attributes:
        records: The molecules that were prepared successfully.
        manifest: Contents of ``manifest.json`` (counts, failures with reasons, settings).
        directory: The cache entry holding ``records.npz`` and ``manifest.json``.
        from_cache: Whether it was loaded rather than prepared by this call.
    """

    records: PackedRecords
    manifest: dict[str, Any]
    directory: Path
    from_cache: bool = field(default=False)


def default_cache_dir() -> Path:
    """``$MOLSSL_CACHE`` if set, else ``~/.cache/molssl``."""
    configured = os.environ.get("MOLSSL_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "molssl"


def molecule_seed(seed: int, mol_id: int) -> int:
    """Conformer seed of one molecule, a hash of ``(seed, mol_id)``; independent of order.

    Never 0: RDKit's ETKDG gives every conformer of a multi-conformer embedding the same
    coordinates when ``randomSeed`` is 0.
    """
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(mol_id)]).generate_state(1)
    return 1 + int(state[0]) % (_MAX_SEED - 1)


def read_smiles_file(path: str | os.PathLike[str], n: int | None = None) -> list[str]:
    """The SMILES (first whitespace-separated token) of the first ``n`` lines of ``path``.

    A blank line gives ``""`` (it fails preparation as ``empty_input``), so list position
    ``i`` is always line ``i + 1``.
    """
    smiles: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if n is not None and len(smiles) >= n:
                break
            parts = line.split(maxsplit=1)
            smiles.append(parts[0] if parts else "")
    return smiles


def _prepare_one(task: tuple[int, str, ConformerOptions, int | None]) -> MoleculeRecord | Failure:
    # Imported here so a spawned / forkserver worker process only pays for it once, on use.
    from molssl.datamodules.records import record_from_smiles

    mol_id, smiles, options, max_heavy_atoms = task
    per_molecule = replace(options, seed=molecule_seed(options.seed, mol_id))
    try:
        return record_from_smiles(smiles, mol_id, per_molecule, max_heavy_atoms=max_heavy_atoms)
    except MoleculeError as error:
        return Failure(mol_id, mol_id + 1, smiles, error.reason, str(error))
    except Exception as error:  # a bug, not bad input: stop, but say which molecule
        raise RuntimeError(
            f"unexpected error preparing molecule {mol_id} ({smiles!r}): {error!r}"
        ) from error


def _results(
    tasks: list[tuple[int, str, ConformerOptions, int | None]], workers: int
) -> Iterator[MoleculeRecord | Failure]:
    if workers <= 1 or len(tasks) <= 1:
        yield from map(_prepare_one, tasks)
        return
    # The server imports the preparation code once and every worker forks from it, instead
    # of each worker importing torch and RDKit again (molssl.datamodules.workers).
    pool = WorkerPool(min(workers, len(tasks)), preload=["molssl.datamodules.records"])
    finished = False
    try:
        # In source order, so the output is the same for any number of workers.
        yield from pool.map(
            _prepare_one, tasks, lambda i: f"molecule {tasks[i][0]} ({tasks[i][1]!r})"
        )
        finished = True
    finally:
        pool.close(finished=finished)


def molecule_bar(total: int | None, desc: str, enabled: bool) -> Any:
    """A progress bar counting molecules on stderr, redrawn at most once a second."""
    return tqdm(
        total=total,
        desc=desc,
        unit="mol",
        disable=not enabled,
        file=sys.stderr,
        mininterval=1.0,
        dynamic_ncols=True,
    )


def prepare_records(
    smiles: Sequence[str],
    options: ConformerOptions | None = None,
    workers: int = 1,
    max_heavy_atoms: int | None = 150,
    progress: bool = False,
) -> Preparation:
    """Prepare a list of SMILES; entry ``i`` gets ``mol_id = i`` whether or not others fail.

    Args:
        smiles: One SMILES per source entry (use ``""`` for a blank entry).
        options: Conformer settings; each molecule's seed is
            :func:`molecule_seed` ``(options.seed, mol_id)``.
        workers: Processes; 1 prepares in this process.
        max_heavy_atoms: Larger molecules fail as ``too_many_atoms``; ``None`` for no limit.
        progress: Show a progress bar on stderr.
    """
    options = options or ConformerOptions()
    tasks = [(i, s, options, max_heavy_atoms) for i, s in enumerate(smiles)]
    records: list[MoleculeRecord] = []
    failures: list[Failure] = []
    with molecule_bar(len(tasks), "molssl: preparing molecules", progress) as bar:
        for done, result in enumerate(_results(tasks, workers)):
            if done == 0:
                # The rate and ETA start with the first molecule, not with the workers' start-up
                # (seconds of imports, which made the first ETA read hours).
                bar.reset(total=len(tasks))
            (failures if isinstance(result, Failure) else records).append(result)
            bar.update(1)
            if failures:
                bar.set_postfix(failed=len(failures), refresh=False)
    return Preparation(records=records, failures=failures, read=len(tasks))


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def chemistry_code_sha256() -> str:
    """Hash of the source of every module that shapes a prepared record.

    A change to featurization, conformers, fragments or torsions changes what preparation
    produces, so it must miss the cache even when the record format and molssl's version stay.
    """
    import molssl.chem as chem
    import molssl.datamodules.records as records

    digest = hashlib.sha256()
    modules = [*sorted(Path(chem.__file__).parent.glob("*.py")), Path(records.__file__)]
    for path in modules:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _key_fields(
    source: Path, n: int | None, options: ConformerOptions, max_heavy_atoms: int | None
) -> dict[str, Any]:
    return {
        "chemistry_code_sha256": chemistry_code_sha256(),
        "source_sha256": _file_sha256(source),
        "n": n,
        "options": asdict(options),
        "max_heavy_atoms": max_heavy_atoms,
        "record_format_version": RECORD_FORMAT_VERSION,
        "rdkit_version": rdkit.__version__,
    }


def cache_key(
    source: str | os.PathLike[str],
    n: int | None,
    options: ConformerOptions,
    max_heavy_atoms: int | None = 150,
) -> str:
    """Hex digest naming the cache entry of ``source`` prepared with these settings."""
    fields = _key_fields(Path(source), n, options, max_heavy_atoms)
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _load_entry(directory: Path, key: str) -> PreparedDataset | None:
    manifest_path = directory / MANIFEST_FILE
    if not (manifest_path.is_file() and (directory / RECORDS_FILE).is_file()):
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("cache_key") != key:
            return None
        records = load_records(directory / RECORDS_FILE)
    except (OSError, ValueError, RecordsFormatError, zipfile.BadZipFile):
        return None
    if len(records) != manifest.get("ok"):
        return None
    return PreparedDataset(records, manifest, directory, from_cache=True)


def _write_entry(directory: Path, packed: PackedRecords, manifest: dict[str, Any]) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        save_records(temp / RECORDS_FILE, packed)
        (temp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        if directory.exists():
            if _load_entry(directory, manifest["cache_key"]) is not None:
                return  # another process prepared the same entry meanwhile; keep theirs
            shutil.rmtree(directory)  # a damaged entry under this key
        try:
            os.rename(temp, directory)
        except OSError:
            if _load_entry(directory, manifest["cache_key"]) is None:
                raise
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)


def _default_workers(n: int) -> int:
    # Pool start-up (imports of torch and RDKit) costs about a second; small sets go serial.
    return max(1, min(os.cpu_count() or 1, n // 250))


def prepare_smiles_file(
    source: str | os.PathLike[str],
    n: int | None = None,
    options: ConformerOptions | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    max_heavy_atoms: int | None = 150,
    progress: bool = True,
) -> PreparedDataset:
    """Prepare the first ``n`` lines of a SMILES file, or load them from the cache.

    Args:
        source: A ``.smi`` file: SMILES, then optional whitespace and a name, per line.
        n: Lines to read (``None`` for all).
        options: Conformer settings (default :class:`ConformerOptions()`).
        cache_dir: Cache root (default :func:`default_cache_dir`).
        workers: Preparation processes (default: one per core for large sets).
        max_heavy_atoms: Larger molecules fail as ``too_many_atoms``.
        progress: Show a progress bar while preparing.
    """
    source = Path(source).resolve()
    if not source.is_file():
        raise UserError(f"SMILES source not found: {source}")
    if n is not None and n < 1:
        raise UserError(f"n must be >= 1 or None, got {n}")
    options = options or ConformerOptions()
    key = cache_key(source, n, options, max_heavy_atoms)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    directory = root / "prepared" / f"{source.stem}-n{n if n is not None else 'all'}-{key[:16]}"
    cached = _load_entry(directory, key)
    if cached is not None:
        return cached

    smiles = read_smiles_file(source, n)
    workers = _default_workers(len(smiles)) if workers is None else max(1, workers)
    start = time.perf_counter()
    preparation = prepare_records(smiles, options, workers, max_heavy_atoms, progress=progress)
    seconds = time.perf_counter() - start
    manifest = {
        "cache_key": key,
        "source": str(source),
        **_key_fields(source, n, options, max_heavy_atoms),
        "read": preparation.read,
        "ok": len(preparation.records),
        "failed": len(preparation.failures),
        "failures_by_reason": preparation.failures_by_reason(),
        "failures": [asdict(f) for f in preparation.failures],
        "workers": workers,
        "seconds": round(seconds, 3),
    }
    packed = pack_records(preparation.records)
    _write_entry(directory, packed, manifest)
    return PreparedDataset(packed, manifest, directory, from_cache=False)


def embedded_default(
    n: int = 2000,
    options: ConformerOptions | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> PreparedDataset:
    """The first ``n`` molecules of RDKit's bundled NCI set, prepared on first use and cached.

    Args:
        n: Molecules to read (at most 5,000, the size of the file).
        options: Conformer settings (default: one ETKDGv3 + MMFF94 conformer per molecule).
        cache_dir: Cache root (default ``$MOLSSL_CACHE`` or ``~/.cache/molssl``).
        workers: Preparation processes (default: one per core for large sets).
        progress: Show a progress bar while preparing.
    """
    return prepare_smiles_file(
        NCI_SMILES_PATH, n, options, cache_dir=cache_dir, workers=workers, progress=progress
    )

"""``molssl prepare``: input files → conformers and features → WebDataset shards + manifest.

Entries of the inputs (:func:`~molssl.datamodules.sources.iter_files`, every input in the
order given) get the global ``mol_id`` 0, 1, 2, ... whether or not they can be prepared, so a
molecule's id never shifts when another one fails. Shard ``s`` holds the molecules of ids in
``[s * M, (s + 1) * M)`` (``M`` = ``shard_size``) that were prepared; the layout of the output
directory is described in :mod:`molssl.datamodules.shards`.

Guarantees:

* ``ok + failed == read``: each entry that fails (unreadable, invalid SMILES, unsupported
  element, embedding failure, ...) is listed in the manifest with its file, line, index in
  the file, ``mol_id``, source id, reason code and message. Bad input never stops the job.
* Deterministic: each molecule's conformer seed is
  :func:`~molssl.datamodules.embedded.molecule_seed` ``(seed, mol_id)``, so the shards are
  byte-identical for any number of workers and any number of runs (ETKDG's per-molecule
  time budget aside: a molecule that only just fits it may fail on an overloaded machine).
* Resumable: a finished shard's tar is renamed into place, then its sidecar
  ``shard-XXXXXX.json`` is written; a re-run with the same settings and inputs keeps every
  shard whose sidecar and tar hash check out and redoes the others. Killing the job leaves
  only whole shards. Other settings or inputs are refused unless ``overwrite`` is set.
* Nothing twice: an input file with the same bytes as an earlier one is not read again
  (:mod:`~molssl.datamodules.prepare_inputs`), a molecule prepared before fails as
  ``duplicate_molecule`` (:mod:`~molssl.datamodules.prepare_duplicates`), and the output
  directory is never read back as input.
* A worker process killed mid-shard (``kill -9``, the out-of-memory killer) loses nothing:
  the molecules it held are sent again to fresh workers; a second death before any further
  molecule is done stops the run with one line naming the shard
  (:class:`~molssl.datamodules.workers.WorkerDiedError`), and the same command resumes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import platform
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import rdkit

from molssl import __version__
from molssl.chem.conformers import ConformerOptions
from molssl.chem.errors import MoleculeError
from molssl.datamodules.embedded import chemistry_code_sha256, molecule_bar, molecule_seed
from molssl.datamodules.prepare_duplicates import DuplicateMolecules
from molssl.datamodules.prepare_inputs import InputFile, find_inputs
from molssl.datamodules.prepare_output import (
    PrepareError,
    check_output,
    finished_shard,
    locked,
    sidecar_file_name,
)
from molssl.datamodules.records import RECORD_FORMAT_VERSION, MoleculeRecord
from molssl.datamodules.shards import (
    MANIFEST_FILE,
    ShardInfo,
    shard_file_name,
    write_json_atomic,
    write_shard,
)
from molssl.datamodules.sources import SourceEntry, entry_to_record, iter_files
from molssl.datamodules.sources.count import count_entries
from molssl.datamodules.workers import WorkerPool

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "EntryFailure",
    "PrepareError",
    "auto_shard_size",
    "prepare_dataset",
    "sidecar_file_name",
]

#: Shard size of large inputs (source entries per shard).
DEFAULT_SHARD_SIZE = 10_000
#: Shards a smaller input is cut into by default, so that validation can be held out by shard.
MIN_SHARDS = 20

# A reason code of its own, so that a bug in molssl never looks like bad input.
UNEXPECTED_ERROR = "unexpected_error"


@dataclass(frozen=True)
class EntryFailure:
    """An input entry that gave no record (listed in the manifest and the shard's sidecar)."""

    file: str
    line: int
    index: int
    mol_id: int
    source_id: str
    reason: str
    message: str


def _settings(
    inputs: list[InputFile],
    options: ConformerOptions,
    shard_size: int,
    chunk_size: int,
    max_heavy_atoms: int | None,
    smiles_column: str | None,
    keep_duplicates: bool,
) -> dict[str, Any]:
    # Everything that shapes the shards' bytes; inputs by name and content, not location, so
    # a moved input directory still resumes. Round-tripped through JSON so that it compares
    # equal to what a sidecar read back holds.
    settings = {
        "inputs": [{"name": Path(i.name).name, "sha256": i.sha256} for i in inputs],
        "conformer_options": asdict(options),
        "shard_size": shard_size,
        "chunk_size": chunk_size,
        "max_heavy_atoms": max_heavy_atoms,
        "smiles_column": smiles_column,
        "duplicate_molecules": "keep" if keep_duplicates else "drop",
        "record_format_version": RECORD_FORMAT_VERSION,
        "chemistry_code_sha256": chemistry_code_sha256(),
        "rdkit_version": rdkit.__version__,
        "molssl_version": __version__,
    }
    return json.loads(json.dumps(settings))


def _settings_sha256(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _prepare_entry(task: tuple[int, SourceEntry, ConformerOptions, int | None]) -> Any:
    """One entry → its record, or the :class:`EntryFailure` (runs in a worker process)."""
    mol_id, entry, options, max_heavy_atoms = task
    per_molecule = replace(options, seed=molecule_seed(options.seed, mol_id))
    try:
        return entry_to_record(entry, mol_id, per_molecule, max_heavy_atoms)
    except MoleculeError as error:
        reason, message = error.reason, str(error)
    except Exception as error:  # a bug, not bad input: recorded, and reported at the end
        reason, message = UNEXPECTED_ERROR, f"{type(error).__name__}: {error}"
    return EntryFailure(
        entry.source, entry.line, entry.index, mol_id, entry.source_id, reason, message
    )


def _one_thread_per_worker() -> None:
    """Pool initializer: N workers use N cores, whatever OMP_NUM_THREADS says.

    RDKit is already asked for one thread per call; torch's and the BLAS/OpenMP pools of the
    forked interpreter would otherwise be sized to every core of the machine, in each worker.
    """
    import torch

    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional (scikit-learn's dependency): only torch is limited then
        return
    threadpool_limits(limits=1)


def _shards_of(
    entries: Iterable[SourceEntry], shard_size: int
) -> Iterator[tuple[int, list[tuple[int, SourceEntry]]]]:
    numbered = enumerate(entries)
    for shard_index in itertools.count():
        chunk = list(itertools.islice(numbered, shard_size))
        if not chunk:
            return
        yield shard_index, chunk


def auto_shard_size(entries: int) -> int:
    """The default shard size for an input of ``entries`` entries.

    :data:`DEFAULT_SHARD_SIZE`, or less for inputs of under ``MIN_SHARDS * DEFAULT_SHARD_SIZE``
    entries, so that they still make :data:`MIN_SHARDS` shards (as many as there are entries
    below that): ``PretrainDataModule`` holds validation out by whole shards, and a
    ``val_fraction`` of 0.05 takes one of 20.
    """
    return max(1, min(DEFAULT_SHARD_SIZE, math.ceil(entries / MIN_SHARDS)))


def prepare_dataset(
    inputs: Sequence[str | Path],
    output: str | Path,
    num_conformers: int = 1,
    workers: int = 1,
    seed: int = 0,
    shard_size: int | None = None,
    max_heavy_atoms: int | None = 150,
    smiles_column: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
    chunk_size: int = 256,
    keep_duplicates: bool = False,
) -> dict[str, Any]:
    """Prepare molecules from input files into a sharded data set directory.

    Args:
        inputs: Files or directories (:func:`~molssl.datamodules.sources.source_files`), read in
            order; ``mol_id`` counts entries across all of them.
        output: The data set directory (created if needed).
        num_conformers: RDKit conformers per SMILES entry (entries with 3D coordinates keep
            their one conformer).
        workers: Processes preparing molecules (1: in this process).
        seed: Conformer seed; molecule ``i`` uses ``molecule_seed(seed, i)``.
        shard_size: Source entries per shard (``mol_id`` range of a shard); ``None``:
            :func:`auto_shard_size` of the number of entries (counted first).
        max_heavy_atoms: Larger molecules fail as ``too_many_atoms``; ``None`` for no limit.
        smiles_column: SMILES column of CSV inputs (default: found by name).
        progress: Show a progress bar on stderr.
        overwrite: Start over when ``output`` was prepared with other settings or inputs.
        chunk_size: Records per tar member.
        keep_duplicates: Keep every copy of a molecule (default: a molecule seen before, by
            canonical SMILES, or by SMILES and coordinates for 3D entries, fails as
            ``duplicate_molecule``, see :mod:`~molssl.datamodules.prepare_duplicates`).

    Returns:
        The manifest written to ``output/manifest.json``.

    Raises:
        SourceError: An input cannot be read at all (missing, unknown type, no SMILES column).
        PrepareError: ``output`` holds another preparation (without ``overwrite``), is busy,
            or is an input directory; an argument out of range (``invalid_option``).
    """
    counts = {"num_conformers": num_conformers, "workers": workers, "chunk_size": chunk_size}
    if shard_size is not None:
        counts["shard_size"] = shard_size
    if max_heavy_atoms is not None:
        counts["max_heavy_atoms"] = max_heavy_atoms
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PrepareError(
                f"{name} must be a whole number of at least 1, got {value!r}",
                reason="invalid_option",
            )
    start = time.perf_counter()
    root = Path(output)
    if root.exists() and not root.is_dir():
        raise PrepareError(f"output {root} is not a directory", reason="output_not_directory")
    found = find_inputs(inputs, root)
    # Counted before anything is prepared: the progress bar's total, and the shard size.
    total = count_entries([file.name for file in found.files])
    if shard_size is None:
        shard_size = auto_shard_size(total)
    options = ConformerOptions(num_conformers=num_conformers, seed=seed)
    settings = _settings(
        found.files, options, shard_size, chunk_size, max_heavy_atoms, smiles_column,
        keep_duplicates,
    )  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    with locked(root):
        check_output(root, settings, overwrite)
        entries = iter_files([file.name for file in found.files], smiles_column)
        with molecule_bar(total, "molssl prepare", progress) as bar:
            shards, failures, read, resumed = _run(root, entries, settings, options, workers, bar)
        ok = sum(info.count for info in shards)
        manifest = {
            "molssl_version": __version__,
            "record_format_version": RECORD_FORMAT_VERSION,
            "inputs": [file.describe() for file in found.files],
            "duplicate_inputs": found.duplicates,
            "settings": settings,
            "settings_sha256": _settings_sha256(settings),
            "read": read,
            "ok": ok,
            "failed": len(failures),
            "failures_by_reason": dict(Counter(f["reason"] for f in failures).most_common()),
            "failures": failures,
            "shards": [info.to_dict() for info in shards if info.count > 0],
            "resumed_shards": resumed,
            "workers": workers,
            "wall_seconds": round(time.perf_counter() - start, 3),
            "python": platform.python_version(),
        }
        write_json_atomic(root / MANIFEST_FILE, manifest)
    unexpected = manifest["failures_by_reason"].get(UNEXPECTED_ERROR)
    if unexpected:
        print(
            f"molssl prepare: {unexpected} molecule(s) failed with an unexpected error (a bug "
            f"in molssl, not bad input; see 'failures' in {root / MANIFEST_FILE})",
            file=sys.stderr,
        )
    return manifest


def _run(
    root: Path,
    entries: Iterable[SourceEntry],
    settings: dict[str, Any],
    options: ConformerOptions,
    workers: int,
    bar: Any,
) -> tuple[list[ShardInfo], list[dict[str, Any]], int, int]:
    """Prepare or keep every shard; returns (shard infos, failures, entries read, kept).

    Shards kept from an earlier run leave the bar's total rather than fill it, so that its
    rate and ETA measure the molecules this run prepares.
    """
    max_heavy_atoms = settings["max_heavy_atoms"]
    shards: list[ShardInfo] = []
    failures: list[dict[str, Any]] = []
    read = resumed = 0
    duplicates = DuplicateMolecules(keep=settings["duplicate_molecules"] == "keep")
    pool = WorkerPool(
        workers, preload=["molssl.datamodules.prepare"], initializer=_one_thread_per_worker
    )
    try:
        for shard_index, numbered in _shards_of(entries, settings["shard_size"]):
            read += len(numbered)
            sidecar = finished_shard(root, shard_index, settings)
            if not duplicates.restore(sidecar, len(numbered)):
                tasks = [(mol_id, entry, options, max_heavy_atoms) for mol_id, entry in numbered]
                sidecar = _prepare_shard(root, shard_index, tasks, settings, pool, bar, duplicates)
            else:
                resumed += 1
                bar.total = max(bar.n, (bar.total or 0) - len(numbered))
                bar.refresh()
            if sidecar["info"] is not None:
                shards.append(ShardInfo.from_dict(sidecar["info"]))
            failures.extend(sidecar["failures"])
            bar.set_postfix(shard=shard_index, failed=len(failures), refresh=False)
    except BaseException:
        pool.close(finished=False)
        raise
    pool.close()
    return shards, failures, read, resumed


def _prepare_shard(
    root: Path,
    shard_index: int,
    tasks: list[Any],
    settings: dict[str, Any],
    pool: WorkerPool,
    bar: Any,
    duplicates: DuplicateMolecules,
) -> dict[str, Any]:
    records: list[MoleculeRecord] = []
    failures: list[dict[str, Any]] = []
    keys: list[list[Any]] = []

    def lost(index: int) -> str:
        return f"shard {shard_index} ({shard_file_name(shard_index)}), mol_id {tasks[index][0]} on"

    results = pool.map(_prepare_entry, tasks, lost)
    for (mol_id, entry, _, _), result in zip(tasks, results, strict=True):
        if bar.n == 0:
            # The first molecule of the run: the rate and ETA start now, not with the workers'
            # start-up (seconds of imports, which would make the first ETA hours long).
            bar.reset(total=bar.total)
        if not isinstance(result, EntryFailure):
            # The first copy of a molecule stays; a later one would repeat it, and a copy in a
            # held-out shard would hold out a training molecule.
            key, first = duplicates.check(result, from_3d=entry.mol is not None)
            if first is None:
                records.append(result)
                keys.append([mol_id, key])
            else:
                message = (
                    f"{entry.source}:{entry.line}: the same molecule as mol_id {first} "
                    f"({result.smiles}); kept once (--keep-duplicates keeps every copy)"
                )
                result = EntryFailure(
                    entry.source, entry.line, entry.index, mol_id, entry.source_id,
                    "duplicate_molecule", message,
                )  # fmt: skip
        if isinstance(result, EntryFailure):
            failures.append(asdict(result))
        bar.update(1)
    info = None
    if records:
        path = root / shard_file_name(shard_index)
        info = write_shard(path, records, settings["chunk_size"], shard_index).to_dict()
    else:
        # Nothing to store: no tar, so a stale one of an earlier attempt must not linger.
        (root / shard_file_name(shard_index)).unlink(missing_ok=True)
    sidecar = {
        "shard": shard_index,
        "read": len(tasks),
        "info": info,
        "failures": failures,
        "molecule_keys": keys,
        "settings": settings,
        "settings_sha256": _settings_sha256(settings),
    }
    write_json_atomic(root / sidecar_file_name(shard_index), sidecar)
    return sidecar

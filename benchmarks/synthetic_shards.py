"""Large synthetic-but-valid prepared data sets for the streaming benchmarks, written fast.

Real NCI molecules are prepared once (the embedded default, cached); the data set then holds
whole replicas of them: replica ``r`` keeps every array of the real records except ``mol_id``
(``r * B + i``, unique) and the conformers (jittered by a small Gaussian, so no two samples
are byte-identical). Each replica is one :class:`~molssl.datamodules.records.PackedRecords`
built from array copies, written as one tar member with
:func:`~molssl.datamodules.shards.write_shard`: no per-record Python work, so hundreds of
thousands of records take seconds. A ``manifest.json`` like ``molssl prepare``'s lists the
shards, so :class:`~molssl.datamodules.PretrainDataModule` streams the directory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from molssl.chem.conformers import ConformerOptions
from molssl.datamodules.embedded import embedded_default
from molssl.datamodules.records import RECORD_FORMAT_VERSION, MoleculeRecord, PackedRecords
from molssl.datamodules.shards import MANIFEST_FILE, write_json_atomic, write_shard

__all__ = ["nci_records", "write_replicated_dataset"]


def nci_records(n: int, cache_dir: str | None = None) -> PackedRecords:
    """The first ``n`` NCI molecules, prepared once (one conformer) and cached."""
    prepared = embedded_default(n, ConformerOptions(), cache_dir=cache_dir, progress=True)
    return prepared.records


class _Replicas(Sequence[MoleculeRecord]):
    """Whole replicas of ``base`` as one sequence; slices on replica bounds are PackedRecords."""

    def __init__(self, base: PackedRecords, first: int, count: int, jitter: float, seed: int):
        self.base = base
        self.first = first
        self.count = count
        self.jitter = jitter
        self.seed = seed

    def __len__(self) -> int:
        return self.count * len(self.base)

    def replica(self, index: int) -> PackedRecords:
        number = self.first + index
        rng = np.random.default_rng([self.seed, number])
        arrays = dict(self.base.arrays)
        arrays["mol_id"] = number * len(self.base) + np.arange(len(self.base), dtype=np.int64)
        conformers = self.base.arrays["conformers"]
        noise = rng.normal(0.0, self.jitter, conformers.shape).astype(np.float32)
        arrays["conformers"] = conformers + noise
        return PackedRecords(arrays)

    @overload
    def __getitem__(self, index: int) -> MoleculeRecord: ...

    @overload
    def __getitem__(self, index: slice) -> PackedRecords: ...

    def __getitem__(self, index: int | slice) -> MoleculeRecord | PackedRecords:
        size = len(self.base)
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1 or start % size or (stop - start) != size:
                raise IndexError("replicas are sliced one whole replica at a time")
            return self.replica(start // size)
        index = index % len(self)
        return self.replica(index // size)[index % size]


def write_replicated_dataset(
    base: PackedRecords,
    output: str | Path,
    total: int,
    shard_size: int,
    jitter: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """Write at least ``total`` records (whole replicas of ``base``) as shards + manifest.

    Args:
        base: The real records to replicate (``B`` of them; one tar member per replica).
        output: The data set directory.
        total: Records wanted; rounded up to whole replicas.
        shard_size: Records per shard; rounded up to whole replicas.
        jitter: Standard deviation of the coordinate noise, Å.
        seed: Seed of the noise.

    Returns:
        The manifest written (plus ``"seconds"``, the time taken).
    """
    start = time.perf_counter()
    root = Path(output)
    root.mkdir(parents=True, exist_ok=True)
    size = len(base)
    replicas = math.ceil(total / size)
    per_shard = max(1, math.ceil(shard_size / size))
    shards = []
    for index, first in enumerate(range(0, replicas, per_shard)):
        records = _Replicas(base, first, min(per_shard, replicas - first), jitter, seed)
        info = write_shard(root / f"shard-{index:06d}.tar", records, chunk_size=size)
        shards.append(info.to_dict())
    ok = replicas * size
    manifest = {
        "shards": shards,
        "ok": ok,
        "failed": 0,
        "read": ok,
        "failures_by_reason": {},
        "failures": [],
        "inputs": [],
        "settings": {"synthetic": {"base_records": size, "jitter": jitter, "seed": seed}},
        "record_format_version": RECORD_FORMAT_VERSION,
    }
    write_json_atomic(root / MANIFEST_FILE, manifest)
    return {**manifest, "seconds": time.perf_counter() - start}

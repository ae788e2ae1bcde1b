"""``ShardedStream``: pre-training samples streamed from shards, split by DDP rank and worker.

A :class:`ShardSet` is a list of shards with known record counts: the ``.tar`` shards of a
``molssl prepare`` directory (:class:`DiskShards`, read chunk by chunk with
:func:`~molssl.datamodules.shards.iter_shard_chunks`) or records already in memory
(:class:`MemoryShards`, one virtual shard per distinct molecule). One code path serves both.

Each epoch of a training stream:

1. permutes the split's shards with a generator seeded by ``(seed, epoch)``; the
   concatenation numbers the records ``0 .. M-1`` (the same on every rank and worker);
2. gives rank ``r`` of ``W`` the positions ``[r*P, (r+1)*P)``, ``P = ceil(M / W)``, wrapping
   past ``M`` (at most ``W - 1`` repeats per epoch, as ``DistributedSampler`` pads), so every
   rank yields the same number of samples and batches;
3. gives worker ``k`` of the rank's ``K`` loader workers a contiguous run of whole batches
   (:mod:`~molssl.datamodules.partition`): ``len(loader)`` is exact, and only the rank's last
   batch can be partial, on every rank alike (no ``drop_last`` needed for DDP);
4. reads only the shards overlapping the worker's block, skipping records outside it, passes
   them through a shuffle buffer of ``shuffle_buffer`` records seeded by
   ``(seed, epoch, rank, worker)``, and applies the views.

The epoch advances on each ``__iter__`` (a persistent worker keeps its own copy of the
stream, so each copy counts its iterations) from the value given by :meth:`set_epoch`.

Training views draw from a torch generator state private to the stream, seeded by
``(seed, epoch, rank, worker)`` and swapped in around each sample: a worker's samples depend
on those numbers and the split only (``num_workers=0`` gives the samples of one worker
process; the caller's use of torch's global generator changes nothing), and ranks never draw
the same noise. Persistent workers are assumed: a non-persistent loader would restart every
worker's copy at the epoch of :meth:`set_epoch`. A validation stream keeps the shards
in order, does not shuffle or pad (balanced blocks: every molecule once across the world;
it pads only when it has fewer molecules than ranks, since Lightning refuses an empty rank),
and fixes each molecule's conformer and views by ``(seed, mol_id)``.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info
from torch_geometric.data import Data

from molssl.datamodules.embedded import molecule_seed
from molssl.datamodules.partition import rank_range, segments, worker_range
from molssl.datamodules.records import MoleculeRecord
from molssl.datamodules.samples import viewed_sample
from molssl.datamodules.stream_position import batches_taken_per_worker
from molssl.errors import UserError
from molssl.objectives.base import View

if TYPE_CHECKING:
    from molssl.datamodules.shards import ShardInfo

__all__ = [
    "DROPPED_KEYS",
    "DiskShards",
    "MemoryShards",
    "ShardReadError",
    "ShardSet",
    "ShardedStream",
    "ordered_views",
    "shuffled",
    "view_sample",
]

#: Keys the torsion view reads; (T, N) per molecule cannot be batched, so they go after views.
DROPPED_KEYS = ("torsion_atoms", "torsion_moving")
#: Records a shuffle buffer holds before it starts yielding; it then grows to its full size.
INITIAL_BUFFER = 64

T = TypeVar("T")


class ShardReadError(UserError):
    """A shard holds fewer records than its manifest says (damaged or replaced file)."""


@runtime_checkable
class ShardSet(Protocol):
    """Shards with known record counts, readable one at a time in record order."""

    #: Records per shard.
    counts: Sequence[int]
    #: Whether records read from a shard are views into buffers freed after their chunk (a
    #: shuffle buffer must then copy them, or it keeps whole chunks alive).
    transient: bool

    def chunks(self, shard: int) -> Iterator[Sequence[MoleculeRecord]]:
        """The records of shard ``shard``, in order, in chunks."""
        ...

    def name(self, shard: int) -> str:
        """Where shard ``shard`` comes from (for error messages)."""
        ...


class MemoryShards:
    """Records in memory presented as shards: one virtual shard per distinct molecule.

    Records sharing a canonical SMILES (a molecule listed twice in the source) form one
    shard, so holding out shards holds out molecules, duplicates on one side. Shards are
    numbered by first appearance. In memory there is no read locality to preserve, so
    one-molecule shards cost nothing and make every epoch a full permutation.
    """

    transient = False

    def __init__(self, records: Sequence[MoleculeRecord], smiles: Sequence[str]) -> None:
        if len(smiles) != len(records):
            raise ValueError(f"{len(smiles)} SMILES for {len(records)} records")
        self.records = records
        _, first, group = np.unique(
            np.asarray(smiles, dtype=str), return_index=True, return_inverse=True
        )
        rank = np.empty(len(first), dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(first))
        shard_of = rank[group.reshape(-1)]
        order = np.argsort(shard_of, kind="stable")
        bounds = np.searchsorted(shard_of[order], np.arange(len(first) + 1))
        self.members = [order[bounds[i] : bounds[i + 1]] for i in range(len(first))]
        self.counts = [len(m) for m in self.members]

    def chunks(self, shard: int) -> Iterator[Sequence[MoleculeRecord]]:
        """One chunk: the records of molecule shard ``shard``."""
        yield [self.records[int(i)] for i in self.members[shard]]

    def name(self, shard: int) -> str:
        """``memory shard <i>`` and its record positions."""
        return f"memory shard {shard} (records {self.members[shard].tolist()})"


class DiskShards:
    """The shards of a ``molssl prepare`` directory (``manifest.json`` + ``.tar`` shards).

    Args:
        root: The dataset directory (or URL prefix) the shard files are relative to.
        files: Each shard's file, relative to ``root``.
        counts: Each shard's record count (from the manifest).
        infos: Each shard's manifest entry; when given (as :meth:`from_manifest` does), what is
            read is checked against it (mol_id range, count, sha256:
            :mod:`~molssl.datamodules.shard_checks`), so a replaced or damaged shard is an
            error naming it, never silently other molecules.
    """

    transient = True

    def __init__(
        self,
        root: str | Path,
        files: Sequence[str],
        counts: Sequence[int],
        infos: Sequence[ShardInfo] | None = None,
    ) -> None:
        if len(files) != len(counts):
            raise ValueError(f"{len(files)} shard files for {len(counts)} counts")
        if infos is not None and len(infos) != len(files):
            raise ValueError(f"{len(infos)} shard entries for {len(files)} shard files")
        self.root = str(root)
        self.files = list(files)
        self.counts = [int(c) for c in counts]
        self.infos = None if infos is None else list(infos)

    @classmethod
    def from_manifest(cls, root: str | Path) -> DiskShards:
        """The shards listed in ``root/manifest.json`` (see ``molssl.datamodules.shards``)."""
        from molssl.datamodules.shards import dataset_shards

        infos = dataset_shards(root)
        return cls(root, [info.file for info in infos], [info.count for info in infos], infos)

    def url(self, shard: int) -> str:
        """Path or URL of shard ``shard``."""
        from molssl.datamodules.shards import ShardInfo, shard_url

        info = ShardInfo(self.files[shard], self.counts[shard], "", -1, -1)
        return shard_url(self.root, info)

    def chunks(self, shard: int) -> Iterator[Sequence[MoleculeRecord]]:
        """The shard's chunks as written (``PackedRecords`` of up to its chunk size), checked
        against the manifest entry when there is one."""
        from molssl.datamodules.shard_checks import iter_verified_chunks
        from molssl.datamodules.shards import iter_shard_chunks

        if self.infos is None:
            return iter(iter_shard_chunks(self.url(shard)))
        return iter(iter_verified_chunks(self.url(shard), self.infos[shard]))

    def name(self, shard: int) -> str:
        """The shard's path or URL."""
        return self.url(shard)


def ordered_views(views: Iterable[View]) -> list[View]:
    """``views`` sorted by their ``order`` (stable); raises ``TypeError`` for a non-callable."""
    views = list(views)
    for view in views:
        if not callable(view):
            raise TypeError(f"a view must be callable on a Data, got {type(view).__name__}")
    return sorted(views, key=lambda view: getattr(view, "order", View.order))


def view_sample(record: MoleculeRecord, views: Sequence[View], private: bool = False) -> Data:
    """One sample: a conformer drawn from torch's generator, ``to_data``, views, keys dropped.

    Views with a NumPy form run on the record's arrays (:mod:`molssl.datamodules.samples`);
    ``private``: the record's arrays are the sample's alone (see ``viewed_sample``).
    """
    return viewed_sample(record, views, drop=DROPPED_KEYS, private=private)


def shuffled(items: Iterable[T], size: int, rng: np.random.Generator) -> Iterator[T]:
    """``items`` through a shuffle buffer of up to ``size`` (1 or less: unchanged order).

    The buffer yields once it holds :data:`INITIAL_BUFFER` items and then grows by one every
    second item up to ``size``, so the first samples come quickly; the rest is shuffled
    and yielded at the end.
    """
    if size <= 1:
        yield from items
        return
    buffer: list[T] = []
    for seen, item in enumerate(items, start=1):
        buffer.append(item)
        if len(buffer) > min(size, INITIAL_BUFFER + seen // 2):
            chosen = int(rng.integers(len(buffer)))
            buffer[chosen], buffer[-1] = buffer[-1], buffer[chosen]
            yield buffer.pop()
    for index in rng.permutation(len(buffer)):
        yield buffer[index]


def _owned(record: MoleculeRecord) -> MoleculeRecord:
    # A record sliced from a chunk views the chunk's arrays; copying keeps only its own bytes.
    clone = copy.copy(record)
    for key, value in vars(record).items():
        if isinstance(value, np.ndarray):
            setattr(clone, key, value.copy())
    return clone


def _seed(*parts: int) -> list[int]:
    return [int(part) & 0xFFFFFFFF for part in parts]


class ShardedStream(IterableDataset[Data]):
    """Samples of some shards of a :class:`ShardSet`, split by rank and loader worker.

    Args:
        shards: The data set's shards.
        shard_ids: The shards of this split (e.g. the training shards).
        views: Per-sample views, applied in their ``order``.
        training: ``True``: shuffled shards and buffer, padding to equal rank sizes, fresh
            views; ``False`` (validation): shard order kept, balanced blocks, views fixed by
            ``(seed, mol_id)``.
        seed: Seed of the epoch orders, the shuffle buffers, the views.
        shuffle_buffer: Records per worker's shuffle buffer (training; 0 or 1 disables it).
        batch_size: The loader's batch size: workers split a rank's block at batch boundaries.
    """

    def __init__(
        self,
        shards: ShardSet,
        shard_ids: Sequence[int],
        views: Sequence[View] = (),
        *,
        training: bool = True,
        seed: int = 0,
        shuffle_buffer: int = 10_000,
        batch_size: int = 1,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, got {shuffle_buffer}")
        self.shards = shards
        self.shard_ids = np.asarray(shard_ids, dtype=np.int64).reshape(-1)
        self.views = ordered_views(views)
        self.training = training
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        #: Build samples on the arrays of records copied out of their chunks, without a second
        #: copy; ``False`` copies them again (the earlier code, which benchmarks compare with).
        self.reuse_owned = True
        self.batch_size = batch_size
        self.rank = 0
        self.world_size = 1
        self._epoch = 0
        self._iterations = 0
        self._skip_batches = 0
        self.num_records = int(sum(shards.counts[int(i)] for i in self.shard_ids))

    # -- settings --------------------------------------------------------------------------

    def set_distributed(self, rank: int, world_size: int) -> None:
        """This process's DDP rank and the number of ranks."""
        rank_range(0, world_size, rank, pad=True)  # validates both
        self.rank, self.world_size = int(rank), int(world_size)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """The epoch of the next ``__iter__``; later iterations count up from it.

        Args:
            epoch: The epoch.
            skip_batches: Batches of this rank's ``epoch`` already consumed by an interrupted
                run: the next ``__iter__`` (of every worker's copy) leaves out the samples of
                those batches (:mod:`~molssl.datamodules.stream_position`); later epochs are
                whole. The samples that remain get the same molecules in the same order as
                in the uninterrupted run, with different views: the skipped samples' views
                are never drawn, so the view generator starts where they would have begun.
        """
        if skip_batches < 0:
            raise ValueError(f"skip_batches must be >= 0, got {skip_batches}")
        self._epoch, self._iterations = int(epoch), 0
        self._skip_batches = int(skip_batches)

    @property
    def epoch(self) -> int:
        """The epoch the next ``__iter__`` of this copy will stream."""
        return self._epoch + self._iterations

    # -- the split -------------------------------------------------------------------------

    def _pad(self) -> bool:
        return self.training or self.num_records < self.world_size

    def __len__(self) -> int:
        """Samples this rank yields per epoch (all of its workers together)."""
        start, stop = rank_range(self.num_records, self.world_size, self.rank, self._pad())
        return stop - start

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The split's shard ids in the order of ``epoch`` (kept for validation)."""
        if not self.training:
            return self.shard_ids.copy()
        rng = np.random.default_rng(_seed(self.seed, epoch, 0x0DE5))
        return self.shard_ids[rng.permutation(len(self.shard_ids))]

    def worker_batches(self, num_workers: int) -> list[int]:
        """Batches each of ``num_workers`` loader workers yields per epoch on this rank."""
        first, last = rank_range(self.num_records, self.world_size, self.rank, self._pad())
        spans = [
            worker_range(last - first, num_workers, k, self.batch_size) for k in range(num_workers)
        ]
        return [math.ceil((stop - start) / self.batch_size) for start, stop in spans]

    def plan(self, epoch: int, worker: int = 0, num_workers: int = 1) -> list[tuple[int, int, int]]:
        """``(shard id, start, stop)`` record slices ``worker`` of this rank reads in ``epoch``."""
        order = self.epoch_order(epoch)
        counts = [self.shards.counts[int(i)] for i in order]
        first, last = rank_range(self.num_records, self.world_size, self.rank, self._pad())
        begin, end = worker_range(last - first, num_workers, worker, self.batch_size)
        found = segments(counts, first + begin, first + end)
        return [(int(order[s.shard]), s.start, s.stop) for s in found]

    # -- iteration -------------------------------------------------------------------------

    def _records(self, plan: Sequence[tuple[int, int, int]]) -> Iterator[MoleculeRecord]:
        for shard, start, stop in plan:
            offset = 0
            # Read to its end, a shard's own checks (count, sha256) run; a partial read stops.
            whole = stop >= self.shards.counts[shard]
            with closing(iter(self.shards.chunks(shard))) as chunks:  # type: ignore[type-var]
                for chunk in chunks:
                    size = len(chunk)
                    for index in range(max(start, offset), min(stop, offset + size)):
                        yield chunk[index - offset]
                    offset += size
                    if offset >= stop and not whole:
                        break
            if offset < stop:
                raise ShardReadError(
                    f"{self.shards.name(shard)} holds {offset} records, the manifest says "
                    f"{self.shards.counts[shard]}; prepare the data set again"
                )

    def __iter__(self) -> Iterator[Data]:
        epoch = self.epoch
        skip = self._skip_batches if self._iterations == 0 else 0
        self._iterations += 1
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        records = self._records(self.plan(epoch, worker, num_workers))
        if not self.training:
            for record in records:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(molecule_seed(self.seed, record.mol_id))
                    yield view_sample(record, self.views)
            return
        stream_seed = _seed(self.seed, epoch, self.rank, worker)
        # Records copied out of their chunks belong to this stream alone: their arrays become
        # the samples' without a second copy.
        owned = self.shuffle_buffer > 1 and self.shards.transient
        private = owned and self.reuse_owned
        if owned:
            records = map(_owned, records)
        records = shuffled(records, self.shuffle_buffer, np.random.default_rng(stream_seed))
        if skip:
            taken = batches_taken_per_worker(self.worker_batches(num_workers), skip)[worker]
            records = itertools.islice(records, taken * self.batch_size, None)
        torch_seed = np.random.SeedSequence([*stream_seed, 0x7EE5]).generate_state(1)[0]
        state = torch.Generator().manual_seed(int(torch_seed)).get_state()
        for record in records:
            caller = torch.get_rng_state()
            torch.set_rng_state(state)
            try:
                sample = view_sample(record, self.views, private)
            finally:
                state = torch.get_rng_state()
                torch.set_rng_state(caller)
            yield sample

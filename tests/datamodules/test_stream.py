"""ShardedStream: every molecule once per epoch across 2 ranks x 2 real loader workers, equal
batch counts on uneven shards, fresh orders per epoch, views independent of the worker count."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
import torch
from torch_geometric.loader import DataLoader

from molssl.chem.conformers import ConformerOptions
from molssl.datamodules.embedded import embedded_default
from molssl.datamodules.partition import holdout_shards
from molssl.datamodules.records import MoleculeRecord, PackedRecords
from molssl.datamodules.stream import MemoryShards, ShardedStream, ShardReadError, shuffled
from molssl.objectives.views import CoordNoise

#: Uneven shard sizes: 40 records in 7 shards.
COUNTS = [7, 3, 11, 1, 5, 9, 4]


class SlicedShards:
    """Consecutive slices of in-memory records as shards (``transient``: copied when buffered)."""

    transient = True

    def __init__(self, records: Sequence[MoleculeRecord], counts: Sequence[int]) -> None:
        self.records = records
        self.counts = list(counts)
        self.starts = np.concatenate([[0], np.cumsum(counts)]).tolist()

    def chunks(self, shard: int) -> Iterator[Sequence[MoleculeRecord]]:
        start, stop = self.starts[shard], self.starts[shard + 1]
        for first in range(start, stop, 4):  # chunks of 4, as a tar shard's members
            yield self.records[first : min(first + 4, stop)]

    def name(self, shard: int) -> str:
        return f"slice {shard}"


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> PackedRecords:
    cache = tmp_path_factory.mktemp("stream_cache")
    prepared = embedded_default(44, ConformerOptions(), cache_dir=cache, workers=1, progress=False)
    assert len(prepared.records) >= sum(COUNTS)
    return prepared.records


def rank_epochs(
    shards: SlicedShards, shard_ids: Sequence[int], rank: int, epochs: int, **kwargs: object
) -> tuple[list[list[int]], int]:
    """Rank ``rank`` of 2 with 2 loader worker processes: mol ids per epoch, len(loader)."""
    stream = ShardedStream(shards, shard_ids, batch_size=3, shuffle_buffer=5, **kwargs)
    stream.set_distributed(rank, 2)
    loader = DataLoader(stream, batch_size=3, num_workers=2, persistent_workers=True)
    per_epoch = []
    for _ in range(epochs):
        batches = list(loader)
        assert len(batches) == len(loader)  # Lightning's progress and schedules rely on it
        per_epoch.append([int(i) for batch in batches for i in batch.mol_id])
    return per_epoch, len(loader)


@pytest.mark.parametrize("shard_ids", [range(7), [0, 1, 2, 4, 5, 6]], ids=["40", "39"])
def test_two_ranks_two_workers_see_every_molecule_once_per_epoch(
    records: PackedRecords, shard_ids: Sequence[int]
) -> None:
    shards = SlicedShards(records, COUNTS)
    expected = Counter(
        records[i].mol_id
        for shard in shard_ids
        for i in range(shards.starts[shard], shards.starts[shard + 1])
    )
    total = sum(expected.values())
    (epochs_0, length_0), (epochs_1, length_1) = (
        rank_epochs(shards, shard_ids, rank, epochs=2) for rank in (0, 1)
    )
    assert length_0 == length_1 == math.ceil(math.ceil(total / 2) / 3)  # same batch count
    for ids_0, ids_1 in zip(epochs_0, epochs_1, strict=True):
        assert len(ids_0) == len(ids_1) == math.ceil(total / 2)
        seen = Counter(ids_0 + ids_1)
        if total % 2 == 0:
            assert seen == expected  # exactly once across the world
        else:
            assert set(seen) == set(expected)  # padding: one molecule twice (W - 1 = 1)
            assert sum(seen.values()) - total == 1
    assert epochs_0[0] != epochs_0[1] and epochs_1[0] != epochs_1[1]  # a new order per epoch


def test_validation_stream_balanced_in_order_and_disjoint_from_training(
    records: PackedRecords,
) -> None:
    shards = SlicedShards(records, COUNTS)
    train_ids, val_ids = holdout_shards(len(COUNTS), 0.3, seed=0)
    val_counts = Counter()
    for rank in (0, 1):
        (first, second), _ = rank_epochs(shards, val_ids, rank, epochs=2, training=False)
        assert first == second  # fixed order
        val_counts.update(first)
    train_seen = Counter()
    for rank in (0, 1):
        epochs, _ = rank_epochs(shards, train_ids, rank, epochs=1)
        train_seen.update(epochs[0])
    assert set(val_counts).isdisjoint(train_seen)
    assert set(val_counts.values()) == {1}  # every validation molecule once, no padding
    assert sum(val_counts.values()) == sum(COUNTS[i] for i in val_ids)


def test_views_depend_on_seed_epoch_rank_worker_only(records: PackedRecords) -> None:
    shards = MemoryShards(records, records.smiles)
    ids = np.arange(len(shards.counts))

    def epoch(workers: int, rank: int = 0, seed: int = 0) -> dict[int, torch.Tensor]:
        stream = ShardedStream(shards, ids, [CoordNoise(0.1)], seed=seed, batch_size=4)
        stream.set_distributed(rank, 2)
        torch.manual_seed(123 + workers)  # the caller's generator must not matter
        loader = DataLoader(stream, batch_size=4, num_workers=workers)
        return {int(d.mol_id): d.coord_noise for b in loader for d in b.to_data_list()}

    in_process, one_worker = epoch(0), epoch(1)
    assert in_process.keys() == one_worker.keys()
    assert all(torch.equal(in_process[k], one_worker[k]) for k in in_process)
    other_seed = epoch(0, seed=1)
    shared = in_process.keys() & other_seed.keys()
    assert shared and not any(torch.equal(in_process[k], other_seed[k]) for k in shared)
    rank_1 = epoch(0, rank=1)
    assert in_process.keys().isdisjoint(rank_1.keys())


def test_set_epoch_replays_an_epoch_and_length_follows_the_world(records: PackedRecords) -> None:
    shards = SlicedShards(records, COUNTS)
    stream = ShardedStream(shards, range(len(COUNTS)), batch_size=4, shuffle_buffer=8)
    first, second = ([int(d.mol_id) for d in stream] for _ in range(2))
    assert stream.epoch == 2 and first != second and sorted(first) == sorted(second)
    stream.set_epoch(1)
    assert [int(d.mol_id) for d in stream] == second
    assert len(stream) == 40
    stream.set_distributed(2, 3)
    assert len(stream) == 14 and len([int(d.mol_id) for d in stream]) == 14
    with pytest.raises(ValueError, match="rank"):
        stream.set_distributed(3, 3)


def test_memory_shards_group_duplicates_and_a_short_shard_is_an_error(
    records: PackedRecords,
) -> None:
    subset = [records[0], records[1], records[0], records[2], records[1]]
    shards = MemoryShards(subset, [r.smiles for r in subset])
    assert shards.counts == [2, 2, 1]
    assert [r.mol_id for r in next(shards.chunks(0))] == [records[0].mol_id] * 2
    short = SlicedShards(records, COUNTS)
    short.counts = [*COUNTS[:-1], COUNTS[-1] + 2]  # the manifest claims more than the shard has
    stream = ShardedStream(short, [len(COUNTS) - 1], training=False)
    with pytest.raises(ShardReadError, match="slice 6 holds 4 records, the manifest says 6"):
        list(stream)


@pytest.mark.parametrize("size", [0, 1, 3, 64, 100, 1000])
def test_shuffle_buffer_permutes_and_is_seeded(size: int) -> None:
    items = list(range(500))
    out = list(shuffled(iter(items), size, np.random.default_rng(0)))
    assert sorted(out) == items
    assert out == list(shuffled(iter(items), size, np.random.default_rng(0)))
    if size <= 1:
        assert out == items
    else:
        assert out != items
        assert out != list(shuffled(iter(items), size, np.random.default_rng(1)))
        # A buffer of b items cannot emit an item more than about b places early.
        assert all(out.index(item) >= item - size for item in items)

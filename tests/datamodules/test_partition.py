"""Split arithmetic of the sharded stream against brute-force enumeration of positions."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest

from molssl.datamodules.partition import (
    holdout_shards,
    rank_range,
    segments,
    worker_range,
)


def flat_positions(counts: list[int]) -> list[tuple[int, int]]:
    """Every record as ``(shard position in the order, offset in the shard)``, in order."""
    return [(shard, offset) for shard, count in enumerate(counts) for offset in range(count)]


def expand(counts: list[int], start: int, stop: int) -> list[tuple[int, int]]:
    return [
        (segment.shard, offset)
        for segment in segments(counts, start, stop)
        for offset in range(segment.start, segment.stop)
    ]


SHARD_LAYOUTS = [[5], [3, 0, 4], [1, 1, 1], [7, 2, 9, 1, 4], [0, 6, 0], [2] * 11, [13, 1]]


@pytest.mark.parametrize("counts", SHARD_LAYOUTS)
@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("pad", [True, False])
def test_rank_blocks_map_to_the_brute_force_records(
    counts: list[int], world_size: int, pad: bool
) -> None:
    flat = flat_positions(counts)
    total = len(flat)
    seen: Counter[tuple[int, int]] = Counter()
    sizes = []
    for rank in range(world_size):
        start, stop = rank_range(total, world_size, rank, pad)
        expected = [flat[p % total] for p in range(start, stop)]
        assert expand(counts, start, stop) == expected
        seen.update(expected)
        sizes.append(stop - start)
    if pad:
        assert set(sizes) == {math.ceil(total / world_size)}  # every rank the same size
        assert set(seen) == set(flat)
        assert sum(seen.values()) - total <= world_size - 1  # padding: at most W-1 repeats
    else:
        assert seen == Counter(flat)  # every record exactly once
        assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("count", [0, 1, 5, 16, 17, 33, 100])
@pytest.mark.parametrize("num_workers", [1, 2, 3, 5])
@pytest.mark.parametrize("granularity", [1, 4, 8])
def test_worker_blocks_are_contiguous_whole_batches(
    count: int, num_workers: int, granularity: int
) -> None:
    ranges = [worker_range(count, num_workers, k, granularity) for k in range(num_workers)]
    # Contiguous, in worker order, covering the rank's block exactly once.
    assert ranges[0][0] == 0 and ranges[-1][1] == count
    for (_, stop), (start, _) in itertools.pairwise(ranges):
        assert stop == start
    # A loader batches each worker separately: the batch total is what len(loader) says.
    batches = [math.ceil((stop - start) / granularity) for start, stop in ranges]
    assert sum(batches) == math.ceil(count / granularity)
    assert max(batches) - min(batches) <= 1
    nonempty = [(start, stop) for start, stop in ranges if stop > start]
    for start, stop in nonempty[:-1]:
        assert (stop - start) % granularity == 0


def test_segments_wrap_more_than_once_and_skip_empty_shards() -> None:
    counts = [0, 2, 0, 1, 0]
    flat = flat_positions(counts)
    assert expand(counts, 1, 10) == [flat[p % 3] for p in range(1, 10)]
    assert segments(counts, 4, 4) == []
    with pytest.raises(ValueError, match="no record"):
        segments([0, 0], 0, 1)
    with pytest.raises(ValueError):
        rank_range(10, 2, 2, pad=True)
    with pytest.raises(ValueError):
        worker_range(10, 0, 0, 1)


@pytest.mark.parametrize("num_shards", [2, 3, 10, 57])
@pytest.mark.parametrize("val_fraction", [0.0, 0.05, 0.25, 0.5, 0.9])
def test_holdout_is_a_seeded_ceil_fraction_of_shards(num_shards: int, val_fraction: float) -> None:
    train, val = holdout_shards(num_shards, val_fraction, seed=3)
    assert sorted([*train.tolist(), *val.tolist()]) == list(range(num_shards))
    expected = min(num_shards - 1, math.ceil(val_fraction * num_shards))
    assert len(val) == expected and len(train) >= 1
    again_train, again_val = holdout_shards(num_shards, val_fraction, seed=3)
    np.testing.assert_array_equal(again_val, val)
    np.testing.assert_array_equal(again_train, train)


def test_holdout_depends_on_the_seed_and_refuses_one_shard() -> None:
    choices = {tuple(holdout_shards(40, 0.25, seed=s)[1].tolist()) for s in range(5)}
    assert len(choices) == 5
    with pytest.raises(ValueError, match="at least two shards"):
        holdout_shards(1, 0.1, seed=0)
    assert holdout_shards(1, 0.0, seed=0)[0].tolist() == [0]
    with pytest.raises(ValueError, match="val_fraction"):
        holdout_shards(5, 1.0, seed=0)

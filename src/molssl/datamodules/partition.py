"""Split arithmetic of the sharded stream: shards → epoch order → rank → worker → segments.

A data set is a list of shards with known record counts. An epoch puts the shards of a split
in some order; the concatenation numbers every record with a global position ``0 .. M-1``.

* **Ranks.** Training (``pad=True``): each of ``W`` ranks gets exactly ``P = ceil(M / W)``
  consecutive positions ``[r*P, (r+1)*P)``; the positions past ``M`` wrap to the start, so at
  most ``W - 1`` records are seen twice per epoch (as ``DistributedSampler`` pads). Every rank
  then has the same number of samples, hence of batches: no rank waits on another in a
  collective. Validation (``pad=False``): balanced blocks ``[r*M//W, (r+1)*M//W)``, sizes
  differing by at most one, every record exactly once across the world.
* **Workers.** A rank's block is cut into batches of ``granularity`` positions; worker ``k`` of
  ``K`` takes a contiguous run of whole batches, so only the last non-empty worker can end
  with a partial batch, and the loader yields exactly ``ceil(P / granularity)`` batches (what
  ``len(DataLoader)`` reports), whatever ``K``.
* **Segments.** A worker's positions map to ``(shard, start, stop)`` slices of the shards in
  epoch order, so it reads only the shards that overlap its block.

Contiguous blocks (rather than ``r, r+W, r+2W, ...``) keep reads local: a worker reads a run
of consecutive shards and at most two of them partly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from molssl.errors import UserError

__all__ = [
    "Segment",
    "holdout_shards",
    "rank_range",
    "segments",
    "worker_range",
]


@dataclass(frozen=True)
class Segment:
    """Records ``[start, stop)`` of the shard at position ``shard`` of the epoch order."""

    shard: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def _check_world(world_size: int, rank: int) -> None:
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")


def rank_range(total: int, world_size: int, rank: int, pad: bool) -> tuple[int, int]:
    """Global positions ``[start, stop)`` of ``rank``.

    Args:
        total: Records in the split, ``M``.
        world_size: Ranks, ``W``.
        rank: This rank.
        pad: ``True``: ``ceil(M / W)`` positions per rank, ``stop`` may pass ``M`` (wrap to the
            start); ``False``: balanced blocks within ``[0, M)``, every record once.
    """
    _check_world(world_size, rank)
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    if pad:
        per_rank = math.ceil(total / world_size)
        return rank * per_rank, (rank + 1) * per_rank
    return rank * total // world_size, (rank + 1) * total // world_size


def worker_range(count: int, num_workers: int, worker: int, granularity: int) -> tuple[int, int]:
    """Offsets ``[start, stop)`` within a rank's ``count`` positions taken by ``worker``.

    Workers get contiguous runs of whole ``granularity``-sized batches, as even as possible;
    the partial batch (if any) goes to the last worker that has positions.
    """
    _check_world(num_workers, worker)
    if granularity < 1:
        raise ValueError(f"granularity must be >= 1, got {granularity}")
    batches = math.ceil(count / granularity)
    first = worker * batches // num_workers
    last = (worker + 1) * batches // num_workers
    return min(first * granularity, count), min(last * granularity, count)


def segments(counts: Sequence[int], start: int, stop: int) -> list[Segment]:
    """Slices of the shards (sizes ``counts``, in epoch order) covering positions ``[start, stop)``.

    Positions at or past ``sum(counts)`` wrap around (padding), as often as needed.
    """
    sizes = np.asarray(counts, dtype=np.int64)
    if np.any(sizes < 0):
        raise ValueError("shard counts must be >= 0")
    total = int(sizes.sum())
    if stop <= start:
        return []
    if total == 0:
        raise ValueError(f"positions [{start}, {stop}) asked of shards holding no record")
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    found: list[Segment] = []
    position = start
    while position < stop:
        local = position % total
        # Largest shard starting at or before `local`; skips empty shards.
        shard = int(np.searchsorted(offsets, local, side="right")) - 1
        within = local - int(offsets[shard])
        take = min(int(sizes[shard]) - within, stop - position)
        found.append(Segment(shard, within, within + take))
        position += take
    return found


def holdout_shards(
    num_shards: int, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded choice of validation shards: ``(train, val)`` sorted shard indices.

    ``ceil(val_fraction * num_shards)`` shards are held out; none when ``val_fraction`` is 0.

    Raises:
        ValueError: ``val_fraction`` outside ``[0, 1)``, or ``val_fraction > 0`` with fewer
            than two shards (nothing would be left to train on).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if num_shards < 1:
        raise UserError("the data set has no shard")
    every = np.arange(num_shards)
    if val_fraction == 0:
        return every, every[:0]
    if num_shards < 2:
        raise UserError(
            f"validation is held out by shard, and the data set has {num_shards} shard; "
            "prepare it into at least two shards (a smaller shard size) or set val_fraction=0"
        )
    held_out = min(num_shards - 1, math.ceil(val_fraction * num_shards))
    chosen = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5EED]).permutation(num_shards)
    val = np.sort(chosen[:held_out])
    return np.setdiff1d(every, val), val

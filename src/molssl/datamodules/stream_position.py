"""Where an interrupted training epoch of a :class:`~molssl.datamodules.stream.ShardedStream` stood.

A rank's epoch is a fixed function of ``(seed, epoch, rank, world size, loader workers, batch
size, split)``: worker ``k`` yields its own run of batches in a fixed order. PyTorch's
``DataLoader`` takes batches from its workers round-robin, passing over a worker once it is
exhausted (its index is skipped), so after ``n`` batches on a rank each worker has delivered a
number of batches that depends only on ``n`` and the workers' batch counts
(:func:`batches_taken_per_worker`). A resumed run skips exactly those batches of each worker's
stream and yields the rest of the epoch in the order the uninterrupted run would have.

:class:`StreamPosition` is what the data module stores in a checkpoint; the layout fields say
whether the skip is exact for the resumed run (the same world size, workers, batch size, seed,
shuffle buffer and split size).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["StreamPosition", "batches_taken_per_worker"]


def batches_taken_per_worker(batches: Sequence[int], consumed: int) -> list[int]:
    """Batches each worker has delivered after the loader yielded ``consumed`` batches.

    Args:
        batches: Each worker's batch count for the epoch, in worker order.
        consumed: Batches the loader yielded (at most ``sum(batches)``).

    Raises:
        ValueError: ``consumed`` negative or more than the workers hold.
    """
    if consumed < 0 or consumed > sum(batches):
        raise ValueError(f"{consumed} batches consumed of an epoch of {sum(batches)}")
    taken = [0] * len(batches)
    left = consumed
    # Whole rounds over the workers that still have batches, then a partial round.
    while left > 0:
        for worker, count in enumerate(batches):
            if left == 0:
                break
            if taken[worker] < count:
                taken[worker] += 1
                left -= 1
    return taken


@dataclass(frozen=True)
class StreamPosition:
    """The training stream's position saved in a checkpoint.

    Attributes:
        epoch: The trainer epoch that was running.
        batches: Training batches this rank had consumed in that epoch (every rank alike).
        world_size: Ranks of the run.
        num_workers: Loader workers per rank.
        batch_size: Molecules per batch.
        seed: The data module's seed.
        shuffle_buffer: Records per worker's shuffle buffer.
        num_records: Records in the training split.
    """

    epoch: int
    batches: int
    world_size: int
    num_workers: int
    batch_size: int
    seed: int
    shuffle_buffer: int
    num_records: int

    def to_dict(self) -> dict[str, int]:
        """Plain integers, for the checkpoint."""
        return {key: int(value) for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> StreamPosition:
        """The position in a checkpoint; raises ``ValueError`` naming missing fields."""
        names = [field.name for field in fields(cls)]
        missing = [name for name in names if name not in state]
        if missing:
            raise ValueError(f"stream position in the checkpoint lacks {missing}")
        return cls(**{name: int(state[name]) for name in names})

    def layout_differences(self, other: StreamPosition) -> list[str]:
        """``name saved -> now`` for each layout field that differs from ``other``'s."""
        names = [field.name for field in fields(self) if field.name not in ("epoch", "batches")]
        return [
            f"{name} {getattr(self, name)} -> {getattr(other, name)}"
            for name in names
            if getattr(self, name) != getattr(other, name)
        ]

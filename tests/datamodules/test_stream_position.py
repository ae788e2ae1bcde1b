"""Resuming a training epoch of the sharded stream: the batches skipped per loader worker are
the ones PyTorch's DataLoader had taken round-robin, checked against real worker processes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from torch_geometric.loader import DataLoader

from molssl.chem.conformers import ConformerOptions
from molssl.datamodules import PretrainDataModule
from molssl.datamodules.embedded import embedded_default
from molssl.datamodules.stream import MemoryShards, ShardedStream
from molssl.datamodules.stream_position import StreamPosition, batches_taken_per_worker
from tests.modules.pretrain_fixtures import NUM_MOLECULES, prepare_small_cache


def test_batches_taken_round_robin_pass_over_exhausted_workers() -> None:
    assert batches_taken_per_worker([2, 3], 0) == [0, 0]
    assert batches_taken_per_worker([2, 3], 3) == [2, 1]
    assert batches_taken_per_worker([2, 3], 5) == [2, 3]
    assert batches_taken_per_worker([1, 4, 2], 5) == [1, 2, 2]
    assert batches_taken_per_worker([4], 3) == [3]
    with pytest.raises(ValueError, match="6 batches consumed of an epoch of 5"):
        batches_taken_per_worker([2, 3], 6)


def batches(stream: ShardedStream, workers: int) -> list[list[int]]:
    loader = DataLoader(stream, batch_size=stream.batch_size, num_workers=workers)
    return [[int(i) for i in batch.mol_id] for batch in loader]


@pytest.mark.parametrize("workers", [0, 3])
def test_skipping_leaves_out_exactly_the_batches_the_loader_had_yielded(
    tmp_path: Path, workers: int
) -> None:
    cache = prepare_small_cache(tmp_path / "cache")
    records = embedded_default(NUM_MOLECULES, ConformerOptions(num_conformers=1), cache).records
    shards = MemoryShards(records, records.smiles)
    # 24 molecules in batches of 3 on rank 1 of 2: 4 batches, 3 workers hold 1, 1 and 2.
    stream = ShardedStream(shards, range(len(shards.counts)), batch_size=3, shuffle_buffer=4)
    stream.set_distributed(1, 2)
    stream.set_epoch(5)
    full = batches(stream, workers)
    assert len(full) == 4
    for consumed in (1, 2, 3):
        stream.set_epoch(5, skip_batches=consumed)
        assert batches(stream, workers) == full[consumed:], consumed


def test_the_data_module_skips_only_for_the_same_epoch_and_layout(tmp_path: Path) -> None:
    cache = prepare_small_cache(tmp_path / "cache")
    records_dir = embedded_default(NUM_MOLECULES, ConformerOptions(num_conformers=1), cache)
    root = str(records_dir.directory)

    def epoch_ids(saved: dict | None, epoch: int = 1, **kwargs: object) -> list[int]:
        data = PretrainDataModule(root=root, batch_size=4, val_fraction=0.0, **kwargs)
        data.setup("fit")
        data.trainer = SimpleNamespace(global_rank=0, world_size=1, current_epoch=epoch)
        if saved is not None:
            data.load_state_dict(saved)
        return [int(i) for batch in data.train_dataloader() for i in batch.mol_id]

    full = epoch_ids(None)
    position = StreamPosition(1, 2, 1, 0, 4, 0, 10_000, len(full))
    assert epoch_ids({"stream_position": position.to_dict()}) == full[8:]
    # Another epoch's position, or an epoch already complete: the whole epoch.
    assert epoch_ids({"stream_position": position.to_dict()}, epoch=2) == epoch_ids(None, 2)
    done = StreamPosition(1, 6, 1, 0, 4, 0, 10_000, len(full))
    assert epoch_ids({"stream_position": done.to_dict()}) == full
    # Another layout (here the seed) cannot be continued exactly: a warning, the whole epoch.
    moved = StreamPosition(1, 2, 1, 0, 4, 7, 10_000, len(full))
    with pytest.warns(UserWarning, match=r"layout changed \(seed 7 -> 0\)"):
        assert epoch_ids({"stream_position": moved.to_dict()}) == full
    with pytest.raises(ValueError, match="lacks"):
        epoch_ids({"stream_position": {"epoch": 1}})

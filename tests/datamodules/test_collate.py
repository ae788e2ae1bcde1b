"""collate_samples: the Batch PyG's Batch.from_data_list makes, key by key, or PyG's itself."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch_geometric.data import Batch, Data

import molssl.datamodules.collate as collate_module
from molssl.chem.graph import AddGraphRelations
from molssl.datamodules.collate import collate_samples, fast_collatable
from molssl.datamodules.stream import DROPPED_KEYS, ordered_views, view_sample
from molssl.objectives.denoise import CoordDenoise
from molssl.objectives.fragment_mask import FragmentMask
from molssl.objectives.views import TorsionAugment
from tests.datamodules.test_samples import nci_records


def pipeline_samples() -> list[Data]:
    views = ordered_views(
        [TorsionAugment(2.0, "deg"), *CoordDenoise(sigma=0.04).views(), *FragmentMask().views()]
    )
    torch.manual_seed(5)
    return [view_sample(record, views) for record in nci_records()]


def assert_same_value(actual: Any, expected: Any, what: str) -> None:
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor), what
        assert (actual.dtype, actual.shape) == (expected.dtype, expected.shape), what
        assert torch.equal(actual, expected), what
    else:
        assert type(actual) is type(expected) and actual == expected, what


def assert_same_batch(actual: Batch, expected: Batch) -> None:
    assert type(actual) is type(expected)
    assert list(actual._store._mapping) == list(expected._store._mapping)
    for key, value in expected._store._mapping.items():
        assert_same_value(actual[key], value, key)
    assert actual._num_graphs == expected._num_graphs == actual.num_graphs
    assert actual._store.__dict__.get("_num_nodes") == expected._store.__dict__.get("_num_nodes")
    for name in ("_slice_dict", "_inc_dict"):
        mine, theirs = getattr(actual, name), getattr(expected, name)
        assert list(mine) == list(theirs), name
        for key, value in theirs.items():
            if value is None:
                assert mine[key] is None, (name, key)
            else:
                assert_same_value(mine[key], value, f"{name}[{key}]")


@pytest.mark.parametrize("size", [1, 2, 7, 32])
def test_pipeline_batches_equal_pygs(size: int) -> None:
    samples = pipeline_samples()
    assert fast_collatable(samples[:size])
    for start in range(0, len(samples), size):
        part = samples[start : start + size]
        batch, expected = collate_samples(part), Batch.from_data_list(part)
        assert_same_batch(batch, expected)
        # Taking the batch apart gives the samples back (slices and increments are right).
        for index, sample in enumerate(part):
            example, reference = batch.get_example(index), expected.get_example(index)
            assert torch.equal(example.edge_index, sample.edge_index)
            for key, value in reference._store._mapping.items():
                assert_same_value(example[key], value, key)


def test_shared_memory_in_a_worker_gives_the_same_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    samples = pipeline_samples()[:9]
    monkeypatch.setattr(collate_module, "get_worker_info", lambda: object())
    batch = collate_samples(samples)
    block = batch.pos.untyped_storage()
    assert block.is_shared()
    tensors = [value for value in batch._store._mapping.values() if isinstance(value, torch.Tensor)]
    tensors += [*batch._slice_dict.values(), *batch._inc_dict.values()]
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor):
            assert tensor.untyped_storage().data_ptr() == block.data_ptr()
    assert_same_batch(batch, Batch.from_data_list(samples))


def test_other_keys_follow_pygs_rules() -> None:
    relations = AddGraphRelations(max_hops=3)
    samples = []
    for index, record in enumerate(nci_records()[:6]):
        data = relations(record.to_data())
        for key in DROPPED_KEYS:
            del data[key]
        data.y = torch.tensor([[float(index), -1.0]])  # graph-level target (1, T)
        data.node_index = torch.arange(data.num_nodes)[::2]  # incremented like edge_index
        data.weight = torch.tensor(0.5 * index)  # 0-d: stacked
        data.name = f"m{index}"
        samples.append(data)
    assert fast_collatable(samples)
    assert_same_batch(collate_samples(samples), Batch.from_data_list(samples))


class Shifted(Data):
    """A Data subclass with its own increment rule: only PyG knows how to batch it."""

    def __inc__(self, key: str, value: Any, *args: Any, **kwargs: Any) -> Any:
        return 100 if key == "z" else super().__inc__(key, value, *args, **kwargs)


def _unusual(samples: list[Data], case: str) -> list[Data]:
    samples = [sample.clone() for sample in samples]
    if case == "subclass":
        return [Shifted(**sample.to_dict()) for sample in samples]
    if case == "number":
        samples[0].energy = 1.5
        samples[1].energy = 2.5
    elif case == "missing key":
        del samples[1].coord_noise
    elif case == "no num_nodes":
        for sample in samples:
            del sample.num_nodes
    elif case == "batch key":
        for sample in samples:
            sample.pos_batch = torch.zeros(sample.num_nodes, dtype=torch.long)
    elif case == "bool index":
        for sample in samples:
            sample.edge_index_mask = torch.ones(2, dtype=torch.bool)
    return samples


@pytest.mark.parametrize(
    "case", ["subclass", "number", "missing key", "no num_nodes", "batch key", "bool index"]
)
def test_anything_else_is_pygs_batch(case: str) -> None:
    samples = _unusual(pipeline_samples()[:2], case)
    assert not fast_collatable(samples)
    try:
        expected = Batch.from_data_list(samples)
    except (KeyError, AttributeError, RuntimeError) as error:
        with pytest.raises(type(error)):
            collate_samples(samples)
        return
    assert_same_batch(collate_samples(samples), expected)


def test_pretrain_loader_uses_it(tmp_path: Any) -> None:
    from molssl.datamodules.pretrain import PretrainDataModule

    dm = PretrainDataModule(batch_size=4, num_workers=0, num_molecules=8, cache_dir=str(tmp_path))
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.collate_fn is collate_samples
    batch = next(iter(loader))
    assert isinstance(batch, Batch) and batch.num_graphs == 4
    assert batch.ptr[-1] == batch.num_nodes == batch.z.numel()

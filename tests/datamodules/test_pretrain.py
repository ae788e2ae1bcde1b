"""PretrainDataModule: split by molecule, ordered views, fixed validation views, PyG batches."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from torch import nn
from torch_geometric.data import Batch, Data

from molssl.chem.conformers import ConformerOptions
from molssl.datamodules import PretrainDataModule
from molssl.datamodules.pretrain import PretrainDataset, split_by_molecule
from molssl.datamodules.records import (
    RECORD_FORMAT_VERSION,
    MoleculeRecord,
    record_from_smiles,
    save_records,
)
from molssl.datamodules.shards import ManifestError, write_json_atomic, write_shard
from molssl.datamodules.stream import DiskShards, ShardedStream
from molssl.errors import UserError, one_line
from molssl.objectives.base import View
from molssl.objectives.fragment_mask import FragmentMask
from molssl.objectives.views import CoordNoise, TorsionAugment

N = 40
BATCH_KEYS = {"z", "x", "edge_index", "edge_attr", "pos", "fragment", "smiles", "mol_id"}
BATCH_KEYS |= {"spd", "source_id"}


@pytest.fixture(scope="module")
def make_dm(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., PretrainDataModule]:
    cache = str(tmp_path_factory.mktemp("pretrain_cache"))

    def make(**kwargs: object) -> PretrainDataModule:
        settings: dict = {"num_molecules": N, "batch_size": 8, "cache_dir": cache}
        settings.update(prepare_workers=1, **kwargs)
        return PretrainDataModule(**settings)

    return make


@pytest.fixture
def dm(make_dm: Callable[..., PretrainDataModule]) -> PretrainDataModule:
    module = make_dm(val_fraction=0.25)
    module.setup("fit")
    return module


def all_views() -> list[View]:
    # Deliberately out of order: the datamodule sorts by View.order.
    return [*FragmentMask().views(), CoordNoise(0.04), TorsionAugment(2.0)]


class RecordingView(View):
    """Appends its order to a shared log and checks the sample still has torsion keys."""

    def __init__(self, order: int, log: list[int]) -> None:
        self.order = order
        self.log = log

    def __call__(self, data: Data) -> Data:
        assert "torsion_atoms" in data and "torsion_moving" in data
        self.log.append(self.order)
        return data


def mol_ids(stream: Iterable[Data]) -> list[int]:
    return [int(sample.mol_id) for sample in stream]


def test_split_is_disjoint_covering_and_seeded(
    dm: PretrainDataModule, make_dm: Callable[..., PretrainDataModule]
) -> None:
    assert dm.records is not None and dm.train_dataset and dm.val_dataset
    train, val = mol_ids(dm.train_dataset), mol_ids(dm.val_dataset)
    assert set(train).isdisjoint(val)
    assert sorted([*train, *val]) == sorted(dm.records.mol_ids.tolist())
    # In memory a shard is one distinct molecule: the hold-out is ceil(25%) of the molecules.
    assert len(val) == math.ceil(0.25 * len(set(dm.records.smiles)))
    stats = dm.stats()
    assert stats["molecules"] == len(dm.records) == stats["read"] - stats["failed"]
    assert (stats["train"], stats["val"]) == (len(train), len(val))
    assert (len(dm.train_dataset), len(dm.val_dataset)) == (len(train), len(val))
    same = make_dm(val_fraction=0.25)
    same.setup()
    assert mol_ids(same.val_dataset) == val
    other = make_dm(val_fraction=0.25, seed=1)
    other.setup()
    assert sorted(mol_ids(other.val_dataset)) != sorted(val)


def test_split_keeps_duplicate_molecules_together() -> None:
    smiles = ["CCO", "CCN", "CCO", "c1ccccc1", "CCN", "CCC", "CCO", "CCCl"]
    train, val = split_by_molecule(smiles, 0.4, seed=0)
    assert len(val) > 0 and len(train) > 0
    assert {smiles[i] for i in train}.isdisjoint(smiles[i] for i in val)
    assert sorted([*train, *val]) == list(range(len(smiles)))
    assert len({smiles[i] for i in val}) == 2  # round(0.4 * 5 distinct)
    with pytest.raises(ValueError, match="val_fraction"):
        split_by_molecule(smiles, 1.0, seed=0)
    with pytest.raises(ValueError, match="cannot be split"):
        split_by_molecule(["CCO", "CCO"], 0.5, seed=0)
    train, val = split_by_molecule(smiles, 0.0, seed=0)
    assert len(val) == 0 and len(train) == len(smiles)


def test_batches_have_the_views_keys_and_no_torsions(dm: PretrainDataModule) -> None:
    dm.set_views(all_views())
    assert [type(v).__name__ for v in dm.views] == [
        "TorsionAugment",
        "CoordNoise",
        "FragmentMaskView",
    ]
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, Batch) and batch.num_graphs == 8
    expected = BATCH_KEYS | {"coord_noise", "atom_mask", "batch", "ptr", "num_nodes"}
    assert set(batch.keys()) == expected
    assert batch.mol_id.shape == (8,) and len(batch.smiles) == 8
    assert batch.pos.dtype == torch.float32 and batch.atom_mask.dtype == torch.bool
    # Torsion augmentation ran before the noise: pos - noise is a rigid-bond copy of the
    # stored conformer (same bond lengths) that differs from it where a torsion exists.
    assert dm.records is not None
    moved = 0
    for i in range(batch.num_graphs):
        sample = batch.get_example(i)
        record = next(r for r in dm.records if r.mol_id == int(sample.mol_id))
        clean = (sample.pos - sample.coord_noise).double()
        original = torch.from_numpy(record.conformers[0]).double()
        src, dst = sample.edge_index
        bond = (clean[src] - clean[dst]).norm(dim=1)
        torch.testing.assert_close(
            bond, (original[src] - original[dst]).norm(dim=1), atol=1e-5, rtol=0
        )
        if len(record.torsion_atoms):
            moved += int(not torch.allclose(clean, original, atol=1e-4))  # float32 noise round trip
    assert moved > 0


def test_views_run_in_order_then_torsion_keys_go(dm: PretrainDataModule) -> None:
    log: list[int] = []
    dm.set_views([RecordingView(30, log), RecordingView(10, log), RecordingView(20, log)])
    sample = next(iter(dm.train_dataset))
    assert log == [10, 20, 30]
    assert "torsion_atoms" not in sample and "torsion_moving" not in sample
    log.clear()
    next(iter(dm.val_dataset))
    assert log == [10, 20, 30]


def test_validation_views_are_fixed_training_views_fresh(dm: PretrainDataModule) -> None:
    dm.set_views(all_views())

    def one_pass() -> list[torch.Tensor]:
        return [
            torch.cat([b.pos, b.coord_noise, b.atom_mask[:, None]], dim=1)
            for b in dm.val_dataloader()
        ]

    for a, b in zip(one_pass(), one_pass(), strict=True):
        assert torch.equal(a, b)
    state = torch.get_rng_state()
    list(dm.val_dataset)
    epoch_a = {int(d.mol_id): d.coord_noise for d in dm.train_dataset}
    epoch_b = {int(d.mol_id): d.coord_noise for d in dm.train_dataset}
    # Neither stream touches the caller's generator: views draw from their own seeded state.
    assert torch.equal(state, torch.get_rng_state())
    assert epoch_a.keys() == epoch_b.keys()
    assert not any(torch.equal(epoch_a[k], epoch_b[k]) for k in epoch_a)  # fresh every epoch


def test_validation_views_do_not_depend_on_workers(
    make_dm: Callable[..., PretrainDataModule],
) -> None:
    results = []
    for workers in (0, 1):
        module = make_dm(val_fraction=0.25, num_workers=workers)
        module.setup()
        module.set_views(all_views())
        results.append([b.pos.clone() for b in module.val_dataloader()])
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_a_conformer_is_drawn_per_access() -> None:
    options = ConformerOptions(num_conformers=3, seed=5, max_optimize_iters=100)
    records = [record_from_smiles(s, i, options) for i, s in enumerate(["CCCCO", "CCOCC"])]
    assert all(r.num_conformers > 1 for r in records)
    dataset = PretrainDataset(records, [0, 1])
    seen = set()
    for _ in range(40):
        pos = dataset[0].pos.numpy()
        matches = [k for k, c in enumerate(records[0].conformers) if np.array_equal(pos, c)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == set(range(records[0].num_conformers))


class PipelineModule(LightningModule):
    """The smallest module with ``pipeline_views()``: checks what its batches carry."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))
        self.seen: list[tuple[str, bool, bool]] = []

    def pipeline_views(self) -> list[View]:
        return [CoordNoise(0.1), TorsionAugment(2.0)]

    def _step(self, stage: str, batch: Batch) -> torch.Tensor:
        self.seen.append((stage, "coord_noise" in batch, "torsion_atoms" in batch))
        return (self.weight - batch.coord_noise.abs().mean()) ** 2

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        return self._step("train", batch)

    def validation_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        return self._step("val", batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_views_come_from_the_attached_module(
    make_dm: Callable[..., PretrainDataModule],
) -> None:
    module, data = PipelineModule(), make_dm(val_fraction=0.25)
    data.set_views([RecordingView(5, [])])  # ignored: the attached module's views win
    trainer = Trainer(
        fast_dev_run=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=data)
    assert [type(v).__name__ for v in data.views] == ["TorsionAugment", "CoordNoise"]
    assert {stage for stage, _, _ in module.seen} == {"train", "val"}
    assert all(noise and not torsion for _, noise, torsion in module.seen)
    assert data.hparams.num_molecules == N and data.hparams.batch_size == 8


def test_root_file_or_directory(
    dm: PretrainDataModule, make_dm: Callable[..., PretrainDataModule], tmp_path: Path
) -> None:
    assert dm.records is not None
    subset: list[MoleculeRecord] = list(dm.records)[:12]
    path = save_records(tmp_path / "mine.npz", subset)
    from_file = PretrainDataModule(root=str(path), val_fraction=0.25, batch_size=4)
    from_file.setup()
    assert from_file.stats()["molecules"] == 12 and from_file.stats()["read"] is None
    assert sorted(r.mol_id for r in from_file.records) == sorted(r.mol_id for r in subset)
    entry = make_dm()._embedded().directory  # a cache entry: records.npz + manifest.json
    from_dir = PretrainDataModule(root=str(entry), val_fraction=0.25)
    from_dir.setup()
    assert from_dir.stats()["read"] == N and len(from_dir.records) == len(dm.records)
    with pytest.raises(UserError, match=r"expected a `molssl prepare` directory"):
        PretrainDataModule(root=str(tmp_path / "absent.npz")).setup()


def test_argument_errors_and_no_validation(make_dm: Callable[..., PretrainDataModule]) -> None:
    for bad in ({"batch_size": 0}, {"val_fraction": 1.0}, {"num_conformers": 0}):
        with pytest.raises(ValueError):
            make_dm(**bad)
    module = make_dm(val_fraction=0.0)
    with pytest.raises(RuntimeError, match="setup"):
        module.train_dataloader()
    module.setup()
    assert module.val_dataloader() == [] and len(module.train_dataset) == len(module.records)


# --- a `molssl prepare` directory: tar shards + manifest.json, streamed ----------------------

#: Uneven shards of the first 38 records, one empty (all its molecules failed): 7 non-empty
#: shards, 3 of them held out at val_fraction=0.3.
SHARD_COUNTS = [7, 3, 0, 11, 1, 5, 9, 2]


def write_prepared(records: Sequence[MoleculeRecord], root: Path) -> list[list[int]]:
    """Shards of ``SHARD_COUNTS`` records and a manifest; returns each shard's mol_ids."""
    shards, ids, start = [], [], 0
    for index, count in enumerate(SHARD_COUNTS):
        part = list(records[start : start + count])
        shards.append(write_shard(root / f"shard-{index:06d}.tar", part, chunk_size=4).to_dict())
        ids.append([r.mol_id for r in part])
        start += count
    manifest = {
        "shards": shards,
        "ok": start,
        "failed": 2,
        "read": start + 2,
        "failures_by_reason": {"invalid_smiles": 2},
        "record_format_version": RECORD_FORMAT_VERSION,
    }
    write_json_atomic(root / "manifest.json", manifest)
    return ids


def rank_run(root: Path, rank: int, epochs: Sequence[int]) -> dict[str, Any]:
    """Rank ``rank`` of 2, 2 loader worker processes, through a trainer-like object."""
    data = PretrainDataModule(
        root=str(root), batch_size=3, num_workers=2, val_fraction=0.3, shuffle_buffer=6
    )
    data.setup("fit")
    result: dict[str, Any] = {"stats": data.stats(), "train": [], "batches": []}
    for epoch in epochs:
        data.trainer = SimpleNamespace(global_rank=rank, world_size=2, current_epoch=epoch)
        loader = data.train_dataloader()
        batches = list(loader)
        assert len(batches) == len(loader)
        result["batches"].append(len(batches))
        result["train"].append([int(i) for b in batches for i in b.mol_id])
    result["val"] = [int(i) for b in data.val_dataloader() for i in b.mol_id]
    return result


def test_prepared_directory_streams_by_rank_and_worker_with_shards_held_out(
    dm: PretrainDataModule, tmp_path: Path
) -> None:
    assert dm.records is not None
    shard_ids = write_prepared(dm.records, tmp_path)
    runs = [rank_run(tmp_path, rank, epochs=(0, 1)) for rank in (0, 1)]
    stats = runs[0]["stats"]
    assert stats["shards"] == 8 and stats["val_shards"] == math.ceil(0.3 * 7)
    assert (stats["molecules"], stats["read"], stats["failed"]) == (38, 40, 2)
    assert stats["failures_by_reason"] == {"invalid_smiles": 2}
    val = runs[0]["val"] + runs[1]["val"]
    # Validation: whole shards, each molecule once across the two ranks, never trained on.
    val_shards = [ids for ids in shard_ids if ids and set(ids) <= set(val)]
    assert sorted(val) == sorted(i for ids in val_shards for i in ids)
    assert len(val_shards) == stats["val_shards"] and stats["val"] == len(val)
    train_ids = {i for ids in shard_ids for i in ids} - set(val)
    for epoch in (0, 1):
        seen = Counter(runs[0]["train"][epoch] + runs[1]["train"][epoch])
        assert set(seen) == train_ids
        assert sum(seen.values()) - len(train_ids) <= 1  # padding: at most W - 1 repeats
    assert runs[0]["batches"] == runs[1]["batches"]  # no rank waits on the other
    assert runs[0]["train"][0] != runs[0]["train"][1]  # the trainer's epoch changes the order


def test_prepared_directory_trains_and_a_directory_without_manifest_fails(
    dm: PretrainDataModule, tmp_path: Path
) -> None:
    assert dm.records is not None
    write_prepared(dm.records, tmp_path / "prepared")
    module = PipelineModule()
    data = PretrainDataModule(root=str(tmp_path / "prepared"), batch_size=4, val_fraction=0.3)
    trainer = Trainer(
        fast_dev_run=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=data)
    assert {stage for stage, _, _ in module.seen} == {"train", "val"}
    assert data.records is None and data.stats()["molecules"] == 38
    # A URL root (file:// here; s3://, gs://, https:// with their fsspec package) streams too.
    remote = PretrainDataModule(root=f"file://{tmp_path / 'prepared'}", val_fraction=0.3)
    remote.setup()
    assert remote.stats() == data.stats()
    assert sorted(mol_ids(remote.train_dataset)) == sorted(mol_ids(data.train_dataset))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match=r"no manifest\.json"):
        PretrainDataModule(root=str(tmp_path / "empty")).setup()


def _stream_all(root: Path) -> list[int]:
    stream = ShardedStream(DiskShards.from_manifest(root), range(len(SHARD_COUNTS)), training=False)
    return mol_ids(stream)


def test_a_replaced_or_damaged_shard_is_an_error_naming_it(
    dm: PretrainDataModule, tmp_path: Path
) -> None:
    assert dm.records is not None
    shard_ids = write_prepared(dm.records, tmp_path)
    assert _stream_all(tmp_path) == [i for ids in shard_ids for i in ids]
    # Another valid shard copied over shard 0: found on its first chunk, by mol_id.
    shard0 = tmp_path / "shard-000000.tar"
    original = shard0.read_bytes()
    shard0.write_bytes((tmp_path / "shard-000001.tar").read_bytes())
    with pytest.raises(ManifestError, match=r"shard-000000\.tar holds mol_id \d+ \(record 0\)"):
        _stream_all(tmp_path)
    # The same molecules in other bytes (another chunking): found by the sha256 at its end.
    write_shard(shard0, list(dm.records[:7]), chunk_size=2)
    with pytest.raises(ManifestError, match=r"shard-000000\.tar has sha256 .* the manifest says"):
        _stream_all(tmp_path)
    # Fewer records than listed (its last molecules gone).
    write_shard(shard0, list(dm.records[:5]), chunk_size=4)
    with pytest.raises(ManifestError, match=r"shard-000000\.tar holds 5 records, .* says 7"):
        _stream_all(tmp_path)
    # Through loader worker processes, the user still gets the one line naming the shard.
    shard0.write_bytes((tmp_path / "shard-000001.tar").read_bytes())
    data = PretrainDataModule(root=str(tmp_path), batch_size=4, num_workers=2, val_fraction=0)
    data.setup("fit")
    with pytest.raises(ManifestError) as caught:
        list(data.train_dataloader())
    assert one_line(caught.value).startswith(f"{shard0} holds mol_id")
    shard0.write_bytes(original)
    assert _stream_all(tmp_path) == [i for ids in shard_ids for i in ids]

"""FinetuneDataModule: split checks, loaders, stats and train-only target statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import Crippen, Descriptors
from torch_geometric.data import Data

from molssl.chem.conformers import ConformerOptions, embed_conformers
from molssl.chem.features import mol_from_smiles, mol_to_data
from molssl.datamodules.embedded import Failure
from molssl.datamodules.finetune_base import (
    FinetuneDataModule,
    LoadedDataset,
    check_split,
)
from molssl.datamodules.splits import SplitIndices
from tests.conftest import read_nci_smiles

NUM_MOLECULES = 30


def _molecules() -> list[Data]:
    """Real NCI molecules with one conformer and labels computed by RDKit."""
    data = []
    for mol_id, smiles in enumerate(read_nci_smiles(NUM_MOLECULES)):
        mol = embed_conformers(mol_from_smiles(smiles), ConformerOptions(seed=1, optimize=False))
        sample = mol_to_data(mol, conf_id=0)
        heavy = Chem.MolFromSmiles(smiles)
        logp = Crippen.MolLogP(heavy)
        # Task 1 is missing for every third molecule; task 0 is a binary property.
        weight = Descriptors.MolWt(heavy) if mol_id % 3 else float("nan")
        sample.y = torch.tensor([[float(logp > 1.0), weight]], dtype=torch.float32)
        sample.mol_id = torch.tensor(mol_id)
        data.append(sample)
    return data


_DATA = _molecules()


class ToyModule(FinetuneDataModule):
    """Serves the fixed molecules above with a chosen task type."""

    def __init__(self, task_type: str = "regression", failures: int = 0, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.kind = task_type
        self.num_failures = failures
        self.loads = 0

    def _load(self) -> LoadedDataset:
        self.loads += 1
        failures = [
            Failure(
                mol_id=100 + i, line=101 + i, smiles="C1CC", reason="invalid_smiles", message="x"
            )
            for i in range(self.num_failures)
        ]
        return LoadedDataset(
            data=list(_DATA),
            task_names=["logp_gt_1", "mol_wt"],
            task_type=self.kind,
            read=len(_DATA) + len(failures),
            failures=failures,
            origin="toy",
            info={"units": "g/mol"},
        )


def test_loaded_dataset_checks_counts_and_type() -> None:
    with pytest.raises(ValueError, match="task_type"):
        LoadedDataset(data=[], task_names=["a"], task_type="ranking", read=0)
    with pytest.raises(ValueError, match="do not add up"):
        LoadedDataset(data=list(_DATA[:2]), task_names=["a"], task_type="regression", read=3)
    with pytest.raises(ValueError, match="task name"):
        LoadedDataset(data=[], task_names=[], task_type="regression", read=0)


def test_check_split_rejects_overlap_gaps_and_out_of_range() -> None:
    ok = check_split(SplitIndices([0, 1], [2], [3]), 4)
    assert [p.dtype for p in ok] == [np.int64] * 3
    with pytest.raises(ValueError, match="overlap"):
        check_split(SplitIndices([0, 1], [1], [2, 3]), 4)
    with pytest.raises(ValueError, match="covers 3 of 4"):
        check_split(SplitIndices([0, 1], [2], []), 4)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        check_split(SplitIndices([0, 1], [2], [4]), 4)


def test_properties_need_setup() -> None:
    module = ToyModule()
    with pytest.raises(RuntimeError, match="setup"):
        _ = module.task_type
    with pytest.raises(RuntimeError, match="setup"):
        module.train_dataloader()


def test_setup_loads_once_and_splits_every_molecule(capsys: pytest.CaptureFixture) -> None:
    module = ToyModule(failures=2, seed=3, batch_size=7)
    module.setup("fit")
    module.setup("test")
    assert module.loads == 1
    split = module.split_indices
    assert split is not None
    assert sorted(np.concatenate(split).tolist()) == list(range(NUM_MOLECULES))
    assert (len(split.train), len(split.val), len(split.test)) == (24, 3, 3)
    stats = module.stats()
    assert (stats["read"], stats["ok"], stats["failed"]) == (32, 30, 2)
    assert stats["failures_by_reason"] == {"invalid_smiles": 2}
    assert stats["failed_lines_by_reason"] == {"invalid_smiles": [101, 102]}
    assert (stats["train"], stats["val"], stats["test"], stats["units"]) == (24, 3, 3, "g/mol")
    assert module.task_names == ["logp_gt_1", "mol_wt"]
    assert "line 101, 102" in module.describe()


def test_seed_changes_random_split_and_same_seed_repeats() -> None:
    splits = []
    for seed in (0, 0, 1):
        module = ToyModule(seed=seed)
        module.setup()
        assert module.split_indices is not None
        splits.append(module.split_indices.train.tolist())
    assert splits[0] == splits[1]
    assert splits[0] != splits[2]


def test_unknown_split_name_is_an_error() -> None:
    module = ToyModule(split="scaffold")
    with pytest.raises(ValueError, match="unknown split 'scaffold'"):
        module.setup()


def test_loaders_batch_y_as_b_by_t_and_cover_each_split() -> None:
    module = ToyModule(batch_size=5, eval_batch_size=2)
    module.setup()
    assert module.split_indices is not None
    seen = []
    for batch in module.train_dataloader():
        assert batch.y.shape == (batch.num_graphs, 2)
        assert batch.pos.shape == (batch.num_nodes, 3)
        seen += batch.mol_id.tolist()
    expected = [int(_DATA[i].mol_id) for i in module.split_indices.train]
    assert sorted(seen) == sorted(expected)
    val_ids = [i for b in module.val_dataloader() for i in b.mol_id.tolist()]
    assert val_ids == [int(_DATA[i].mol_id) for i in module.split_indices.val]
    assert max(b.num_graphs for b in module.test_dataloader()) == 2


def test_regression_statistics_match_numpy_on_train_only() -> None:
    module = ToyModule(seed=5)
    module.setup()
    assert module.split_indices is not None
    train = np.stack([_DATA[i].y.numpy().reshape(-1) for i in module.split_indices.train])
    stats = module.target_statistics()
    np.testing.assert_allclose(stats["mean"].numpy(), np.nanmean(train, 0), rtol=1e-5)
    np.testing.assert_allclose(stats["std"].numpy(), np.nanstd(train, 0), rtol=1e-4)
    np.testing.assert_array_equal(stats["count"].numpy(), (~np.isnan(train)).sum(0))
    everything = np.stack([d.y.numpy().reshape(-1) for d in _DATA])
    assert not math.isclose(float(stats["mean"][1]), float(np.nanmean(everything[:, 1])))


def test_classification_statistics_positive_fraction() -> None:
    module = ToyModule(task_type="classification", seed=2)
    module.setup()
    assert module.split_indices is not None
    labels = np.array([float(_DATA[i].y[0, 0]) for i in module.split_indices.train])
    stats = module.target_statistics()
    assert set(stats) == {"positive_fraction", "count"}
    assert float(stats["positive_fraction"][0]) == pytest.approx(labels.mean())


class EnergyModule(FinetuneDataModule):
    """Frames of one molecule with a synthetic energy and forces."""

    def _load(self) -> LoadedDataset:
        base = _DATA[0]
        generator = torch.Generator().manual_seed(0)
        frames = []
        for i in range(10):
            frame = Data(z=base.z, pos=base.pos + 0.01 * i, num_nodes=base.num_nodes, smiles="")
            frame.energy = torch.tensor([[-100.0 - 3.0 * i]])
            frame.forces = torch.randn(base.num_nodes, 3, generator=generator)
            frame.mol_id = torch.tensor(i)
            frames.append(frame)
        return LoadedDataset(frames, ["energy"], "energy_forces", read=10, origin="frames")


def test_energy_statistics_per_atom_on_train_frames() -> None:
    module = EnergyModule(seed=0)
    module.setup()
    assert module.split_indices is not None
    train = [module.data[i] for i in module.split_indices.train]
    per_atom = np.array([float(d.energy) / d.num_nodes for d in train])
    forces = np.concatenate([d.forces.numpy().reshape(-1) for d in train])
    stats = module.target_statistics()
    assert float(stats["mean"]) == pytest.approx(per_atom.mean(), rel=1e-6)
    assert float(stats["std"]) == pytest.approx(per_atom.std(), rel=1e-5)
    assert float(stats["force_rms"]) == pytest.approx(np.sqrt((forces**2).mean()), rel=1e-5)


def test_transform_applies_to_a_copy() -> None:
    def shift(data: Data) -> Data:
        data.pos = data.pos + 1.0
        return data

    module = ToyModule(transform=shift)
    module.setup()
    assert module.train_dataset is not None
    index = int(module.train_dataset.indices[0])
    before = module.data[index].pos.clone()
    sample = module.train_dataset[0]
    torch.testing.assert_close(sample.pos, before + 1.0)
    torch.testing.assert_close(module.data[index].pos, before)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        ToyModule(batch_size=0)
    with pytest.raises(ValueError, match="split_fractions"):
        ToyModule(split_fractions=(0.5, 0.1, 0.1))


def test_empty_split_is_an_error_naming_it() -> None:
    module = ToyModule(split_fractions=(0.9, 0.0, 0.1))
    with pytest.raises(ValueError, match="leaves val empty"):
        module.setup()

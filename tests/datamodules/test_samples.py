"""The per-sample fast path: the same Data as the plain path, for the same generator state.

The reference is what the pipeline did before the NumPy path existed: ``Data(**keys)`` with
``torch.tensor`` copies of the record's arrays, then every view's ``__call__`` on the
``Data``, then the unbatchable keys deleted. The fast path draws the same numbers from
torch's generator in the same order, so the samples are compared exactly, key by key.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from molssl.chem.conformers import ConformerOptions
from molssl.chem.errors import MoleculeError
from molssl.datamodules.records import SPD_UNREACHABLE, MoleculeRecord, pack_records
from molssl.datamodules.records import record_from_smiles as make_record
from molssl.datamodules.samples import record_arrays, viewed_sample
from molssl.datamodules.stream import DROPPED_KEYS, view_sample
from molssl.objectives.atom_mask import AtomMask
from molssl.objectives.base import View
from molssl.objectives.denoise import CoordDenoise
from molssl.objectives.fragment_mask import FragmentMask
from molssl.objectives.views import CoordNoise, RemoveHydrogens, TorsionAugment
from tests.conftest import read_nci_smiles


@functools.cache
def nci_records() -> list[MoleculeRecord]:
    """Twenty-odd NCI molecules and two salts, two conformers each, packed and sliced back,
    as the stream reads them."""
    records = []
    salts = ["CC(=O)[O-].[Na+]", "CCCC[NH3+].[Cl-]"]
    for index, smiles in enumerate([*read_nci_smiles(30), *salts]):
        try:
            options = ConformerOptions(num_conformers=2, seed=index, max_optimize_iters=50)
            records.append(make_record(smiles, index, options))
        except MoleculeError:
            continue
    assert len(records) >= 20
    return list(pack_records(records))


def reference_to_data(record: MoleculeRecord, conformer: int = 0) -> Data:
    """``to_data`` as first written: a ``torch.tensor`` copy per key into ``Data(**keys)``."""

    def tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor(np.ascontiguousarray(array), dtype=dtype)

    spd = torch.from_numpy(record.spd.astype(np.int64).reshape(-1))
    spd[spd == SPD_UNREACHABLE] = -1
    return Data(
        z=tensor(record.z, torch.long),
        x=tensor(record.x, torch.long),
        edge_index=tensor(record.edge_index, torch.long),
        edge_attr=tensor(record.edge_attr, torch.long),
        pos=tensor(record.conformers[conformer], torch.float32),
        fragment=tensor(record.fragment, torch.long),
        torsion_atoms=tensor(record.torsion_atoms, torch.long),
        torsion_moving=tensor(record.torsion_moving, torch.bool),
        spd=spd,
        smiles=record.smiles,
        source_id=record.source_id,
        mol_id=torch.tensor(record.mol_id, dtype=torch.long),
        num_nodes=record.num_atoms,
    )


def reference_sample(record: MoleculeRecord, views: list[View]) -> Data:
    conformer = 0
    if record.num_conformers > 1:
        conformer = int(torch.randint(record.num_conformers, ()))
    data = reference_to_data(record, conformer)
    for view in views:
        data = view(data)
    for key in DROPPED_KEYS:
        if key in data:
            del data[key]
    return data


def assert_same_data(actual: Data, expected: Data) -> None:
    assert type(actual) is type(expected)
    assert list(actual._store._mapping) == list(expected._store._mapping)
    for key, value in expected._store._mapping.items():
        other = actual[key]
        if isinstance(value, torch.Tensor):
            assert isinstance(other, torch.Tensor), key
            assert (other.dtype, other.shape) == (value.dtype, value.shape), key
            assert torch.equal(other, value), key
        else:
            assert type(other) is type(value) and other == value, key


def unicorn_views() -> list[View]:
    return [TorsionAugment(2.0, "deg"), *CoordDenoise(sigma=0.04).views(), *FragmentMask().views()]


def test_to_data_is_the_reference_and_owns_its_memory() -> None:
    for record in nci_records():
        for conformer in range(record.num_conformers):
            data = record.to_data(conformer)
            assert_same_data(data, reference_to_data(record, conformer))
        before = {
            key: np.copy(value) for key, value in vars(record).items() if hasattr(value, "shape")
        }
        for value in data._store._mapping.values():
            if isinstance(value, torch.Tensor) and value.numel():
                value.fill_(True if value.dtype == torch.bool else 7)
        for key, value in before.items():
            np.testing.assert_array_equal(getattr(record, key), value, err_msg=key)
    with pytest.raises(IndexError, match="out of range"):
        nci_records()[0].to_data(2)


def test_spd_conversion_follows_the_records_format() -> None:
    record = nci_records()[0]
    spd = record_arrays(record)["spd"]
    assert spd.dtype == np.int64
    stored = record.spd.reshape(-1)
    np.testing.assert_array_equal(spd, np.where(stored == SPD_UNREACHABLE, -1, stored))
    salts = [r for r in nci_records() if (r.spd == SPD_UNREACHABLE).any()]
    assert len(salts) == 2  # their ions are unreachable from each other


class NudgeView(View):
    """A user view with no NumPy form, between the 3D views and the mask."""

    order = 25

    def __call__(self, data: Data) -> Data:
        data.pos = data.pos + torch.rand(1)
        return data


class CenteredNoise(CoordNoise):
    """Overrides ``__call__`` only: the pipeline must call it on the Data."""

    calls = 0

    def __call__(self, data: Data) -> Data:
        CenteredNoise.calls += 1
        out = super().__call__(data)
        out.pos = out.pos - out.pos.mean(dim=0)
        return out


PIPELINES = {
    "unicorn": unicorn_views,
    "no views": list,
    "atom mask (Data path for the mask)": lambda: [
        TorsionAugment(2.0, "deg"),
        CoordNoise(0.04),
        *AtomMask().views(),
    ],
    "user view in the middle": lambda: [*unicorn_views(), NudgeView()],
    "heavy atoms (MoleBLEND)": lambda: [RemoveHydrogens(), CoordNoise(0.2)],
    "heavy atoms, then UniCorn's views": lambda: [RemoveHydrogens(), *unicorn_views()],
    "subclass overriding __call__": lambda: [
        TorsionAugment(5.0, "deg"),
        CenteredNoise(0.1),
        *FragmentMask(mask_ratio=0.5).views(),
    ],
}


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_viewed_sample_is_the_reference_for_the_same_generator_state(pipeline: str) -> None:
    from molssl.datamodules.stream import ordered_views

    views = ordered_views(PIPELINES[pipeline]())
    CenteredNoise.calls = 0
    records = nci_records()
    torch.manual_seed(11)
    expected = [reference_sample(record, views) for record in records]
    state_after = torch.get_rng_state()
    calls_reference = CenteredNoise.calls
    torch.manual_seed(11)
    actual = [view_sample(record, views) for record in records]
    assert torch.equal(torch.get_rng_state(), state_after)  # same number of draws
    assert CenteredNoise.calls == 2 * calls_reference
    for got, want in zip(actual, expected, strict=True):
        assert_same_data(got, want)
    if pipeline == "unicorn":
        assert {"coord_noise", "atom_mask"} <= set(actual[0].keys())
    if pipeline.startswith("heavy atoms"):
        for got, record in zip(actual, records, strict=True):
            assert got.num_nodes == int((record.z > 1).sum()) == got.coord_noise.size(0)


def test_fast_path_leaves_the_record_unchanged_and_copies_once() -> None:
    record = nci_records()[3]
    before = {key: np.copy(value) for key, value in vars(record).items() if hasattr(value, "shape")}
    data = viewed_sample(record, [])
    data.pos.add_(1.0)
    data.x.add_(1)
    for key, value in before.items():
        np.testing.assert_array_equal(getattr(record, key), value, err_msg=key)
    torch.manual_seed(0)
    viewed = viewed_sample(record, ordered(unicorn_views()), drop=DROPPED_KEYS)
    assert "torsion_moving" not in viewed and "torsion_atoms" not in viewed
    for key, value in before.items():
        np.testing.assert_array_equal(getattr(record, key), value, err_msg=key)


@pytest.mark.parametrize("pipeline", ["unicorn", "no views"])
def test_private_records_give_the_same_samples_without_copying(pipeline: str) -> None:
    from molssl.datamodules.stream import _owned

    views = ordered(PIPELINES[pipeline]())
    records = nci_records()[:6]
    torch.manual_seed(5)
    expected = [view_sample(record, views) for record in records]
    torch.manual_seed(5)
    owned = [_owned(record) for record in records]
    actual = [view_sample(record, views, private=True) for record in owned]
    for got, want in zip(actual, expected, strict=True):
        assert_same_data(got, want)
    # The sample is built on the private record's own arrays (the copy made once, by _owned).
    assert np.shares_memory(actual[0].x.numpy(), owned[0].x)


def ordered(views: list[View]) -> list[View]:
    return sorted(views, key=lambda view: view.order)


def test_errors_match_the_data_path() -> None:
    record = nci_records()[0]
    two_noises = [CoordNoise(0.04), CoordNoise(0.04)]
    with pytest.raises(ValueError, match="two coordinate-noise views"):
        viewed_sample(record, two_noises)
    with pytest.raises(ValueError, match="two coordinate-noise views"):
        reference_sample(record, two_noises)
    two_masks = [*FragmentMask().views(), *FragmentMask().views()]
    with pytest.raises(ValueError, match="two masking views"):
        viewed_sample(record, two_masks)
    with pytest.raises(ValueError, match="two masking views"):
        reference_sample(record, two_masks)

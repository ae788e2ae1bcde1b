"""Molecule records: parity with molssl.chem on real molecules, exact .npz round trip."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from rdkit import Chem

from molssl.chem.conformers import ConformerOptions, conformer_positions, embed_conformers
from molssl.chem.errors import (
    InvalidSmilesError,
    MoleculeError,
    NoHeavyAtomError,
    UnsupportedElementError,
)
from molssl.chem.features import mol_from_smiles, mol_to_data
from molssl.chem.fragments import brics_fragment_labels
from molssl.chem.graph import AddGraphRelations, shortest_path_matrix
from molssl.chem.torsions import rotatable_torsions, torsion_moving_masks
from molssl.datamodules.records import (
    RECORD_FORMAT_VERSION,
    SPD_UNREACHABLE,
    MoleculeRecord,
    PackedRecords,
    RecordsFormatError,
    load_records,
    pack_records,
    record_from_mol,
    record_from_smiles,
    records_npz_bytes,
    save_records,
    spd_to_uint8,
)
from tests.conftest import read_nci_smiles

ARRAY_FIELDS = (
    "z",
    "x",
    "edge_index",
    "edge_attr",
    "conformers",
    "fragment",
    "torsion_atoms",
    "torsion_moving",
    "spd",
)
OPTIONS = ConformerOptions(num_conformers=2, seed=3, max_optimize_iters=200)


def assert_same_record(a: MoleculeRecord, b: MoleculeRecord) -> None:
    assert (a.smiles, a.mol_id, a.source_id) == (b.smiles, b.mol_id, b.source_id)
    for key in ARRAY_FIELDS:
        left, right = getattr(a, key), getattr(b, key)
        assert left.dtype == right.dtype, key
        assert left.shape == right.shape, key
        np.testing.assert_array_equal(left, right, err_msg=key)


@pytest.fixture(scope="module")
def nci_records() -> list[MoleculeRecord]:
    """Records of NCI molecules (ids as their line index), plus rigid benzene (no torsion)."""
    records = []
    for mol_id, smiles in enumerate(read_nci_smiles(12)):
        try:
            record = record_from_smiles(smiles, mol_id, OPTIONS)
        except MoleculeError:
            continue
        record.source_id = f"NCI-{mol_id}" if mol_id % 2 else ""
        records.append(record)
    salt = record_from_smiles("CCCC[N+](C)(C)C.[Cl-]", 999, OPTIONS)
    salt.source_id = "salt with an unreachable pair, and a long name"
    records.append(salt)
    records.append(record_from_smiles("c1ccccc1", 1000, OPTIONS))
    return records


def test_record_matches_molssl_chem(nci_records: list[MoleculeRecord]) -> None:
    assert len(nci_records) >= 10
    for record in nci_records[:6]:
        smiles = read_nci_smiles(record.mol_id + 1)[record.mol_id]
        mol = mol_from_smiles(smiles)
        embedded = embed_conformers(mol, OPTIONS)
        graph = mol_to_data(mol)
        torsions = rotatable_torsions(mol)
        assert record.smiles == graph.smiles
        np.testing.assert_array_equal(record.z, graph.z.numpy())
        np.testing.assert_array_equal(record.x, graph.x.numpy())
        np.testing.assert_array_equal(record.edge_index, graph.edge_index.numpy())
        np.testing.assert_array_equal(record.edge_attr, graph.edge_attr.numpy())
        np.testing.assert_array_equal(
            record.conformers, conformer_positions(embedded).astype(np.float32)
        )
        np.testing.assert_array_equal(record.fragment, brics_fragment_labels(mol))
        np.testing.assert_array_equal(record.torsion_atoms, torsions)
        np.testing.assert_array_equal(record.torsion_moving, torsion_moving_masks(mol, torsions))
        spd = Chem.GetDistanceMatrix(mol)  # RDKit's own BFS, on the same atom order
        np.testing.assert_array_equal(record.spd, np.where(spd > 1e6, SPD_UNREACHABLE, spd))
        assert record.spd.dtype == np.uint8
        assert record.conformers.dtype == np.float32
        assert record.num_conformers == embedded.GetNumConformers()


def test_features_use_rdkit_aromaticity_not_mmff_typing() -> None:
    # MMFF94's set-up re-types this 2-iminothiazoline ring as non-aromatic in place; the
    # record must keep RDKit's perception, the one every other molssl featurization uses.
    smiles = "[O-][N+](=O)C1=CNC(=N)S1"
    record = record_from_smiles(smiles, 0, OPTIONS)
    graph = mol_to_data(mol_from_smiles(smiles))
    assert record.smiles == graph.smiles == "N=c1[nH]cc([N+](=O)[O-])s1"
    np.testing.assert_array_equal(record.x, graph.x.numpy())
    np.testing.assert_array_equal(record.edge_attr, graph.edge_attr.numpy())


def test_to_data_shapes_dtypes_and_independence(nci_records: list[MoleculeRecord]) -> None:
    record = max(nci_records, key=lambda r: len(r.torsion_atoms))
    assert len(record.torsion_atoms) > 0 and record.num_conformers == 2
    n, e, t = record.num_atoms, record.edge_index.shape[1], len(record.torsion_atoms)
    data = record.to_data(1)
    expected = {
        "z": ((n,), torch.long),
        "x": ((n, 7), torch.long),
        "edge_index": ((2, e), torch.long),
        "edge_attr": ((e, 4), torch.long),
        "pos": ((n, 3), torch.float32),
        "fragment": ((n,), torch.long),
        "torsion_atoms": ((t, 4), torch.long),
        "torsion_moving": ((t, n), torch.bool),
        "mol_id": ((), torch.long),
        "spd": ((n * n,), torch.long),
    }
    for key, (shape, dtype) in expected.items():
        assert tuple(data[key].shape) == shape, key
        assert data[key].dtype == dtype, key
    assert data.num_nodes == n and data.smiles == record.smiles
    assert data.source_id == record.source_id
    assert int(data.mol_id) == record.mol_id
    np.testing.assert_array_equal(data.pos.numpy(), record.conformers[1])
    data.pos += 1.0
    data.z[:] = 0
    assert not np.array_equal(data.pos.numpy(), record.conformers[1])
    assert record.z.min() > 0
    with pytest.raises(IndexError, match="conformer 2 out of range"):
        record.to_data(2)


def test_record_errors_are_typed() -> None:
    with pytest.raises(InvalidSmilesError):
        record_from_smiles("C1CC(", 0)
    with pytest.raises(NoHeavyAtomError):
        record_from_smiles("[H][H]", 1)
    with pytest.raises(UnsupportedElementError):
        record_from_smiles("[Xe]", 2)
    with pytest.raises(MoleculeError) as info:
        record_from_mol(Chem.AddHs(Chem.MolFromSmiles("CCO")), 3)
    assert info.value.reason == "no_conformer"


def test_record_rejects_inconsistent_shapes(nci_records: list[MoleculeRecord]) -> None:
    good = nci_records[0]
    with pytest.raises(ValueError, match="fragment has shape"):
        MoleculeRecord(
            **{
                **{k: getattr(good, k) for k in ("smiles", "mol_id", *ARRAY_FIELDS)},
                "fragment": good.fragment[:-1],
            }
        )


def test_npz_round_trip_is_exact(nci_records: list[MoleculeRecord], tmp_path: Path) -> None:
    path = save_records(tmp_path / "records.npz", nci_records)
    assert [p.name for p in tmp_path.iterdir()] == ["records.npz"]  # no temp file left
    loaded = load_records(path)
    assert isinstance(loaded, PackedRecords) and len(loaded) == len(nci_records)
    for original, copy in zip(nci_records, loaded, strict=True):
        assert_same_record(original, copy)
    assert_same_record(loaded[-1], nci_records[-1])
    assert len(loaded[-1].torsion_atoms) == 0  # benzene: no rotatable bond survives the trip
    np.testing.assert_array_equal(loaded.mol_ids, [r.mol_id for r in nci_records])
    with np.load(path, allow_pickle=False) as raw:
        assert raw["smiles"].dtype.kind == "U"
        assert int(raw["format_version"]) == RECORD_FORMAT_VERSION
    # Saving what was loaded gives the same file content.
    again = load_records(save_records(tmp_path / "again.npz", loaded))
    for a, b in zip(loaded, again, strict=True):
        assert_same_record(a, b)


def test_packed_indexing(nci_records: list[MoleculeRecord]) -> None:
    packed = pack_records(nci_records)
    assert_same_record(packed[-2], nci_records[-2])
    assert [r.mol_id for r in packed[1:4]] == [r.mol_id for r in nci_records[1:4]]
    with pytest.raises(IndexError):
        packed[len(nci_records)]


def test_empty_round_trip(tmp_path: Path) -> None:
    loaded = load_records(save_records(tmp_path / "empty.npz", []))
    assert len(loaded) == 0 and list(loaded) == []


def save_empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def test_load_rejects_foreign_files(nci_records: list[MoleculeRecord], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_records(tmp_path / "missing.npz")
    text = tmp_path / "text.npz"
    text.write_text("not a zip file")
    with pytest.raises(RecordsFormatError, match="starts with the text 'not a zip file'"):
        load_records(text)
    noise = tmp_path / "noise.npz"
    noise.write_bytes(bytes(range(7, 250)) * 3)  # random bytes: not "pickled data"
    with pytest.raises(RecordsFormatError, match=r"starts with the bytes b'\\x07") as caught:
        load_records(noise)
    assert "pickle" not in str(caught.value)
    with pytest.raises(RecordsFormatError, match="the file is empty"):
        load_records(save_empty(tmp_path / "empty.npz"))
    other = tmp_path / "other.npz"
    np.savez(other, a=np.arange(3))
    with pytest.raises(RecordsFormatError, match="missing"):
        load_records(other)
    arrays = dict(pack_records(nci_records[:2]).arrays)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, **{**arrays, "smiles": np.asarray(["a", None], dtype=object)})
    with pytest.raises(RecordsFormatError):
        load_records(pickled)
    old = tmp_path / "old.npz"
    np.savez(old, **{**arrays, "format_version": np.asarray(RECORD_FORMAT_VERSION + 1)})
    with pytest.raises(RecordsFormatError, match="prepare the data again"):
        load_records(old)
    broken = tmp_path / "broken.npz"
    np.savez(broken, **{**arrays, "atom_ptr": arrays["atom_ptr"][:-1]})
    with pytest.raises(RecordsFormatError, match="atom_ptr"):
        load_records(broken)


def test_spd_is_the_graph_relations_spd(nci_records: list[MoleculeRecord]) -> None:
    salt = next(r for r in nci_records if r.mol_id == 999)
    assert (salt.spd == SPD_UNREACHABLE).any()
    for record in nci_records:
        data = record.to_data()
        expected = AddGraphRelations(max_hops=1)(record.to_data()).spd
        torch.testing.assert_close(data.spd, expected, rtol=0, atol=0)
    assert int(salt.to_data().spd.min()) == -1


def test_spd_computed_when_not_given(nci_records: list[MoleculeRecord]) -> None:
    record = nci_records[3]
    rebuilt = MoleculeRecord(**{k: getattr(record, k) for k in ("smiles", "mol_id", *ARRAY_FIELDS)})
    np.testing.assert_array_equal(rebuilt.spd, record.spd)
    with pytest.raises(ValueError, match="spd must be uint8"):
        MoleculeRecord(
            **{
                **{k: getattr(record, k) for k in ("smiles", "mol_id", *ARRAY_FIELDS)},
                "spd": record.spd.astype(np.int64),
            }
        )


def test_path_longer_than_a_byte_is_a_typed_failure() -> None:
    # A 300-atom chain: its ends are 299 bonds apart, more than uint8 can hold.
    n = 300
    pairs = np.stack([np.arange(n - 1), np.arange(1, n)])
    spd = shortest_path_matrix(np.concatenate([pairs, pairs[::-1]], axis=1), n)
    with pytest.raises(MoleculeError) as info:
        spd_to_uint8(spd)
    assert info.value.reason == "too_many_atoms"
    np.testing.assert_array_equal(spd_to_uint8(spd[:200, :200]), spd[:200, :200])


def test_npz_bytes_are_reproducible(nci_records: list[MoleculeRecord], tmp_path: Path) -> None:
    first = records_npz_bytes(nci_records)
    path = save_records(tmp_path / "records.npz", nci_records)
    assert path.read_bytes() == first
    assert records_npz_bytes(load_records(path)) == first
    with zipfile.ZipFile(path) as archive:
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    with np.load(path, allow_pickle=False) as raw:
        assert raw["source_id"].dtype.kind == "U" and raw["spd"].dtype == np.uint8


def test_concatenate_equals_packing_everything(nci_records: list[MoleculeRecord]) -> None:
    parts = [pack_records(nci_records[:3]), pack_records([]), pack_records(nci_records[3:])]
    joined = PackedRecords.concatenate(parts)
    whole = pack_records(nci_records)
    assert joined.arrays.keys() == whole.arrays.keys()
    for key, value in whole.arrays.items():
        np.testing.assert_array_equal(joined.arrays[key], value, err_msg=key)
        assert joined.arrays[key].dtype == value.dtype, key
    assert list(joined.source_ids) == [r.source_id for r in nci_records]


def test_load_rejects_inconsistent_spd(nci_records: list[MoleculeRecord], tmp_path: Path) -> None:
    arrays = dict(pack_records(nci_records[:2]).arrays)
    broken = tmp_path / "broken_spd.npz"
    np.savez(broken, **{**arrays, "spd": arrays["spd"][:-1]})
    with pytest.raises(RecordsFormatError, match="spd"):
        load_records(broken)
    wide = tmp_path / "wide_spd.npz"
    np.savez(wide, **{**arrays, "spd": arrays["spd"].astype(np.int16)})
    with pytest.raises(RecordsFormatError, match="spd"):
        load_records(wide)


@pytest.mark.parametrize(
    ("key", "change"),
    [
        ("x", lambda a: a[:, :6]),
        ("edge_index", lambda a: a[:, :-1]),
        ("edge_attr", lambda a: a[:, :3]),
        ("fragment", lambda a: a[:-1]),
        ("torsion_atoms", lambda a: a[:, :3]),
        ("num_conformers", lambda a: np.zeros_like(a)),
    ],
)
def test_packed_shapes_are_checked_once_for_every_record(
    nci_records: list[MoleculeRecord], key: str, change: Any
) -> None:
    # Records sliced out of a PackedRecords skip the per-record shape check, so the packed
    # arrays must not load when any record would have failed it.
    arrays = dict(pack_records(nci_records[:3]).arrays)
    with pytest.raises(RecordsFormatError):
        PackedRecords({**arrays, key: change(arrays[key])})

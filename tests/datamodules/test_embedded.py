"""Embedded default: deterministic preparation, cache hits, failures accounted, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem

from molssl.chem.conformers import ConformerOptions
from molssl.datamodules import embedded
from molssl.datamodules.embedded import (
    NCI_SMILES_PATH,
    PreparedDataset,
    cache_key,
    default_cache_dir,
    embedded_default,
    molecule_seed,
    prepare_records,
    prepare_smiles_file,
    read_smiles_file,
)
from molssl.datamodules.records import MoleculeRecord, record_from_smiles
from molssl.errors import UserError
from tests.conftest import read_nci_smiles
from tests.datamodules.test_records import assert_same_record

N = 40
# Short optimisation: these tests check bookkeeping, not geometry quality.
FAST = ConformerOptions(max_optimize_iters=100)


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    cache = tmp_path_factory.mktemp("cache_serial")
    return embedded_default(N, FAST, cache_dir=cache, workers=1, progress=False)


def test_embedded_default_is_the_nci_file(serial: PreparedDataset) -> None:
    manifest = serial.manifest
    assert not serial.from_cache
    assert manifest["read"] == N
    assert manifest["ok"] + manifest["failed"] == manifest["read"]
    assert manifest["ok"] == len(serial.records) > 0.9 * N
    assert sum(manifest["failures_by_reason"].values()) == manifest["failed"]
    on_disk = json.loads((serial.directory / "manifest.json").read_text())
    assert on_disk == manifest
    source = read_nci_smiles(N)
    for record in serial.records:
        # A record's id is its line in the file, and its molecule is that line's molecule.
        expected = Chem.MolToSmiles(Chem.MolFromSmiles(source[record.mol_id]))
        assert record.smiles == expected
    for failure in manifest["failures"]:
        assert failure["line"] == failure["mol_id"] + 1
        assert failure["smiles"] == source[failure["mol_id"]]
    ids = set(serial.records.mol_ids.tolist()) | {f["mol_id"] for f in manifest["failures"]}
    assert ids == set(range(N))


def test_worker_count_does_not_change_the_data(serial: PreparedDataset, tmp_path: Path) -> None:
    parallel = embedded_default(N, FAST, cache_dir=tmp_path, workers=2, progress=False)
    assert not parallel.from_cache and parallel.manifest["workers"] == 2
    assert parallel.directory.name == serial.directory.name  # same key, other cache root
    assert len(parallel.records) == len(serial.records)
    for a, b in zip(serial.records, parallel.records, strict=True):
        assert_same_record(a, b)
    assert parallel.manifest["failures"] == serial.manifest["failures"]


def test_second_call_loads_the_cache(
    serial: PreparedDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_preparation(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(embedded, "prepare_records", no_preparation)
    again = embedded_default(N, FAST, cache_dir=serial.directory.parents[1], progress=False)
    assert again.from_cache and again.directory == serial.directory
    assert again.manifest == serial.manifest
    for a, b in zip(serial.records, again.records, strict=True):
        assert_same_record(a, b)
    # Different settings are a different entry: preparing them is required.
    with pytest.raises(AssertionError, match="cache was not used"):
        embedded_default(N, FAST, cache_dir=serial.directory.parents[1] / "x", progress=False)
    other = ConformerOptions(num_conformers=2, max_optimize_iters=100)
    assert cache_key(NCI_SMILES_PATH, N, other) != cache_key(NCI_SMILES_PATH, N, FAST)
    assert cache_key(NCI_SMILES_PATH, N + 1, FAST) != cache_key(NCI_SMILES_PATH, N, FAST)


def test_cache_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MOLSSL_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("MOLSSL_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "molssl"


def test_molecule_seed_depends_on_seed_and_id_only() -> None:
    assert molecule_seed(0, 5) == molecule_seed(0, 5)
    seeds = {molecule_seed(seed, mol_id) for seed in range(3) for mol_id in range(50)}
    assert len(seeds) == 150
    assert all(0 < s < 2**31 for s in seeds)


BAD_FILE = [
    "CCO ethanol",
    "C1CC( broken_ring",
    "",
    "[H][H] hydrogen",
    "c1ccccc1 benzene",
    "[Xe] xenon",
    "CC(=O)Nc1ccc(O)cc1\tparacetamol",
    "not_a_smiles",
]


def test_failures_are_counted_and_ids_never_shift(tmp_path: Path) -> None:
    source = tmp_path / "mixed.smi"
    source.write_text("\n".join(BAD_FILE) + "\n")
    prepared = prepare_smiles_file(source, cache_dir=tmp_path / "cache", progress=False)
    manifest = prepared.manifest
    assert manifest["read"] == len(BAD_FILE)
    assert manifest["ok"] + manifest["failed"] == manifest["read"]
    assert prepared.records.mol_ids.tolist() == [0, 4, 6]
    assert list(prepared.records.smiles) == ["CCO", "c1ccccc1", "CC(=O)Nc1ccc(O)cc1"]
    by_line = {f["line"]: f["reason"] for f in manifest["failures"]}
    assert by_line == {
        2: "invalid_smiles",
        3: "empty_input",
        4: "no_heavy_atom",
        6: "unsupported_element",
        8: "invalid_smiles",
    }
    assert manifest["failures_by_reason"] == {
        "invalid_smiles": 2,
        "empty_input": 1,
        "no_heavy_atom": 1,
        "unsupported_element": 1,
    }
    assert all(f["message"] for f in manifest["failures"])


def test_prepare_records_matches_record_from_smiles() -> None:
    smiles = ["CCO", "C1CC(", "c1ccncc1CC(=O)O"]
    prepared = prepare_records(smiles, FAST)
    assert prepared.read == 3 and [f.mol_id for f in prepared.failures] == [1]
    seeded = ConformerOptions(max_optimize_iters=100, seed=molecule_seed(FAST.seed, 2))
    expected: MoleculeRecord = record_from_smiles(smiles[2], 2, seeded)
    assert_same_record(prepared.records[1], expected)


def test_read_smiles_file_keeps_line_positions(tmp_path: Path) -> None:
    source = tmp_path / "lines.smi"
    source.write_text("CCO\tname one\n\n  \nc1ccccc1 x\n")
    assert read_smiles_file(source) == ["CCO", "", "", "c1ccccc1"]
    assert read_smiles_file(source, 2) == ["CCO", ""]
    assert read_smiles_file(NCI_SMILES_PATH, 5) == read_nci_smiles(5)


def test_interrupted_preparation_leaves_no_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "small.smi"
    source.write_text("CCO\nCCN\n")

    def interrupted(path: Path, records: object) -> Path:
        Path(path).write_bytes(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(embedded, "save_records", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_smiles_file(source, cache_dir=tmp_path / "cache", progress=False)
    prepared_root = tmp_path / "cache" / "prepared"
    assert list(prepared_root.iterdir()) == []
    monkeypatch.undo()
    prepared = prepare_smiles_file(source, cache_dir=tmp_path / "cache", progress=False)
    assert not prepared.from_cache and len(prepared.records) == 2
    assert [p.name for p in prepared_root.iterdir()] == [prepared.directory.name]


def test_damaged_entry_is_prepared_again(tmp_path: Path) -> None:
    source = tmp_path / "small.smi"
    source.write_text("CCO\nCCN\n")
    first = prepare_smiles_file(source, cache_dir=tmp_path, progress=False)
    (first.directory / "records.npz").write_bytes(b"damaged")
    second = prepare_smiles_file(source, cache_dir=tmp_path, progress=False)
    assert not second.from_cache and len(second.records) == 2
    third = prepare_smiles_file(source, cache_dir=tmp_path, progress=False)
    assert third.from_cache
    np.testing.assert_array_equal(third.records.arrays["z"], first.records.arrays["z"])


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="SMILES source not found"):
        prepare_smiles_file(tmp_path / "absent.smi", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="n must be"):
        embedded_default(0, cache_dir=tmp_path)


def test_cache_key_follows_the_chemistry_code(monkeypatch, tmp_path) -> None:
    """A change to the code that prepares records must miss the cache."""
    from molssl.chem.conformers import ConformerOptions
    from molssl.datamodules import embedded

    source = tmp_path / "mols.smi"
    source.write_text("CCO\n")
    before = embedded.cache_key(source, 1, ConformerOptions())
    monkeypatch.setattr(embedded, "chemistry_code_sha256", lambda: "edited")
    assert embedded.cache_key(source, 1, ConformerOptions()) != before

"""prepare_dataset: accounting of every entry, determinism, resumption, refusal of mixed runs."""

from __future__ import annotations

import json
import multiprocessing
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from molssl.chem.conformers import ConformerOptions
from molssl.datamodules import prepare as prepare_module
from molssl.datamodules.embedded import molecule_seed
from molssl.datamodules.prepare import PrepareError, prepare_dataset, sidecar_file_name
from molssl.datamodules.records import MoleculeRecord, record_from_smiles
from molssl.datamodules.shards import (
    MANIFEST_FILE,
    PackedRecords,
    dataset_shards,
    read_shard,
    verify_shard,
)
from molssl.datamodules.sources import SourceError
from tests.conftest import NCI_SMILES
from tests.datamodules.sources.helpers import embedded_nci, write_sdf
from tests.datamodules.test_records import assert_same_record

BAD_LINES = "C1CC(\tbroken\n\n[Xe]\txenon\nCC(=O)O\tacetic\n"


def nci_lines(start: int, stop: int) -> str:
    with open(NCI_SMILES) as handle:
        return "".join(handle.readlines()[start:stop])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A .smi with bad lines, a .csv with a named SMILES column, and a 3D .sdf, in that order."""
    root = tmp_path_factory.mktemp("inputs")
    smi = root / "nci.smi"
    smi.write_text(nci_lines(0, 9) + BAD_LINES)
    rows = [line.split() for line in nci_lines(40, 45).splitlines()]
    csv = root / "table.csv"
    csv.write_text("id,SMILES\n" + "".join(f"{n},{s}\n" for s, n in rows))
    sdf = write_sdf(root / "three_d.sdf", embedded_nci(6)[:4])
    return [smi, csv, sdf]


@pytest.fixture(scope="module")
def prepared(inputs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("prepared") / "data"
    prepare_dataset(inputs, output, seed=7, shard_size=5, progress=False)
    return output


def all_records(root: Path) -> list[MoleculeRecord]:
    return [r for info in dataset_shards(root) for r in read_shard(root / info.file)]


def test_every_entry_is_accounted_for(prepared: Path, inputs: list[Path]) -> None:
    manifest = json.loads((prepared / MANIFEST_FILE).read_text())
    assert manifest["read"] == 13 + 5 + 4
    assert manifest["ok"] + manifest["failed"] == manifest["read"]
    failures = manifest["failures"]
    by_id = {f["mol_id"]: f for f in failures}
    assert by_id[9] == {**by_id[9], "file": str(inputs[0]), "line": 10, "index": 9}
    assert (by_id[9]["reason"], by_id[9]["source_id"]) == ("invalid_smiles", "broken")
    assert (by_id[10]["reason"], by_id[10]["line"]) == ("empty_input", 11)
    assert (by_id[11]["reason"], by_id[11]["source_id"]) == ("unsupported_element", "xenon")
    assert sum(manifest["failures_by_reason"].values()) == manifest["failed"]
    assert all(f["message"] for f in failures)
    records = all_records(prepared)
    ids = [r.mol_id for r in records]
    assert len(records) == manifest["ok"]
    assert sorted(set(ids) | set(by_id)) == list(range(manifest["read"]))
    assert ids == sorted(ids) and not set(ids) & set(by_id)
    for info in dataset_shards(prepared):
        shard = int(info.file[6:12])
        shard_ids = read_shard(prepared / info.file).mol_ids
        assert (shard_ids >= 5 * shard).all() and (shard_ids < 5 * shard + 5).all()
        assert (info.first_mol_id, info.last_mol_id) == (shard_ids[0], shard_ids[-1])
        verify_shard(prepared, info)
    # Inputs are listed with their content hashes, the entries of each file in order.
    assert [Path(i["path"]).name for i in manifest["inputs"]] == [p.name for p in inputs]
    assert manifest["workers"] == 1 and manifest["record_format_version"] == 2


def test_records_are_what_molssl_chem_gives(prepared: Path) -> None:
    records = {r.mol_id: r for r in all_records(prepared)}
    # A SMILES line: the record of record_from_smiles with the molecule's own seed.
    smiles, name = nci_lines(3, 4).split()
    options = replace(ConformerOptions(seed=7), seed=molecule_seed(7, 3))
    expected = record_from_smiles(smiles, 3, options)
    expected.source_id = name
    assert_same_record(records[3], expected)
    # The CSV's name column, then the SDF: titles and coordinates exactly as in the file.
    assert records[13].source_id == nci_lines(40, 41).split()[1]
    mols = embedded_nci(6)[:4]
    for offset, mol in enumerate(mols):
        record = records[18 + offset]
        assert record.source_id == mol.GetProp("_Name") and record.num_conformers == 1
        heavy = mol.GetNumAtoms()
        np.testing.assert_allclose(
            record.conformers[0][:heavy], mol.GetConformer().GetPositions(), atol=1e-4
        )


def test_identical_bytes_for_any_worker_count(
    prepared: Path, inputs: list[Path], tmp_path: Path
) -> None:
    manifest = prepare_dataset(inputs, tmp_path, seed=7, shard_size=5, workers=2, progress=False)
    first = json.loads((prepared / MANIFEST_FILE).read_text())
    for key in ("read", "ok", "failed", "failures", "shards", "settings"):
        assert manifest[key] == first[key], key
    tars = sorted(p.name for p in prepared.glob("shard-*.tar"))
    assert tars == sorted(p.name for p in tmp_path.glob("shard-*.tar")) and len(tars) == 5
    for name in tars:
        assert (prepared / name).read_bytes() == (tmp_path / name).read_bytes()


def test_resume_redoes_only_what_is_missing(inputs: list[Path], tmp_path: Path) -> None:
    prepare_dataset(inputs, tmp_path, seed=7, shard_size=4, progress=False)
    tars = sorted(tmp_path.glob("shard-*.tar"))
    original = {p.name: p.read_bytes() for p in tars}
    stamps = {p.name: p.stat().st_mtime_ns for p in tars}
    # Killed while writing shard 5 (nothing of it renamed yet) ...
    (tmp_path / tars[-1].name).unlink()
    (tmp_path / sidecar_file_name(5)).unlink()
    (tmp_path / ".shard-000005.tar.x1y2.partial").write_bytes(b"half a shard")
    # ... shard 2's tar damaged, and shard 3's tar renamed but its sidecar never written.
    (tmp_path / "shard-000002.tar").write_bytes(b"damaged")
    (tmp_path / sidecar_file_name(3)).unlink()
    manifest = prepare_dataset(inputs, tmp_path, seed=7, shard_size=4, progress=False)
    assert manifest["resumed_shards"] == 3 and len(manifest["shards"]) == 6
    redone = {"shard-000002.tar", "shard-000003.tar", "shard-000005.tar"}
    for name, data in original.items():
        assert (tmp_path / name).read_bytes() == data
        if name not in redone:
            assert (tmp_path / name).stat().st_mtime_ns == stamps[name]
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob(".*.partial"))
    again = prepare_dataset(inputs, tmp_path, seed=7, shard_size=4, progress=False)
    assert again["resumed_shards"] == 6 and again["shards"] == manifest["shards"]


def test_other_settings_or_inputs_are_refused_unless_overwrite(
    inputs: list[Path], tmp_path: Path
) -> None:
    output = tmp_path / "out"
    prepare_dataset(inputs[:1], output, shard_size=8, progress=False)
    with pytest.raises(PrepareError, match="conformer_options") as info:
        prepare_dataset(inputs[:1], output, seed=1, shard_size=8, progress=False)
    assert info.value.reason == "settings_changed"
    changed = tmp_path / "nci.smi"
    changed.write_text(inputs[0].read_text() + "CCN\tethylamine\n")
    with pytest.raises(PrepareError, match="inputs"):
        prepare_dataset([changed], output, shard_size=8, progress=False)
    manifest = prepare_dataset([changed], output, shard_size=8, overwrite=True, progress=False)
    assert manifest["read"] == 14 and manifest["resumed_shards"] == 0
    assert sorted(p.name for p in output.glob("shard-*.tar")) == [
        "shard-000000.tar",
        "shard-000001.tar",
    ]


def test_bad_arguments_are_clear_errors(inputs: list[Path], tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        prepare_dataset([tmp_path / "missing.smi"], tmp_path / "out", progress=False)
    (tmp_path / "file").write_text("")
    with pytest.raises(PrepareError, match="not a directory"):
        prepare_dataset(inputs[:1], tmp_path / "file", progress=False)
    with pytest.raises(ValueError, match="workers"):
        prepare_dataset(inputs[:1], tmp_path / "out", workers=0, progress=False)


def test_a_bug_is_recorded_not_fatal(
    inputs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    real = prepare_module.entry_to_record

    def flaky(entry, mol_id, options, max_heavy_atoms):  # type: ignore[no-untyped-def]
        if mol_id == 2:
            raise KeyError("surprise")
        return real(entry, mol_id, options, max_heavy_atoms)

    monkeypatch.setattr(prepare_module, "entry_to_record", flaky)
    manifest = prepare_dataset(inputs[:1], tmp_path, shard_size=20, progress=False)
    (failure,) = [f for f in manifest["failures"] if f["mol_id"] == 2]
    assert failure["reason"] == "unexpected_error" and "KeyError" in failure["message"]
    assert "unexpected error" in capsys.readouterr().err
    assert isinstance(read_shard(tmp_path / "shard-000000.tar"), PackedRecords)


def test_hydrogens_of_sdf_entries_are_completed(prepared: Path) -> None:
    record = {r.mol_id: r for r in all_records(prepared)}[18]
    mol = Chem.RemoveHs(embedded_nci(6)[0])
    assert record.num_atoms == Chem.AddHs(mol).GetNumAtoms()


def _thread_counts(_: int) -> tuple[int, list[int]]:
    import torch
    from threadpoolctl import threadpool_info

    return torch.get_num_threads(), [pool["num_threads"] for pool in threadpool_info()]


def test_workers_run_one_thread_each(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("threadpoolctl")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # what a worker would otherwise inherit
    context = multiprocessing.get_context("spawn")
    with context.Pool(1, initializer=prepare_module._one_thread_per_worker) as pool:
        torch_threads, pool_threads = pool.map(_thread_counts, [0])[0]
    assert torch_threads == 1
    assert pool_threads and set(pool_threads) == {1}


def test_an_input_file_twice_is_read_once(
    inputs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.smi").write_text(inputs[0].read_text())
    (folder / "b_copy.smi").write_text(inputs[0].read_text())  # same bytes, other name
    manifest = prepare_dataset(
        [inputs[0], inputs[0], folder], tmp_path / "out", shard_size=50, progress=False
    )
    once = prepare_dataset([inputs[0]], tmp_path / "once", shard_size=50, progress=False)
    assert manifest["read"] == once["read"] == 13  # and no molecule twice
    assert manifest["ok"] + manifest["failed"] == manifest["read"]
    assert [d["path"] for d in manifest["duplicate_inputs"]] == [
        str(inputs[0]),
        str(folder / "a.smi"),
        str(folder / "b_copy.smi"),
    ]
    assert {d["same_as"] for d in manifest["duplicate_inputs"]} == {str(inputs[0])}
    assert [i["path"] for i in manifest["inputs"]] == [str(inputs[0])]
    assert "3 input file(s) have the same content as an earlier one" in capsys.readouterr().err


def _sdf_conformer(mol: Chem.Mol, seed: int, name: str) -> Chem.Mol:
    copy = Chem.Mol(mol)
    AllChem.EmbedMolecule(copy, randomSeed=seed)
    copy.SetProp("_Name", name)
    return copy


def test_a_molecule_seen_before_fails_as_duplicate_molecule(tmp_path: Path) -> None:
    smi = tmp_path / "a.smi"
    smi.write_text("CCO\tm0\nc1ccccc1O\tm1\nOCC\tm2\nC[C@H](N)O\tm3\nC[C@@H](N)O\tm4\n")
    csv = tmp_path / "b.csv"
    csv.write_text("id,smiles\nm5,Oc1ccccc1\nm6,CCN\n")  # phenol again, another spelling
    ethanol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    same = [_sdf_conformer(ethanol, 1, "m7"), _sdf_conformer(ethanol, 1, "m8")]
    other = _sdf_conformer(ethanol, 2, "m9")  # another conformer of a molecule seen: kept
    sdf = write_sdf(tmp_path / "c.sdf", [*same, other])
    manifest = prepare_dataset([smi, csv, sdf], tmp_path / "out", shard_size=4, progress=False)
    assert manifest["read"] == 10 == manifest["ok"] + manifest["failed"]
    duplicates = {f["mol_id"]: f for f in manifest["failures"]}
    assert sorted(duplicates) == [2, 5, 8]
    assert all(f["reason"] == "duplicate_molecule" for f in duplicates.values())
    assert "the same molecule as mol_id 0 (CCO)" in duplicates[2]["message"]
    assert "the same molecule as mol_id 1" in duplicates[5]["message"]
    assert "the same molecule as mol_id 7" in duplicates[8]["message"]
    records = all_records(tmp_path / "out")
    assert all(r.source_id == f"m{r.mol_id}" for r in records)  # stereoisomers 3, 4 both kept
    # Resumed, the molecules of kept shards are known from their sidecars: the same result.
    (tmp_path / "out" / "shard-000002.tar").unlink()
    again = prepare_dataset([smi, csv, sdf], tmp_path / "out", shard_size=4, progress=False)
    assert again["resumed_shards"] == 2 and again["failures"] == manifest["failures"]
    kept = prepare_dataset(
        [smi, csv, sdf], tmp_path / "all", shard_size=4, keep_duplicates=True, progress=False
    )
    assert (kept["ok"], kept["failed"]) == (10, 0)
    assert kept["settings"]["duplicate_molecules"] == "keep"


def test_the_output_is_never_read_back_as_input(inputs: list[Path], tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.smi").write_text(inputs[0].read_text())
    first = prepare_dataset([folder], folder / "prepared", shard_size=5, progress=False)
    # Its manifest.json and shard sidecars are .json files inside the input folder now.
    again = prepare_dataset([folder], folder / "prepared", shard_size=5, progress=False)
    assert again["read"] == first["read"] == 13
    assert again["resumed_shards"] == len(first["shards"]) == 3
    assert [i["path"] for i in again["inputs"]] == [str(folder / "a.smi")]
    with pytest.raises(PrepareError, match="also an input directory") as info:
        prepare_dataset([folder], folder, progress=False)
    assert info.value.reason == "output_is_input"


@pytest.mark.parametrize(
    ("argument", "value"),
    [("max_heavy_atoms", -5), ("max_heavy_atoms", 0), ("shard_size", 0), ("num_conformers", 0)],
)
def test_out_of_range_options_are_refused_before_reading(
    inputs: list[Path], tmp_path: Path, argument: str, value: int
) -> None:
    with pytest.raises(PrepareError, match=f"{argument} must be a whole number") as info:
        prepare_dataset(inputs[:1], tmp_path / "out", progress=False, **{argument: value})
    assert info.value.reason == "invalid_option" and not (tmp_path / "out").exists()

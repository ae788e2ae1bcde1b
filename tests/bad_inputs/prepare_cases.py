"""Bad inputs to ``molssl prepare``: each gives a recorded failure or exit status 2.

Every prepared input names its molecules ``m<index>``, so a record's ``source_id`` says which
entry it came from: the checks below find each record under the entry it was read from (no
record shifted) and every entry either prepared or listed as a failure (none lost).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from rdkit import Chem
from rdkit.Chem import AllChem

from molssl.datamodules import PretrainDataModule
from molssl.datamodules.shards import MANIFEST_FILE, dataset_shards, read_shard
from tests.bad_inputs.shared import Exited, SharedInputs, run_cli
from tests.conftest import read_nci_smiles

GOOD = read_nci_smiles(4)


def _smi(entries: list[str]) -> str:
    return "".join(f"{smiles}\tm{index}\n" for index, smiles in enumerate(entries))


def _prepare(path: Path, work: Path) -> tuple[dict, list, Exited | None]:
    output = work / "dataset"
    exited = run_cli(
        ["prepare", "--input", str(path), "--output", str(output), "--no-progress"], work
    )
    if exited is not None:
        return {}, [], exited
    manifest = json.loads((output / MANIFEST_FILE).read_text())
    records = [r for info in dataset_shards(output) for r in read_shard(output / info.file)]
    failed = {f["mol_id"] for f in manifest["failures"]}
    kept = {r.mol_id for r in records}
    assert not failed & kept and failed | kept == set(range(manifest["read"])), manifest
    for record in records:  # no shift: the record of entry i is the molecule named m<i>
        assert record.source_id == f"m{record.mol_id}", (record.mol_id, record.source_id)
    return manifest, records, None


def _recorded(manifest: dict) -> str:
    failures = ", ".join(
        f"{f['reason']} (line {f['line']}, mol_id {f['mol_id']})" for f in manifest["failures"]
    )
    return f"{manifest['read']} read, {manifest['ok']} prepared; failed: {failures}"


def invalid_smiles(work: Path, shared: SharedInputs) -> str:
    path = work / "mixed.smi"
    path.write_text(_smi([GOOD[0], "C1CC(", GOOD[1], "not_a_smiles", GOOD[2]]))
    manifest, records, _ = _prepare(path, work)
    assert [r.mol_id for r in records] == [0, 2, 4]
    return _recorded(manifest)


def unknown_element(work: Path, shared: SharedInputs) -> str:
    path = work / "dummy.smi"
    path.write_text(_smi([GOOD[0], "*C(=O)O", GOOD[1]]))
    manifest, records, _ = _prepare(path, work)
    assert [r.mol_id for r in records] == [0, 2]
    return _recorded(manifest)


def empty_file(work: Path, shared: SharedInputs) -> str:
    path = work / "empty.smi"
    path.write_text("")
    described = _exit_2(path, work)
    manifest = json.loads((work / "dataset" / MANIFEST_FILE).read_text())
    assert (manifest["read"], manifest["ok"], manifest["shards"]) == (0, 0, [])
    try:
        PretrainDataModule(root=str(work / "dataset")).setup("fit")
    except ValueError as error:
        return f"{described}; data setup on it: {error}"
    raise AssertionError("an empty data set was accepted for training")


def truncated_gzip(work: Path, shared: SharedInputs) -> str:
    path = work / "cut.smi.gz"
    entries = read_nci_smiles(60)
    packed = gzip.compress(_smi(entries).encode())
    path.write_bytes(packed[: len(packed) // 2])
    manifest, records, _ = _prepare(path, work)
    assert [f["reason"] for f in manifest["failures"]][-1] == "truncated_file"
    assert 0 < len(records) < len(entries)
    return _recorded(manifest)


def _mol_block(smiles: str, name: str) -> str:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=7)
    mol.SetProp("_Name", name)
    return Chem.MolToMolBlock(mol)


def truncated_sdf(work: Path, shared: SharedInputs) -> str:
    path = work / "cut.sdf"
    blocks = [
        _mol_block(smiles, f"m{i}") for i, smiles in enumerate(["CCO", "CC(=O)O", "c1ccccc1"])
    ]
    path.write_text("".join(b + "$$$$\n" for b in blocks[:2]) + blocks[2][: len(blocks[2]) // 2])
    manifest, records, _ = _prepare(path, work)
    assert [r.mol_id for r in records] == [0, 1]
    return _recorded(manifest)


def invalid_json(work: Path, shared: SharedInputs) -> str:
    path = work / "m0.json"
    path.write_text('{"pubchem": {"cid": 1, "atoms": [')
    described = _exit_2(path, work)  # its only entry failed: nothing to train on
    manifest = json.loads((work / "dataset" / MANIFEST_FILE).read_text())
    assert (manifest["read"], manifest["ok"], manifest["shards"]) == (1, 0, [])
    return f"{described}; manifest: {_recorded(manifest)}"


def _exit_2(path: Path, work: Path) -> str:
    _, _, exited = _prepare(path, work)
    assert exited is not None and exited.code == 2, exited
    assert "Traceback" not in exited.stderr
    return f"exit 2: {exited.stderr.strip().splitlines()[-1]}"


def unsupported_suffix(work: Path, shared: SharedInputs) -> str:
    path = work / "molecules.xyz"
    path.write_text("3\n\nC 0 0 0\nO 1.2 0 0\nH -1 0 0\n")
    return _exit_2(path, work)


def missing_file(work: Path, shared: SharedInputs) -> str:
    return _exit_2(work / "absent.smi", work)

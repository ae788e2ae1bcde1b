"""Bad inputs to ``molssl prepare``: each gives a recorded failure or exit status 2.

Every prepared input names its molecules ``m<index>``, so a record's ``source_id`` says which
entry it came from: the checks below find each record under the entry it was read from (no
record shifted) and every entry either prepared or listed as a failure (none lost).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from unittest import mock

from rdkit import Chem
from rdkit.Chem import AllChem

from molssl.datamodules import PretrainDataModule
from molssl.datamodules import prepare as prepare_module
from molssl.datamodules.shards import MANIFEST_FILE, dataset_shards, read_shard
from tests.bad_inputs.shared import Exited, SharedInputs, one_line_exit, run_cli
from tests.commands import dying_worker
from tests.conftest import read_nci_smiles

GOOD = read_nci_smiles(4)


def _smi(entries: list[str]) -> str:
    return "".join(f"{smiles}\tm{index}\n" for index, smiles in enumerate(entries))


def _prepare(
    path: Path | list[Path], work: Path, *extra: str, output: Path | None = None
) -> tuple[dict, list, Exited | None]:
    output = output or work / "dataset"
    paths = [str(p) for p in (path if isinstance(path, list) else [path])]
    args = ["prepare", "--input", *paths, "--output", str(output), "--no-progress", *extra]
    exited = run_cli(args, work)
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
    return f"{manifest['read']} read, {manifest['ok']} prepared; failed: {failures or 'none'}"


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
    args = ["prepare", "--input", str(path), "--output", str(work / "dataset"), "--no-progress"]
    return one_line_exit(args, work)


def unsupported_suffix(work: Path, shared: SharedInputs) -> str:
    path = work / "molecules.xyz"
    path.write_text("3\n\nC 0 0 0\nO 1.2 0 0\nH -1 0 0\n")
    return _exit_2(path, work)


def missing_file(work: Path, shared: SharedInputs) -> str:
    return _exit_2(work / "absent.smi", work)


# -- the cases of issue #17 ------------------------------------------------------------------


def whitespace_in_csv_cell(work: Path, shared: SharedInputs) -> str:
    # A CSV cell is not a .smi line: "c1ccccc1 O" is phenol mistyped, not benzene named "O".
    path = work / "cells.csv"
    path.write_text(
        f'id,smiles\nm0,{GOOD[0]}\nm1,c1ccccc1 O\nm2,"CC\nO"\nm3,{GOOD[1]}\nm4, {GOOD[2]} \n'
    )
    manifest, records, _ = _prepare(path, work)
    assert [r.mol_id for r in records] == [0, 3, 4]
    assert all("contains whitespace" in f["message"] for f in manifest["failures"])
    return _recorded(manifest)


def sdf_missing_terminator(work: Path, shared: SharedInputs) -> str:
    blocks = [_mol_block(s, f"m{i}") for i, s in enumerate(["CCO", "CC(=O)O", "c1ccccc1", "CCN"])]
    path = work / "joined.sdf"
    path.write_text(blocks[0] + "$$$$\n" + blocks[1] + blocks[2] + "$$$$\n" + blocks[3] + "$$$$\n")
    manifest, records, _ = _prepare(path, work)  # 4 molecules: counted, none swallowed
    assert manifest["read"] == 4 and [r.mol_id for r in records] == [0, 2, 3]
    return _recorded(manifest)


def _smi_pair(work: Path) -> Path:
    path = work / "a.smi"
    path.write_text(_smi(GOOD[:3]))
    return path


def same_file_twice(work: Path, shared: SharedInputs) -> str:
    path = _smi_pair(work)
    manifest, records, _ = _prepare([path, path], work)
    assert manifest["read"] == 3 and len(records) == 3  # no molecule twice
    assert [d["path"] for d in manifest["duplicate_inputs"]] == [str(path)]
    return f"{_recorded(manifest)}; duplicate input files not read: 1"


def identical_files_in_folder(work: Path, shared: SharedInputs) -> str:
    folder = work / "inputs"
    folder.mkdir()
    (folder / "a.smi").write_text(_smi(GOOD[:3]))
    (folder / "b_copy.smi").write_text(_smi(GOOD[:3]))
    manifest, records, _ = _prepare(folder, work)
    assert manifest["read"] == 3 and len(records) == 3
    (duplicate,) = manifest["duplicate_inputs"]
    return f"{_recorded(manifest)}; not read: {Path(duplicate['path']).name} (same sha256)"


def duplicate_molecule_across_inputs(work: Path, shared: SharedInputs) -> str:
    first = work / "a.smi"
    first.write_text(_smi(GOOD[:3]))
    second = work / "b.csv"  # m3 is m0 written another way (same canonical SMILES)
    other = Chem.MolToSmiles(Chem.MolFromSmiles(GOOD[0]), canonical=False, doRandom=True)
    second.write_text(f"id,smiles\nm3,{other}\nm4,{GOOD[3]}\n")
    manifest, records, _ = _prepare([first, second], work)
    assert [r.mol_id for r in records] == [0, 1, 2, 4]
    assert "the same molecule as mol_id 0" in manifest["failures"][0]["message"]
    return _recorded(manifest)


def max_heavy_atoms_negative(work: Path, shared: SharedInputs) -> str:
    output = work / "dataset"
    args = ["prepare", "--input", str(_smi_pair(work)), "--output", str(output)]
    observed = one_line_exit([*args, "--max-heavy-atoms", "-5"], work)
    assert not output.exists()  # refused before anything was read or written
    return observed


def output_inside_input(work: Path, shared: SharedInputs) -> str:
    folder = work / "data"
    folder.mkdir()
    (folder / "a.smi").write_text(_smi(GOOD[:3]))
    # One shard of the three molecules (the default would cut a small input into several).
    first, _, _ = _prepare(folder, work, "--shard-size", "10", output=folder / "prepared")
    # The output's manifest.json and sidecars are .json files inside the input folder now.
    again, _, _ = _prepare(folder, work, "--shard-size", "10", output=folder / "prepared")
    assert again["read"] == first["read"] == 3 and again["resumed_shards"] == 1
    return f"second run: {_recorded(again)}; {again['resumed_shards']} shard kept"


def all_smiles_invalid(work: Path, shared: SharedInputs) -> str:
    path = work / "bad.smi"
    path.write_text(_smi(["C1CC(", "not_a_smiles", "c1cccc1"]))
    described = _exit_2(path, work)
    manifest = json.loads((work / "dataset" / MANIFEST_FILE).read_text())
    assert (manifest["read"], manifest["ok"], manifest["failed"]) == (3, 0, 3)
    return described


def ragged_csv_row(work: Path, shared: SharedInputs) -> str:
    path = work / "commas.csv"
    path.write_text(f"id,smiles\nm0,{GOOD[0]}\nm1,{GOOD[1]},extra\nm2,{GOOD[2]}\n")
    manifest, records, _ = _prepare(path, work)
    assert [r.mol_id for r in records] == [0, 2]
    return _recorded(manifest)


def worker_killed_once(work: Path, shared: SharedInputs) -> str:
    # kill -9 of the worker holding molecule 13 (as the OOM killer would), once: its molecules
    # go to a fresh worker and nothing is lost.
    path = work / "nci.smi"
    path.write_text(_smi(read_nci_smiles(24)))
    with mock.patch.object(prepare_module, "_prepare_entry", dying_worker.dying_once_entry):
        manifest, _, _ = _prepare(path, work, "--workers", "2", "--shard-size", "10")
    assert (work / dying_worker.DIED_MARKER).exists()  # a worker really died
    assert manifest["read"] == 24 == manifest["ok"] + manifest["failed"]
    return f"{_recorded(manifest)}; a worker killed with SIGKILL at mol_id 13"


def worker_killed_every_time(work: Path, shared: SharedInputs) -> str:
    path = work / "nci.smi"
    path.write_text(_smi(read_nci_smiles(24)))
    args = ["prepare", "--input", str(path), "--output", str(work / "dataset"), "--no-progress"]
    args += ["--workers", "2", "--shard-size", "10"]
    with mock.patch.object(prepare_module, "_prepare_entry", dying_worker.dying_entry):
        observed = one_line_exit(args, work)
    manifest, _, _ = _prepare(path, work, "--workers", "2", "--shard-size", "10")
    assert manifest["resumed_shards"] == 1 and manifest["read"] == 24
    return f"{observed}; the same command again: {_recorded(manifest)}, 1 shard kept"

"""iter_source: suffix dispatch, directories, whole-file errors, and end-to-end accounting."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from molssl.chem.conformers import ConformerOptions
from molssl.chem.errors import MoleculeError
from molssl.datamodules.sources import SourceError, entry_to_record, iter_source
from tests.datamodules.sources.helpers import (
    embedded_nci,
    pubchemqc_document,
    reasons,
    truncate_gzip,
    write_gzip,
    write_json,
    write_sdf,
)


@pytest.mark.parametrize(
    ("name", "reason"),
    [("a.mol2", "unknown_suffix"), ("a.smi.bz2", "unknown_suffix"), ("noext", "unknown_suffix")],
)
def test_unknown_suffix(tmp_path: Path, name: str, reason: str) -> None:
    (tmp_path / name).write_text("CCO\n")
    with pytest.raises(SourceError) as info:
        iter_source(tmp_path / name)
    assert info.value.reason == reason


def test_missing_file_and_fake_gzip_fail_before_any_entry(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as info:
        iter_source(tmp_path / "absent.smi")
    assert info.value.reason == "missing_file"
    fake = tmp_path / "fake.smi.gz"
    fake.write_text("CCO\n")
    with pytest.raises(SourceError) as info:
        iter_source(fake)
    assert info.value.reason == "invalid_gzip"


def test_directory_sorted_recursive_and_checked_up_front(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.smi").write_text("CCN\n")
    (tmp_path / "a.smi").write_text("CCO\nCCC\n")
    write_gzip(tmp_path / "c.csv.gz", "smiles\nc1ccccc1\n")
    (tmp_path / "README.md").write_text("not a source\n")
    (tmp_path / ".hidden.smi").write_text("C\n")
    entries = list(iter_source(tmp_path))
    assert [(Path(e.source).name, e.index, e.smiles) for e in entries] == [
        ("a.smi", 0, "CCO"),
        ("a.smi", 1, "CCC"),
        ("2.smi", 0, "CCN"),
        ("c.csv.gz", 0, "c1ccccc1"),
    ]
    # A CSV without a SMILES column anywhere in the directory fails before the first entry.
    (tmp_path / "d.csv").write_text("name,value\nx,1\n")
    with pytest.raises(SourceError) as info:
        iter_source(tmp_path)
    assert info.value.reason == "no_smiles_column"


def test_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt.bak").write_text("x")
    with pytest.raises(SourceError) as info:
        iter_source(tmp_path)
    assert info.value.reason == "no_supported_files"


def _account(path: Path) -> tuple[list[str], Counter[str], dict[int, str]]:
    """Run every entry through entry_to_record as prepare does: (ids, outcomes, id by mol_id)."""
    options = ConformerOptions(max_optimize_iters=20, timeout_s=5.0)
    ids: list[str] = []
    outcomes: Counter[str] = Counter()
    kept: dict[int, str] = {}
    for mol_id, entry in enumerate(iter_source(path)):
        ids.append(entry.source_id)
        try:
            record = entry_to_record(entry, mol_id, options)
        except MoleculeError as error:
            outcomes[error.reason] += 1
            continue
        outcomes["ok"] += 1
        kept[record.mol_id] = record.source_id
    return ids, outcomes, kept


def test_mixed_smiles_file_is_fully_accounted(tmp_path: Path, nci_smiles: list[str]) -> None:
    bad = ["C1CC unclosed", "", "[Xx] unknown", "[H][H] hydrogen"]
    lines: list[str] = []
    for block in range(12):
        good = [f"{s} good{block * 2 + k}" for k, s in enumerate(nci_smiles[block * 2 :][:2])]
        lines += good[:1] + bad + good[1:]
    full = write_gzip(tmp_path / "mixed.smi.gz", "\n".join(lines) + "\n")
    cut = truncate_gzip(full, tmp_path / "cut.smi.gz", 0.7)
    ids, outcomes, kept = _account(cut)
    assert sum(outcomes.values()) == len(ids)  # ok + failed = read
    assert outcomes["truncated_file"] == 1
    assert 0 < len(ids) - 1 < len(lines)
    assert outcomes["empty_input"] > 0 and outcomes["no_heavy_atom"] > 0
    assert outcomes["invalid_smiles"] == 2 * outcomes["no_heavy_atom"]
    assert outcomes["ok"] == sum(source_id.startswith("good") for source_id in ids)
    # Records keep their entry's position: mol_id -> source_id as read, line by line.
    assert all(ids[mol_id] == source_id for mol_id, source_id in kept.items())
    assert ids[: len(ids) - 1] == [
        line.split(maxsplit=1)[1] if line else f"cut.smi.gz:{i}"
        for i, line in enumerate(lines[: len(ids) - 1])
    ]
    assert {"unclosed", "unknown", "hydrogen"} <= set(ids)


def test_mixed_sdf_and_json_are_fully_accounted(tmp_path: Path) -> None:
    mols = list(embedded_nci(12))
    sdf_text = write_sdf(tmp_path / "ok.sdf", mols).read_text()
    broken = sdf_text.replace(" C   0", " Cx  0", 1)  # molecule 0 gets an unknown element
    (tmp_path / "mixed.sdf").write_text(broken + sdf_text[: len(sdf_text) // 3])
    ids, outcomes, kept = _account(tmp_path / "mixed.sdf")
    assert sum(outcomes.values()) == len(ids) > len(mols)
    assert outcomes["invalid_record"] == 1 and outcomes["truncated_record"] == 1
    assert outcomes["ok"] == len(ids) - 2
    assert ids[: len(mols)] == [mol.GetProp("_Name") for mol in mols]
    assert all(ids[mol_id] == source_id for mol_id, source_id in kept.items())
    assert 0 not in kept and len(ids) - 1 not in kept
    json_dir = tmp_path / "json"
    json_dir.mkdir()
    for cid, mol in enumerate(mols[:4]):
        write_json(json_dir / f"{cid}.json", pubchemqc_document(mol, cid))
    (json_dir / "9.json").write_text('{"pubchem": {"cid": 9, ')
    assert reasons(iter_source(json_dir)) == [None, None, None, None, "invalid_json"]

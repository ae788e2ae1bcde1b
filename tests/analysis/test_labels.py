"""Label columns stay with their own entries of iter_source, failed entries included."""

from __future__ import annotations

from pathlib import Path

import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from molssl.analysis.errors import EmbedError
from molssl.analysis.labels import LabelTable, is_missing, label_kind, parse_number
from molssl.datamodules.sources import iter_source
from tests.conftest import read_nci_smiles


def test_csv_labels_follow_entries_through_blank_and_bad_rows(tmp_path: Path) -> None:
    smiles = read_nci_smiles(6)
    rows = [
        f"{smiles[0]},1.5",
        "",  # a blank row is an entry (empty_input) of its own
        "C1CC,2.5",
        f'"{smiles[1]}",',
        f"{smiles[2]},-3",
    ]
    path = tmp_path / "labelled.csv"
    path.write_text("SMILES,Value\n" + "\n".join(rows) + "\n")
    table = LabelTable(path, "value")  # any case, as iter_source finds SMILES
    entries = list(iter_source(path))
    assert len(entries) == len(rows)
    labels = [table.value(entry.source, entry.index) for entry in entries]
    assert labels == ["1.5", "", "2.5", "", "-3"]


def test_sdf_field_per_record(tmp_path: Path) -> None:
    path = tmp_path / "mols.sdf"
    writer = Chem.SDWriter(str(path))
    expected = []
    for i, smiles in enumerate(read_nci_smiles(4)):
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        AllChem.EmbedMolecule(mol, randomSeed=1)
        if i != 2:  # one record without the field
            mol.SetProp("Energy", f"{-i * 1.25}")
        mol.SetProp("other", "x")
        writer.write(mol)
        expected.append("" if i == 2 else f"{-i * 1.25}")
    writer.close()
    table = LabelTable(path, "energy")
    entries = list(iter_source(path))
    assert [table.value(e.source, e.index) for e in entries] == expected


def test_unusable_label_sources(tmp_path: Path) -> None:
    smi = tmp_path / "mols.smi"
    smi.write_text("CCO\n")
    with pytest.raises(EmbedError) as error:
        LabelTable(smi, "y")
    assert error.value.reason == "labels_unsupported"
    csv_path = tmp_path / "mols.csv"
    csv_path.write_text("smiles,y\nCCO,1\n")
    with pytest.raises(EmbedError) as error:
        LabelTable(csv_path, "z")
    assert error.value.reason == "no_label_column"
    assert "'z'" in str(error.value)


def test_label_kind_and_parsing() -> None:
    assert label_kind(["0", "1", "1", "", "NaN"]) == "class"
    assert label_kind(["1.5", "2.25", "-3"]) == "continuous"
    assert label_kind([str(i) for i in range(11)]) == "continuous"
    assert label_kind(["active", "inactive", "1"]) == "class"
    assert label_kind(["", "na"]) == "class"
    assert is_missing(" N/A ") and not is_missing("0")
    assert parse_number("-2.5e1") == -25.0
    assert parse_number("abc") != parse_number("abc")  # nan

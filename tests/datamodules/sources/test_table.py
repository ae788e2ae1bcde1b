"""CSV sources: the shared real-molecule CSVs, RFC 4180 quoting, column choice, broken rows."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from molssl.chem.errors import MoleculeError
from molssl.datamodules.sources import SourceError, entry_to_record, iter_source
from tests.datamodules.sources.helpers import (
    assert_accounted,
    reasons,
    truncate_gzip,
    write_gzip,
)


@pytest.mark.parametrize(
    ("name", "column"), [("freesolv.csv", "smiles"), ("micro_ZINC.csv", "SMILES")]
)
def test_shared_csvs_read_like_the_csv_module(shared_data: Path, name: str, column: str) -> None:
    path = shared_data / name
    with open(path, newline="") as handle:
        expected = [row[column] for row in csv.DictReader(handle)]
    entries = list(iter_source(path))
    assert [e.smiles for e in entries] == expected
    assert [e.source_id for e in entries] == [f"{name}:{i}" for i in range(len(expected))]
    assert_accounted(entries)


def test_quoted_fields_names_and_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text(
        "Name,Note,SMILES\n"
        'ethanol,"plain",CCO\n'
        '"acid, acetic","two\nlines",CC(=O)O\n'
        '"say ""hi""",x,"c1ccccc1"\n'
    )
    entries = list(iter_source(path))
    assert [e.smiles for e in entries] == ["CCO", "CC(=O)O", "c1ccccc1"]
    assert [e.source_id for e in entries] == ["ethanol", "acid, acetic", 'say "hi"']
    assert [e.line for e in entries] == [2, 3, 5]  # the quoted line break spans lines 3-4


def test_named_column_and_id_column(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    path.write_text("CID,canonical_smiles,smiles_note\n2244,CC(=O)Oc1ccccc1C(=O)O,x\n")
    with pytest.raises(SourceError) as info:
        iter_source(path)
    assert info.value.reason == "no_smiles_column" and "smiles_column" in str(info.value)
    entries = list(iter_source(path, smiles_column="Canonical_SMILES"))
    assert [(e.source_id, e.smiles) for e in entries] == [("2244", "CC(=O)Oc1ccccc1C(=O)O")]


def test_blank_short_and_empty_rows_fail_in_place(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("id,smiles,y\n1,CCO,0.5\n\n2,,1.0\n3\n4,[Xx],2.0\n5,c1ccccc1,3.0\n")
    entries = list(iter_source(path))
    assert reasons(entries) == [None, "empty_input", "empty_input", "ragged_row", None, None]
    assert [e.line for e in entries] == [2, 3, 4, 5, 6, 7]
    assert [e.source_id for e in entries] == ["1", "bad.csv:1", "2", "3", "4", "5"]
    assert_accounted(entries)


def test_whitespace_inside_a_smiles_cell_fails_the_row(tmp_path: Path) -> None:
    # A CSV cell is not a .smi line: "c1ccccc1 O" is not benzene named O, and a quoted line
    # break is not the end of the SMILES. Both rows fail; their neighbours keep their ids.
    path = tmp_path / "ws.csv"
    path.write_text('id,smiles\nm0,CCO\nm1,c1ccccc1 O\nm2,"CC\nO"\nm3,\tCCN \n')
    entries = list(iter_source(path))
    records = []
    for mol_id, entry in enumerate(entries):
        try:
            records.append(entry_to_record(entry, mol_id))
        except MoleculeError as error:
            records.append(error.reason)
    assert [e.source_id for e in entries] == ["m0", "m1", "m2", "m3"]
    assert [r if isinstance(r, str) else r.smiles for r in records] == [
        "CCO",
        "invalid_smiles",
        "invalid_smiles",
        "CCN",  # whitespace around a SMILES is no part of it
    ]
    assert_accounted(entries)


def test_a_row_with_a_field_too_many_fails_instead_of_shifting(tmp_path: Path) -> None:
    path = tmp_path / "commas.csv"
    path.write_text("name,smiles\nethanol,CCO\nacid, acetic,CC(=O)O\nbenzene,c1ccccc1\n")
    entries = list(iter_source(path))
    assert reasons(entries) == [None, "ragged_row", None]
    assert "row has 3 field(s), the header 2" in str(entries[1].failure)
    assert [(e.source_id, e.smiles) for e in entries if e.ok] == [
        ("ethanol", "CCO"),
        ("benzene", "c1ccccc1"),
    ]


def test_gzip_and_truncated_gzip(tmp_path: Path, nci_smiles: list[str]) -> None:
    text = "smiles,id\n" + "".join(f"{s},{i}\n" for i, s in enumerate(nci_smiles * 5))
    plain = tmp_path / "a.csv"
    plain.write_text(text)
    gz = write_gzip(tmp_path / "a.csv.gz", text)
    fields = [(e.line, e.source_id, e.smiles) for e in iter_source(plain)]
    assert [(e.line, e.source_id, e.smiles) for e in iter_source(gz)] == fields
    cut = list(iter_source(truncate_gzip(gz, tmp_path / "cut.csv.gz", 0.5)))
    assert reasons(cut)[-1] == "truncated_file"
    assert [(e.line, e.source_id, e.smiles) for e in cut[:-1]] == fields[: len(cut) - 1]
    assert 0 < len(cut) - 1 < len(fields)
    assert_accounted(cut)


def test_byte_order_mark_does_not_hide_the_header(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("SMILES,ID\nCCO,e1\n".encode("utf-8-sig"))
    assert [(e.smiles, e.source_id) for e in iter_source(path)] == [("CCO", "e1")]

"""SDF sources: real NCI molecules with ETKDG coordinates, read back exactly; broken records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from molssl.datamodules.sources import iter_source
from tests.datamodules.sources.helpers import (
    assert_accounted,
    embedded_nci,
    reasons,
    truncate_gzip,
    write_sdf,
)


def _block(mol: Chem.Mol) -> str:
    return Chem.MolToMolBlock(mol) + "$$$$\n"


@pytest.mark.parametrize("gz", [False, True])
def test_coordinates_atoms_and_titles_as_written(tmp_path: Path, gz: bool) -> None:
    mols = embedded_nci(40)
    path = write_sdf(tmp_path / ("nci.sdf.gz" if gz else "nci.sdf"), mols, gz=gz)
    entries = list(iter_source(path))
    assert reasons(entries) == [None] * len(mols)
    assert_accounted(entries)
    for entry, mol in zip(entries, mols, strict=True):
        assert entry.source_id == mol.GetProp("_Name")
        assert entry.mol is not None and entry.smiles is None
        assert [a.GetAtomicNum() for a in entry.mol.GetAtoms()] == [
            a.GetAtomicNum() for a in mol.GetAtoms()
        ]
        # The V2000 block keeps 4 decimals: what was written is what is read.
        written = np.round(mol.GetConformer().GetPositions(), 4)
        np.testing.assert_array_equal(entry.mol.GetConformer().GetPositions(), written)
        assert entry.mol.GetNumConformers() == 1
    # Each record starts on its title line.
    lines = path.read_text().splitlines() if not gz else None
    if lines is not None:
        assert [lines[e.line - 1] for e in entries] == [m.GetProp("_Name") for m in mols]


def test_heavy_atom_only_records_like_pcqm4mv2(tmp_path: Path) -> None:
    mols = [Chem.RemoveHs(mol) for mol in embedded_nci(20)]
    entries = list(iter_source(write_sdf(tmp_path / "heavy.sdf", mols)))
    assert reasons(entries) == [None] * len(mols)
    assert [e.mol.GetNumAtoms() for e in entries] == [m.GetNumAtoms() for m in mols]


def test_broken_records_fail_in_place(tmp_path: Path) -> None:
    good = embedded_nci(10)[:3]
    flat = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    AllChem.Compute2DCoords(flat)
    flat.SetProp("_Name", "flat")
    unknown = _block(good[1]).splitlines(keepends=True)
    unknown[4] = unknown[4][:31] + "Xx " + unknown[4][34:]  # atom 1's element symbol
    no_coords = Chem.MolFromSmiles("c1ccccc1O")
    no_coords.SetProp("_Name", "no coordinates")
    no_coords.AddConformer(Chem.Conformer(no_coords.GetNumAtoms()))
    cut_block = _block(good[2]).splitlines(keepends=True)
    text = (
        _block(good[0])
        + "".join(unknown)
        + _block(flat)
        + "".join(cut_block[:6])  # cut inside the atom table, then the next record follows
        + "$$$$\n"
        + _block(no_coords)
        + _block(good[2])
        + "".join(cut_block[:-3])  # a last record without its end
    )
    path = tmp_path / "mixed.sdf"
    path.write_text(text)
    entries = list(iter_source(path))
    assert reasons(entries) == [
        None,
        "invalid_record",
        "no_3d_coordinates",
        "truncated_record",
        "no_3d_coordinates",
        None,
        "truncated_record",
    ]
    assert "Element 'Xx' not found" in str(entries[1].failure)
    assert "Stacktrace" not in str(entries[1].failure)
    assert [e.source_id for e in entries] == [
        good[0].GetProp("_Name"),
        good[1].GetProp("_Name"),
        "flat",
        good[2].GetProp("_Name"),
        "no coordinates",
        good[2].GetProp("_Name"),
        good[2].GetProp("_Name"),
    ]
    lines = text.splitlines()
    assert all(lines[e.line - 1] == e.source_id for e in entries)
    assert_accounted(entries)


def _sdf_record(mol: Chem.Mol, v3000: bool = False, field: str | None = None) -> str:
    text = Chem.MolToMolBlock(mol, forceV3000=v3000)
    if field is not None:
        text += f"> <id>\n{field}\n\n"
    return text


@pytest.mark.parametrize("layout", ["v2000", "v3000", "data_fields", "untagged"])
def test_a_missing_terminator_never_hides_the_next_molecule(tmp_path: Path, layout: str) -> None:
    mols = embedded_nci(12)[:5]
    records = [
        _sdf_record(mol, v3000=layout == "v3000", field="x" if layout == "data_fields" else None)
        for mol in mols
    ]
    if layout == "untagged":  # counts lines of old writers carry no version tag
        records = [text.replace(" V2000", "") for text in records]
    # Records 1 and 2 lose their '$$$$': three molecules between two separators.
    text = records[0] + "$$$$\n" + records[1] + records[2] + records[3] + "$$$$\n"
    text += records[4] + "$$$$\n"
    path = tmp_path / f"{layout}.sdf"
    path.write_text(text)
    entries = list(iter_source(path))
    # read = ok + failed counts every molecule.
    assert reasons(entries) == [None, "missing_terminator", "missing_terminator", None, None]
    assert [e.source_id for e in entries] == [m.GetProp("_Name") for m in mols]
    lines = text.splitlines()
    assert all(lines[e.line - 1] == e.source_id for e in entries)
    assert "no '$$$$' line between this record and the next one" in str(entries[1].failure)
    for entry, mol in zip(entries, mols, strict=True):  # the ones read are their own molecule
        if entry.mol is not None:
            assert entry.mol.GetNumAtoms() == mol.GetNumAtoms()
    assert_accounted(entries)


def test_title_falls_back_to_cid_field_then_index(tmp_path: Path) -> None:
    first, second = (Chem.Mol(m) for m in embedded_nci(10)[:2])
    first.SetProp("_Name", "")
    first.SetProp("PUBCHEM_COMPOUND_CID", "2244")
    second.SetProp("_Name", "")
    entries = list(iter_source(write_sdf(tmp_path / "ids.sdf", [first, second])))
    assert [e.source_id for e in entries] == ["2244", "ids.sdf:1"]


def test_blank_lines_after_the_last_record_are_not_a_record(tmp_path: Path) -> None:
    path = tmp_path / "tail.sdf"
    path.write_text(_block(embedded_nci(10)[0]) + "\n\n  \n")
    assert reasons(iter_source(path)) == [None]


def test_truncated_gzip_stops_with_one_failure(tmp_path: Path) -> None:
    mols = embedded_nci(60)
    full = write_sdf(tmp_path / "full.sdf.gz", mols, gz=True)
    entries = list(iter_source(truncate_gzip(full, tmp_path / "cut.sdf.gz", 0.5)))
    assert reasons(entries)[-1] == "truncated_file"
    assert set(reasons(entries)[:-1]) == {None}
    assert 0 < len(entries) - 1 < len(mols)
    assert [e.source_id for e in entries[:-1]] == [m.GetProp("_Name") for m in mols][
        : len(entries) - 1
    ]
    assert_accounted(entries)

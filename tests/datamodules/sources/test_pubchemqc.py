"""PubChemQC B3LYP@PM6 JSON: documents written from real NCI molecules, read back exactly."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem

from molssl.datamodules.sources import iter_source
from molssl.datamodules.sources.pubchemqc import mol_from_pubchemqc
from tests.datamodules.sources.helpers import (
    embedded_nci,
    pubchemqc_document,
    reasons,
    truncate_gzip,
    write_json,
)


def _canonical(mol: Chem.Mol) -> str:
    return Chem.MolToSmiles(Chem.RemoveHs(mol))


def test_directory_of_documents_reads_every_molecule_exactly(tmp_path: Path) -> None:
    mols = embedded_nci(60)
    for cid, mol in enumerate(mols):
        write_json(tmp_path / f"{cid:06d}.B3LYP@PM6.S0.json", pubchemqc_document(mol, cid))
    entries = list(iter_source(tmp_path))
    assert reasons(entries) == [None] * len(mols)
    assert [e.source_id for e in entries] == [str(cid) for cid in range(len(mols))]
    assert [(e.index, e.line) for e in entries] == [(0, 1)] * len(mols)
    charged = 0
    for entry, mol in zip(entries, mols, strict=True):
        assert [a.GetAtomicNum() for a in entry.mol.GetAtoms()] == [
            a.GetAtomicNum() for a in mol.GetAtoms()
        ]
        np.testing.assert_array_equal(
            entry.mol.GetConformer().GetPositions(), mol.GetConformer().GetPositions()
        )
        # Same molecule as RDKit's, charged groups (nitro, ...) included.
        assert _canonical(entry.mol) == _canonical(mol)
        charged += any(a.GetFormalCharge() for a in mol.GetAtoms())
    assert charged > 0  # the set exercises the charge perception


def test_database_export_wrapper_and_gzip(tmp_path: Path) -> None:
    mol = embedded_nci(10)[3]
    document = {"cid": 7, "data": pubchemqc_document(mol, 7)}
    entries = list(iter_source(write_json(tmp_path / "x.json.gz", document, gz=True)))
    assert reasons(entries) == [None]
    assert entries[0].source_id == "7"
    assert _canonical(entries[0].mol) == _canonical(mol)


@pytest.mark.parametrize(
    ("path", "missing"),
    [
        (("pubchem", "B3LYP@PM6"), "pubchem/B3LYP@PM6"),
        (("pubchem", "B3LYP@PM6", "atoms", "coords"), "pubchem/B3LYP@PM6/atoms/coords"),
        (("pubchem", "B3LYP@PM6", "bonds", "order"), "pubchem/B3LYP@PM6/bonds/order"),
    ],
)
def test_missing_key_is_named(tmp_path: Path, path: tuple[str, ...], missing: str) -> None:
    document = copy.deepcopy(pubchemqc_document(embedded_nci(10)[0], 1))
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    entries = list(iter_source(write_json(tmp_path / "m.json", document)))
    assert reasons(entries) == ["invalid_record"]
    assert repr(missing) in str(entries[0].failure)
    assert entries[0].source_id == "1"


def test_wrong_shapes_are_invalid_records() -> None:
    document = pubchemqc_document(embedded_nci(10)[0], 1)
    method = document["pubchem"]["B3LYP@PM6"]
    bad_coords = copy.deepcopy(document)
    bad_coords["pubchem"]["B3LYP@PM6"]["atoms"]["coords"]["3d"] = method["atoms"]["coords"]["3d"][
        :-1
    ]
    bad_index = copy.deepcopy(document)
    bad_index["pubchem"]["B3LYP@PM6"]["bonds"]["connections"]["index"][0] = 10_000
    for broken, words in ((bad_coords, "3 x"), (bad_index, "1-based")):
        with pytest.raises(Exception, match=words) as info:
            mol_from_pubchemqc(broken)
        assert info.value.reason == "invalid_record"


def test_truncated_json_and_truncated_gzip(tmp_path: Path) -> None:
    text_path = write_json(tmp_path / "a.json", pubchemqc_document(embedded_nci(10)[0], 1))
    cut = tmp_path / "cut.json"
    cut.write_text(text_path.read_text()[:200])
    gz = write_json(tmp_path / "b.json.gz", pubchemqc_document(embedded_nci(10)[0], 1), gz=True)
    cut_gz = truncate_gzip(gz, tmp_path / "cut.json.gz", 0.6)
    assert reasons(iter_source(cut)) == ["invalid_json"]
    assert reasons(iter_source(cut_gz)) == ["truncated_file"]


def test_bond_orders_perceived_when_codes_are_not_kekule() -> None:
    # Aromatic bonds coded 12 (RDKit's enum value, as some converters write): perceived.
    mol = next(m for m in embedded_nci(30) if any(b.GetIsAromatic() for b in m.GetBonds()))
    document = pubchemqc_document(mol, 5)
    aromatic = [b.GetIsAromatic() for b in mol.GetBonds()]
    assert any(aromatic)
    order = document["pubchem"]["B3LYP@PM6"]["bonds"]["order"]
    document["pubchem"]["B3LYP@PM6"]["bonds"]["order"] = [
        12 if is_aromatic else value for value, is_aromatic in zip(order, aromatic, strict=True)
    ]
    assert _canonical(mol_from_pubchemqc(document)) == _canonical(mol)


def test_impossible_charge_fails_with_a_reason() -> None:
    document = pubchemqc_document(embedded_nci(10)[0], 1)
    document["pubchem"]["charge"] = 7
    with pytest.raises(Exception, match="total charge 7") as info:
        mol_from_pubchemqc(document)
    assert info.value.reason == "invalid_record"

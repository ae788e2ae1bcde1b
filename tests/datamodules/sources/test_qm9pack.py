"""qm9pack rows → molecules: the SMILES graph placed atom by atom on the DFT coordinates."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import rdDetermineBonds

from molssl.datamodules.sources import iter_source
from molssl.datamodules.sources.entry import SourceError
from molssl.datamodules.sources.packages import PACKAGE_INPUTS, package_input_files
from molssl.datamodules.sources.qm9pack import (
    iter_qm9pack_file,
    mol_from_smiles_and_xyz,
)
from tests.datamodules.qm9pack_files import QM9PACK_HEADER, write_qm9pack
from tests.datamodules.sources.helpers import reasons

# gdb_650 of QM9 (7-oxabicyclo[2.2.1]heptane) as qm9pack ships it: RDKit's default
# connect-the-dots bonds add a 1.95 Å bridgehead contact; a covalent-radius threshold finds the
# SMILES graph.
GDB_650_SMILES = "C1C2CCC1O2"
GDB_650_ELEMENTS = ["C", "C", "C", "C", "C", "O", *["H"] * 8]
GDB_650_XYZ = [
    (-0.0619985189, 1.5953832464, 0.0722210648),
    (1.4621779633, 1.3567599728, -0.0007724973),
    (1.8004864379, 0.7002689522, 1.3552947504),
    (0.6370689227, -0.3449356684, 1.3617285881),
    (0.0121430321, 0.0540641891, 0.0072477808),
    (1.1940393804, 0.191638995, -0.8446720862),
    (-0.4898828354, 2.0771031411, 0.9559317476),
    (-0.4525114605, 2.0243824279, -0.8507370138),
    (2.1636864756, 2.0695705414, -0.434056597),
    (2.7869926469, 0.2330757461, 1.3352953219),
    (1.7628053037, 1.4039364295, 2.1912863862),
    (0.9961811139, -1.3757746965, 1.3451954454),
    (-0.0534272125, -0.2277547732, 2.2013314953),
    (-0.7741030993, -0.5697087434, -0.4178080664),
]


def _bonds(mol: Chem.Mol) -> set[frozenset[int]]:
    return {frozenset((b.GetBeginAtomIdx(), b.GetEndAtomIdx())) for b in mol.GetBonds()}


def test_the_smiles_graph_lands_on_the_coordinates_atom_by_atom(tmp_path: Path) -> None:
    written = write_qm9pack(tmp_path, n=9, parts=1)
    entries = list(iter_qm9pack_file(written.files[0]))
    assert reasons(entries) == [None] * 9
    for entry in entries:
        k = int(entry.source_id.removeprefix("gdb_"))
        mol = entry.mol
        # Atoms in the file's (shuffled) order, coordinates exactly the file's.
        assert [a.GetAtomicNum() for a in mol.GetAtoms()] == written.elements[k]
        np.testing.assert_allclose(
            mol.GetConformer().GetPositions(), written.positions[k], rtol=0, atol=1e-9
        )
        # The chemistry is the SMILES's ...
        expected = Chem.MolToSmiles(Chem.MolFromSmiles(written.smiles[k]), isomericSmiles=False)
        assert Chem.MolToSmiles(Chem.RemoveHs(mol), isomericSmiles=False) == expected
        # ... and its bonds join the atoms the coordinates bond (RDKit's own perception).
        geometry = Chem.RWMol(mol)
        rdDetermineBonds.DetermineConnectivity(geometry)
        assert _bonds(geometry) == _bonds(mol)


def test_a_strained_cage_from_qm9_is_matched_by_a_covalent_threshold() -> None:
    mol = mol_from_smiles_and_xyz(GDB_650_SMILES, GDB_650_ELEMENTS, GDB_650_XYZ)
    assert [a.GetSymbol() for a in mol.GetAtoms()] == GDB_650_ELEMENTS
    positions = mol.GetConformer().GetPositions()
    lengths = [np.linalg.norm(positions[i] - positions[j]) for i, j in map(tuple, _bonds(mol))]
    assert len(lengths) == 15 and max(lengths) < 1.6  # the 1.95 Å contact is no bond


@pytest.mark.parametrize(
    ("smiles", "reason"),
    [
        ("CCO", "connectivity_mismatch"),  # dimethyl ether's atoms, ethanol's bonds
        ("CCC", "composition_mismatch"),
        ("C1CC", "invalid_smiles"),
    ],
)
def test_a_smiles_that_does_not_fit_the_geometry_fails(smiles: str, reason: str) -> None:
    elements = ["C", "O", "C", *["H"] * 6]
    xyz = [
        (0.0, 0.0, 0.0), (1.41, 0.0, 0.0), (1.88, 1.33, 0.0), (-0.36, -1.03, 0.0),
        (-0.36, 0.51, 0.89), (-0.36, 0.51, -0.89), (2.98, 1.33, 0.0), (1.52, 1.85, 0.89),
        (1.52, 1.85, -0.89),
    ]  # fmt: skip
    assert (
        Chem.MolToSmiles(mol_from_smiles_and_xyz("COC", elements, xyz))
        == "[H]C([H])([H])OC([H])([H])[H]"
    )
    with pytest.raises(ValueError) as error:
        mol_from_smiles_and_xyz(smiles, elements, xyz, label="row 7")
    assert error.value.reason == reason  # type: ignore[attr-defined]
    assert "row 7" in str(error.value)


def _rewrite(path: Path, edit: dict[int, dict[str, object]]) -> None:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    for row_number, fields in edit.items():
        for name, value in fields.items():
            rows[row_number][QM9PACK_HEADER.index(name)] = str(value)
    with open(path, "w", newline="") as handle:
        csv.writer(handle, quoting=csv.QUOTE_NONNUMERIC).writerows(rows)


def test_bad_rows_fail_alone_and_every_row_is_counted(tmp_path: Path) -> None:
    written = write_qm9pack(tmp_path, n=7, parts=1)
    path = written.files[0]
    _rewrite(
        path,
        {
            1: {"N_atoms": 99},
            2: {"XYZ_file": "dsgdb9nsd_999999.xyz"},
            3: {"XYZ_Ang": "[[1.0,2.0],[3.0,4.0,5.0]]"},
            5: {"SMILES": "C1CC"},
        },
    )
    entries = list(iter_qm9pack_file(path))
    assert [entry.index for entry in entries] == list(range(7))
    assert [entry.line for entry in entries] == list(range(2, 9))
    assert reasons(entries) == [
        "invalid_record", "invalid_record", "invalid_record", None, "invalid_smiles", None, None
    ]  # fmt: skip
    assert "N_atoms" in str(entries[0].failure) and "XYZ_file" in str(entries[1].failure)
    assert f"{path}:4" in str(entries[2].failure)


def test_iter_source_reads_a_qm9pack_csv_as_3d_and_other_csvs_as_smiles(tmp_path: Path) -> None:
    written = write_qm9pack(tmp_path / "qm9", n=3, parts=1)
    (entry, *_) = list(iter_source(written.files[0]))
    assert entry.mol is not None and entry.mol.GetNumConformers() == 1
    plain = tmp_path / "plain.csv"
    plain.write_text("smiles,id\nCCO,a\n")
    (smiles_entry,) = list(iter_source(plain))
    assert smiles_entry.smiles == "CCO"


def test_a_package_input_names_the_install_command_when_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    for name in ("qm9pack", "moses", "moses:test"):
        with pytest.raises(SourceError) as error:
            package_input_files(name)
        assert error.value.reason == "missing_package"
        assert "pip install" in str(error.value) and "\n" not in str(error.value)


def test_a_package_input_resolves_to_the_installed_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    package = tmp_path / "moses"
    (package / "dataset" / "data").mkdir(parents=True)
    (package / "dataset" / "data" / "train.csv.gz").write_bytes(b"")

    class Spec:
        submodule_search_locations = [str(package)]

    monkeypatch.setattr("importlib.util.find_spec", lambda name: Spec())
    assert package_input_files("moses") == [package / "dataset" / "data" / "train.csv.gz"]
    with pytest.raises(SourceError, match="lacks"):
        package_input_files("moses:test")
    assert set(PACKAGE_INPUTS) >= {"qm9pack", "moses", "moses:train"}

"""Featurization agrees with RDKit's own atom and bond queries on real molecules."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem
from torch_geometric.data import Data

from molssl.chem.conformers import ConformerOptions, conformer_positions, embed_conformers
from molssl.chem.errors import InvalidSmilesError, MoleculeError
from molssl.chem.features import (
    ATOM_FEATURE_DIMS,
    BOND_FEATURE_DIMS,
    ELEMENTS,
    NUM_ELEMENT_CLASSES,
    element_index,
    featurize_smiles,
    mol_from_smiles,
    mol_to_data,
)
from tests.conftest import read_nci_smiles

HYBRIDIZATIONS = ["S", "SP", "SP2", "SP3", "SP3D", "SP3D2"]
CHIRALITIES = ["CHI_UNSPECIFIED", "CHI_TETRAHEDRAL_CW", "CHI_TETRAHEDRAL_CCW"]
BOND_TYPES = ["SINGLE", "DOUBLE", "TRIPLE", "AROMATIC"]
STEREOS = ["STEREONONE", "STEREOANY", "STEREOZ", "STEREOE", "STEREOCIS", "STEREOTRANS"]


def parse_all(smiles: list[str]) -> list[Chem.Mol]:
    out = []
    for text in smiles:
        try:
            out.append(mol_from_smiles(text))
        except MoleculeError:
            continue
    return out


@pytest.fixture(scope="module")
def mols() -> list[Chem.Mol]:
    out = parse_all(read_nci_smiles(150))
    assert len(out) >= 100
    return out


@pytest.fixture(scope="module")
def stereo_smiles(shared_data: Path) -> list[str]:
    """Real molecules with stereo centres or stereo double bonds (NCI's set has none)."""
    smiles = []
    for name, column in [("chembl_samples.csv", "smiles"), ("micro_ZINC.csv", "SMILES")]:
        with open(shared_data / name) as handle:
            smiles += [row[column] for row in csv.DictReader(handle)]
    out = [s for s in smiles if "@" in s or "/" in s or "\\" in s][:200]
    assert len(out) >= 100
    return out


def assert_atoms_match_rdkit(mol: Chem.Mol, data: Data | None = None) -> None:
    """``data`` (default: ``mol_to_data(mol)``) against RDKit's queries on ``mol``."""
    data = mol_to_data(mol) if data is None else data
    x = data.x.numpy()
    assert x.shape == (mol.GetNumAtoms(), len(ATOM_FEATURE_DIMS))
    assert (x < np.asarray(ATOM_FEATURE_DIMS)).all() and (x >= 0).all()
    for atom, row in zip(mol.GetAtoms(), x, strict=True):
        z = atom.GetAtomicNum()
        assert data.z[atom.GetIdx()] == z
        assert row[0] == (ELEMENTS.index(z) if z in ELEMENTS else len(ELEMENTS))
        assert row[1] == min(atom.GetDegree(), 7)
        charge = atom.GetFormalCharge()
        assert row[2] == (charge + 2 if -2 <= charge <= 2 else 5)
        hyb = str(atom.GetHybridization())
        assert row[3] == (HYBRIDIZATIONS.index(hyb) if hyb in HYBRIDIZATIONS else 6)
        assert row[4] == int(atom.GetIsAromatic())
        assert row[5] == min(atom.GetTotalNumHs(includeNeighbors=True), 5)
        tag = str(atom.GetChiralTag())
        assert row[6] == (CHIRALITIES.index(tag) if tag in CHIRALITIES else 3)


def assert_bonds_match_rdkit(mol: Chem.Mol, data: Data | None = None) -> None:
    """``data`` (default: ``mol_to_data(mol)``) against RDKit's queries on ``mol``."""
    data = mol_to_data(mol) if data is None else data
    assert data.edge_index.shape == (2, 2 * mol.GetNumBonds())
    assert data.edge_attr.shape == (2 * mol.GetNumBonds(), len(BOND_FEATURE_DIMS))
    assert (data.edge_attr.numpy() < np.asarray(BOND_FEATURE_DIMS)).all()
    pairs = [tuple(p) for p in data.edge_index.T.tolist()]
    assert len(set(pairs)) == len(pairs)  # each direction once
    assert set(pairs) == {(j, i) for i, j in pairs}
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        kind, stereo = str(bond.GetBondType()), str(bond.GetStereo())
        expected = [
            BOND_TYPES.index(kind) if kind in BOND_TYPES else 4,
            int(bond.GetIsConjugated()),
            int(bond.IsInRing()),
            STEREOS.index(stereo) if stereo in STEREOS else 6,
        ]
        assert data.edge_attr[pairs.index((i, j))].tolist() == expected
        assert data.edge_attr[pairs.index((j, i))].tolist() == expected
    rdkit_pairs = {(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()}
    assert set(pairs) == rdkit_pairs | {(j, i) for i, j in rdkit_pairs}


def test_atom_features_match_rdkit(mols: list[Chem.Mol]) -> None:
    for mol in mols:
        assert_atoms_match_rdkit(mol)


def test_bonds_match_rdkit_and_are_symmetric(mols: list[Chem.Mol]) -> None:
    for mol in mols:
        assert_bonds_match_rdkit(mol)


def test_chirality_and_bond_stereo_match_rdkit(stereo_smiles: list[str]) -> None:
    """Against RDKit's own parse (``MolFromSmiles`` + ``AddHs``), stereo perception included."""
    chiral_atoms = stereo_bonds = 0
    for smiles in stereo_smiles:
        reference = Chem.AddHs(Chem.MolFromSmiles(smiles))
        data = mol_to_data(mol_from_smiles(smiles, max_heavy_atoms=None))
        assert_atoms_match_rdkit(reference, data)
        assert_bonds_match_rdkit(reference, data)
        chiral_atoms += int((data.x[:, 6] > 0).sum())
        stereo_bonds += int((data.edge_attr[:, 3] > 0).sum())
    assert chiral_atoms > 0 and stereo_bonds > 0  # the columns were really exercised


def test_hydrogen_count_does_not_depend_on_explicit_hydrogens(mols: list[Chem.Mol]) -> None:
    for mol in mols[:50]:
        heavy = mol_to_data(Chem.RemoveHs(mol))
        explicit = mol_to_data(mol)
        is_heavy = explicit.z > 1
        # RemoveHs keeps heavy atoms first and in order.
        assert torch.equal(explicit.x[is_heavy][:, 5], heavy.x[:, 5])
        assert torch.equal(explicit.x[is_heavy][:, 0], heavy.x[:, 0])


def test_hydrogens_explicit_by_default_and_optional() -> None:
    with_h = mol_to_data(mol_from_smiles("CCO"))
    without_h = mol_to_data(mol_from_smiles("CCO", add_hs=False))
    assert with_h.num_nodes == 9 and int((with_h.z == 1).sum()) == 6
    assert without_h.num_nodes == 3 and int((without_h.z == 1).sum()) == 0
    assert with_h.smiles == without_h.smiles == "CCO"


def test_pos_equals_conformer_coordinates() -> None:
    mol = mol_from_smiles("c1ccccc1O")
    AllChem.EmbedMolecule(mol, randomSeed=3)
    data = mol_to_data(mol, conf_id=-1)
    expected = mol.GetConformer().GetPositions().astype(np.float32)
    assert data.pos.dtype == torch.float32
    np.testing.assert_array_equal(data.pos.numpy(), expected)
    assert "pos" not in mol_to_data(mol)
    with pytest.raises(ValueError, match="no conformer 7"):
        mol_to_data(mol, conf_id=7)


def test_element_index_table() -> None:
    z = torch.tensor([1, 6, 7, 8, 53, 92, 2])
    classes = element_index(z)
    assert classes.tolist()[:5] == [ELEMENTS.index(v) for v in (1, 6, 7, 8, 53)]
    assert classes[5] == classes[6] == NUM_ELEMENT_CLASSES - 1


def test_featurize_smiles_is_parse_embed_featurize() -> None:
    options = ConformerOptions(num_conformers=2, seed=5)
    data = featurize_smiles("CC(=O)Nc1ccc(O)cc1", options)
    mol = embed_conformers(mol_from_smiles("CC(=O)Nc1ccc(O)cc1"), options)
    expected = mol_to_data(mol, conf_id=0)
    for key in ("z", "x", "edge_index", "edge_attr"):
        assert torch.equal(data[key], expected[key])
    np.testing.assert_array_equal(data.pos.numpy(), conformer_positions(mol)[0].astype(np.float32))
    assert data.smiles == "CC(=O)Nc1ccc(O)cc1" and int((data.z == 1).sum()) == 9


def test_vectorised_features_equal_rdkit_queries_on_nci_and_other_buckets(
    nci_smiles: list[str],
) -> None:
    """Column by column against RDKit's per-atom / per-bond queries, "other" buckets included
    (charges beyond +-2, degree 7+, 5+ hydrogens, unlisted elements, dative bonds)."""
    exotic = ["[Fe-4]", "[U]", "C[N+3]", "FS(F)(F)(F)(F)F", "[I-](F)(F)(F)(F)(F)(F)F", "C[NH3+]"]
    exotic += ["[CH4]", "N->[Pt](<-N)(Cl)Cl", "C/C=C\\Cl", "[H][H]", "[Na+].[Cl-]", "[13CH3]O"]
    mols = parse_all(nci_smiles + exotic)
    assert len(mols) >= 290
    for mol in mols + [Chem.RemoveHs(m) for m in mols[:50]]:
        data = mol_to_data(mol)
        assert data.z.dtype == data.x.dtype == data.edge_index.dtype == torch.long
        assert_atoms_match_rdkit(mol, data)
        assert_bonds_match_rdkit(mol, data)
        # Bond b is columns 2b (begin -> end) and 2b + 1 (end -> begin).
        ends = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()]
        assert data.edge_index[:, 0::2].T.tolist() == [list(e) for e in ends]
        assert data.edge_index[:, 1::2].T.tolist() == [[j, i] for i, j in ends]
    assert mol_to_data(Chem.Mol()).x.shape == (0, len(ATOM_FEATURE_DIMS))


@pytest.mark.parametrize("text", ["c1ccccc1 O", "CC\nO", "CCO\tethanol", "C C"])
def test_whitespace_inside_a_smiles_is_refused_not_read_as_a_name(text: str) -> None:
    # RDKit reads "c1ccccc1 O" as benzene named "O": a CSV cell holding phenol would become
    # benzene, its label on the wrong molecule.
    with pytest.raises(InvalidSmilesError, match="contains whitespace") as caught:
        mol_from_smiles(text)
    assert caught.value.reason == "invalid_smiles"
    assert Chem.MolToSmiles(mol_from_smiles("  c1ccccc1O\n", add_hs=False)) == "Oc1ccccc1"

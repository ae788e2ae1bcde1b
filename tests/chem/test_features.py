"""Featurization agrees with RDKit's own atom and bond queries on real molecules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rdkit import Chem

from molssl.chem.features import (
    ATOM_FEATURE_DIMS,
    BOND_FEATURE_DIMS,
    ELEMENTS,
    NUM_ELEMENT_CLASSES,
    element_index,
    mol_from_smiles,
    mol_to_data,
)
from tests.conftest import read_nci_smiles

HYBRIDIZATIONS = ["S", "SP", "SP2", "SP3", "SP3D", "SP3D2"]


@pytest.fixture(scope="module")
def mols() -> list[Chem.Mol]:
    out = []
    for smiles in read_nci_smiles(150):
        try:
            out.append(mol_from_smiles(smiles))
        except ValueError:
            continue
    assert len(out) >= 100
    return out


def test_atom_features_match_rdkit(mols: list[Chem.Mol]) -> None:
    for mol in mols:
        data = mol_to_data(mol)
        x = data.x.numpy()
        assert x.shape == (mol.GetNumAtoms(), len(ATOM_FEATURE_DIMS))
        assert (x < np.asarray(ATOM_FEATURE_DIMS)).all() and (x >= 0).all()
        for atom, row in zip(mol.GetAtoms(), x, strict=True):
            z = atom.GetAtomicNum()
            assert data.z[atom.GetIdx()] == z
            expected_element = ELEMENTS.index(z) if z in ELEMENTS else len(ELEMENTS)
            assert row[0] == expected_element
            assert row[1] == min(atom.GetDegree(), 7)
            charge = atom.GetFormalCharge()
            assert row[2] == (charge + 2 if -2 <= charge <= 2 else 5)
            hyb = str(atom.GetHybridization())
            assert row[3] == (HYBRIDIZATIONS.index(hyb) if hyb in HYBRIDIZATIONS else 6)
            assert row[4] == int(atom.GetIsAromatic())
            assert row[5] == min(atom.GetTotalNumHs(), 5)


def test_bonds_match_rdkit_and_are_symmetric(mols: list[Chem.Mol]) -> None:
    for mol in mols:
        data = mol_to_data(mol)
        assert data.edge_index.shape == (2, 2 * mol.GetNumBonds())
        assert data.edge_attr.shape == (2 * mol.GetNumBonds(), len(BOND_FEATURE_DIMS))
        pairs = {tuple(p) for p in data.edge_index.T.tolist()}
        assert pairs == {(j, i) for i, j in pairs}
        rdkit_pairs = set()
        for bond in mol.GetBonds():
            i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
            rdkit_pairs |= {(i, j), (j, i)}
        assert pairs == rdkit_pairs
        for b, bond in enumerate(mol.GetBonds()):
            attr = data.edge_attr[2 * b].tolist()
            assert attr == data.edge_attr[2 * b + 1].tolist()
            expected_type = {
                Chem.BondType.SINGLE: 0,
                Chem.BondType.DOUBLE: 1,
                Chem.BondType.TRIPLE: 2,
                Chem.BondType.AROMATIC: 3,
            }.get(bond.GetBondType(), 4)
            assert attr[:3] == [expected_type, int(bond.GetIsConjugated()), int(bond.IsInRing())]


def test_hydrogens_explicit_by_default_and_optional() -> None:
    with_h = mol_to_data(mol_from_smiles("CCO"))
    without_h = mol_to_data(mol_from_smiles("CCO", add_hs=False))
    assert with_h.num_nodes == 9 and int((with_h.z == 1).sum()) == 6
    assert without_h.num_nodes == 3 and int((without_h.z == 1).sum()) == 0
    assert with_h.smiles == without_h.smiles == "CCO"


def test_pos_equals_conformer_coordinates() -> None:
    from rdkit.Chem import AllChem

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

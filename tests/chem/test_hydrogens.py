"""Hydrogen removal against RDKit: a record with explicit hydrogens, its hydrogens removed, is
what molssl's featurisation of ``Chem.RemoveHs(mol)`` gives, key by key, on real molecules."""

from __future__ import annotations

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem.EnumerateStereoisomers import EnumerateStereoisomers, StereoEnumerationOptions

from molssl.chem.conformers import ConformerOptions, embed_conformers
from molssl.chem.features import CHIRAL_CCW, CHIRAL_CW, mol_from_smiles, mol_to_data
from molssl.chem.fragments import brics_fragment_labels
from molssl.chem.graph import AddGraphRelations
from molssl.chem.hydrogens import remove_hydrogens
from molssl.chem.torsions import rotatable_torsions, torsion_moving_masks
from molssl.datamodules.records import record_from_mol
from molssl.datamodules.samples import record_arrays
from tests.conftest import read_nci_smiles

GRAPH_KEYS = ("z", "x", "edge_index", "edge_attr")


def heavy_arrays(mol: Chem.Mol) -> dict[str, np.ndarray]:
    """``mol_to_data`` of the molecule with explicit hydrogens, hydrogens then removed."""
    data = mol_to_data(mol)
    arrays = {key: data[key].numpy() for key in GRAPH_KEYS}
    remove_hydrogens(arrays)
    return arrays


def rdkit_spd(mol: Chem.Mol) -> np.ndarray:
    distances = Chem.GetDistanceMatrix(mol)
    return np.where(distances > 1e6, -1, distances).astype(np.int64)


@pytest.fixture(scope="module")
def nci_mols() -> list[Chem.Mol]:
    """40 real NCI molecules (salts included) with explicit hydrogens and one conformer."""
    smiles_list = read_nci_smiles(300)
    salts = [smiles for smiles in smiles_list if "." in smiles][:4]
    mols = []
    for index, smiles in enumerate(smiles_list[:36] + salts):
        mol = mol_from_smiles(smiles)
        mols.append(embed_conformers(mol, ConformerOptions(seed=index, optimize=False)))
    assert any(len(Chem.GetMolFrags(mol)) > 1 for mol in mols)
    return mols


def test_record_without_hydrogens_is_rdkits_heavy_atom_graph(nci_mols: list[Chem.Mol]) -> None:
    """Every key of a pre-training record against ``Chem.RemoveHs`` of the same molecule: atom
    and bond features (degree recounted, hydrogen count kept), the stored shortest paths,
    coordinates, BRICS fragments and torsions."""
    for index, mol in enumerate(nci_mols):
        arrays = record_arrays(record_from_mol(mol, index))
        for value in arrays.values():
            value.setflags(write=False)  # the record's own arrays: never written into
        remove_hydrogens(arrays)
        heavy = Chem.RemoveHs(mol)
        assert heavy.GetNumAtoms() == mol.GetNumHeavyAtoms()
        reference = mol_to_data(heavy, conf_id=0)
        for key in GRAPH_KEYS:
            np.testing.assert_array_equal(arrays[key], reference[key].numpy(), err_msg=key)
        degrees = [atom.GetDegree() for atom in heavy.GetAtoms()]
        np.testing.assert_array_equal(arrays["x"][:, 1], np.minimum(degrees, 7))
        hydrogens = [atom.GetTotalNumHs() for atom in heavy.GetAtoms()]
        np.testing.assert_array_equal(arrays["x"][:, 5], np.minimum(hydrogens, 5))
        np.testing.assert_allclose(arrays["pos"], reference.pos.numpy(), atol=1e-6)
        np.testing.assert_array_equal(arrays["spd"], rdkit_spd(heavy).reshape(-1))
        np.testing.assert_array_equal(arrays["fragment"], brics_fragment_labels(heavy))
        # The same rotatable bonds, each still a torsion of four heavy atoms, rotating the
        # heavy atoms of its side.
        torsions = arrays["torsion_atoms"]
        bonds = {frozenset(row[1:3]) for row in rotatable_torsions(heavy).tolist()}
        assert {frozenset(row[1:3]) for row in torsions.tolist()} == bonds
        for i, j, k, l in torsions:
            assert {i, k} <= {n.GetIdx() for n in heavy.GetAtomWithIdx(int(j)).GetNeighbors()}
            assert {j, l} <= {n.GetIdx() for n in heavy.GetAtomWithIdx(int(k)).GetNeighbors()}
        np.testing.assert_array_equal(
            arrays["torsion_moving"], torsion_moving_masks(heavy, torsions)
        )


def test_multi_hop_paths_are_those_of_the_heavy_atom_graph(nci_mols: list[Chem.Mol]) -> None:
    """Stored ``path_edges`` keep their heavy pairs with re-numbered edge ids: the paths
    AddGraphRelations finds on the heavy-atom graph itself."""
    relations = AddGraphRelations(max_hops=5)
    for mol in nci_mols[:12]:
        full = relations(mol_to_data(mol))
        arrays = {key: full[key].numpy() for key in (*GRAPH_KEYS, "spd", "path_edges")}
        remove_hydrogens(arrays)
        reference = relations(mol_to_data(Chem.RemoveHs(mol)))
        np.testing.assert_array_equal(arrays["spd"], reference.spd.numpy())
        np.testing.assert_array_equal(arrays["path_edges"], reference.path_edges.numpy())


def stereo_molecules() -> list[str]:
    """NCI molecules with their stereo centres and double bonds assigned (the first isomer)."""
    options = StereoEnumerationOptions(onlyUnassigned=True, maxIsomers=1)
    out = []
    for smiles in read_nci_smiles(200):
        isomer = next(iter(EnumerateStereoisomers(Chem.MolFromSmiles(smiles), options=options)))
        text = Chem.MolToSmiles(isomer)
        if "@" in text:
            out.append(text)
    return out


def test_chirality_tags_follow_rdkit_when_hydrogens_sit_anywhere_in_the_bond_order() -> None:
    """SMILES with explicit hydrogens written in random atom orders put a stereo centre's
    hydrogen anywhere among its bonds; RDKit inverts the tag when removing it is an odd
    permutation, and so must the heavy-atom sample."""
    inverted = 0
    molecules = stereo_molecules()
    assert len(molecules) >= 20
    for smiles in molecules:
        explicit = Chem.AddHs(Chem.MolFromSmiles(smiles))
        for variant in Chem.MolToRandomSmilesVect(explicit, 3, randomSeed=7):
            mol = mol_from_smiles(variant)
            full = mol_to_data(mol)
            before = full.x[:, 6].numpy()[full.z.numpy() > 1]
            assert set(before.tolist()) <= {0, CHIRAL_CW, CHIRAL_CCW}
            arrays = heavy_arrays(mol)
            reference = mol_to_data(Chem.RemoveHs(mol))
            for key in GRAPH_KEYS:
                np.testing.assert_array_equal(arrays[key], reference[key].numpy(), err_msg=variant)
            inverted += int((before != arrays["x"][:, 6]).sum())
    assert inverted > 0, "no removal inverted a tag: the test exercises nothing"


def test_bridging_hydrogen_paths_are_recomputed() -> None:
    """A hydrogen bonded to two heavy atoms (diborane's B-H-B) carries their only path; the
    heavy-atom graph has none, so the stored relations are recomputed, not cut out."""
    edges = np.array([[0, 1, 1, 2, 2, 3, 3, 0], [1, 0, 2, 1, 3, 2, 0, 3]])
    arrays = {
        "z": np.array([5, 1, 5, 1]),
        "edge_index": edges,
        "spd": np.array([[0, 1, 2, 1], [1, 0, 1, 2], [2, 1, 0, 1], [1, 2, 1, 0]]).reshape(-1),
        "path_edges": np.zeros((16, 2), dtype=np.int64),
    }
    remove_hydrogens(arrays)
    np.testing.assert_array_equal(arrays["edge_index"], np.zeros((2, 0), dtype=np.int64))
    np.testing.assert_array_equal(arrays["spd"], [0, -1, -1, 0])
    np.testing.assert_array_equal(arrays["path_edges"], -np.ones((4, 2), dtype=np.int64))


def test_refuses_what_it_cannot_subset_and_leaves_heavy_samples_alone() -> None:
    mol = mol_from_smiles("CCO")
    data = mol_to_data(mol)
    arrays = {key: data[key].numpy() for key in GRAPH_KEYS}
    forces = np.zeros((data.num_nodes, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="'forces'"):
        remove_hydrogens({**arrays, "forces": forces})
    with pytest.raises(ValueError, match="atom features"):
        remove_hydrogens({**arrays, "x": arrays["x"][:, :3]})
    # A torsion through a hydrogen (hydrogen_rotors) has no heavy-atom form.
    butane = mol_from_smiles("CCCC")
    torsions = rotatable_torsions(butane, hydrogen_rotors=True)
    butane_data = mol_to_data(butane)
    assert (butane_data.z.numpy()[torsions] == 1).any()
    with pytest.raises(ValueError, match="torsion"):
        remove_hydrogens({"z": butane_data.z.numpy(), "torsion_atoms": torsions})
    with pytest.raises(ValueError, match="'z'"):
        remove_hydrogens({"pos": forces})
    heavy = heavy_arrays(mol)
    again = dict(heavy)
    remove_hydrogens(again)
    assert all(again[key] is heavy[key] for key in heavy)

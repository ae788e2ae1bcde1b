"""BRICS fragment labels against RDKit's BreakBRICSBonds on real NCI molecules."""

from __future__ import annotations

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import BRICS

from molssl.chem.errors import MoleculeError
from molssl.chem.fragments import (
    _labels_by_search,
    _labels_in_cpp,
    brics_bonds,
    brics_fragment_labels,
)

NUM_MOLECULES = 200


def rdkit_fragments(mol: Chem.Mol) -> set[frozenset[int]]:
    """Atom sets of the pieces of RDKit's BreakBRICSBonds, dummy atoms dropped."""
    broken = BRICS.BreakBRICSBonds(mol)
    n = mol.GetNumAtoms()
    return {frozenset(i for i in frag if i < n) for frag in Chem.GetMolFrags(broken)}


def our_fragments(labels: np.ndarray, atoms: range) -> set[frozenset[int]]:
    return {frozenset(i for i in atoms if labels[i] == f) for f in np.unique(labels[list(atoms)])}


@pytest.fixture(scope="module")
def molecules(nci_smiles: list[str]) -> list[Chem.Mol]:
    return [Chem.MolFromSmiles(s) for s in nci_smiles[:NUM_MOLECULES]]


def test_partition_equals_rdkit_with_and_without_explicit_h(molecules: list[Chem.Mol]) -> None:
    with_cuts = 0
    for mol in molecules:
        expected = rdkit_fragments(mol)
        heavy_atoms = range(mol.GetNumAtoms())
        plain = brics_fragment_labels(mol)
        with_h = brics_fragment_labels(Chem.AddHs(mol))  # AddHs appends H after heavy atoms
        assert plain.dtype == np.int64 and plain.shape == (mol.GetNumAtoms(),)
        assert len(np.unique(with_h)) == len(expected) == len(np.unique(plain))
        assert our_fragments(plain, heavy_atoms) == expected
        np.testing.assert_array_equal(with_h[: mol.GetNumAtoms()], plain)
        with_cuts += len(expected) > 1
    assert with_cuts > NUM_MOLECULES // 2


def test_labels_are_consecutive_in_order_of_lowest_heavy_atom(molecules: list[Chem.Mol]) -> None:
    for mol in molecules:
        labels = brics_fragment_labels(Chem.AddHs(mol))
        heavy = labels[: mol.GetNumAtoms()]
        first_seen = list(dict.fromkeys(heavy.tolist()))
        assert first_seen == list(range(labels.max() + 1))


def test_hydrogens_share_their_heavy_atom_label(molecules: list[Chem.Mol]) -> None:
    for mol in molecules[:60]:
        mol_h = Chem.AddHs(mol)
        labels = brics_fragment_labels(mol_h)
        for atom in mol_h.GetAtoms():
            if atom.GetAtomicNum() == 1:
                (neighbour,) = atom.GetNeighbors()
                assert labels[atom.GetIdx()] == labels[neighbour.GetIdx()]


def test_fragments_are_connected_without_crossing_brics_bonds(molecules: list[Chem.Mol]) -> None:
    for mol in molecules[:60]:
        mol_h = Chem.AddHs(mol)
        labels = brics_fragment_labels(mol_h)
        cut = {tuple(pair) for pair in brics_bonds(mol_h).tolist()}
        for a, b in cut:
            assert labels[a] != labels[b], "a BRICS bond inside one fragment"
        for label in np.unique(labels):
            members = set(np.flatnonzero(labels == label).tolist())
            start = min(members)
            seen, stack = {start}, [start]
            while stack:
                atom = mol_h.GetAtomWithIdx(stack.pop())
                for other in atom.GetNeighbors():
                    j = other.GetIdx()
                    pair = (min(atom.GetIdx(), j), max(atom.GetIdx(), j))
                    if j in members and j not in seen and pair not in cut:
                        seen.add(j)
                        stack.append(j)
            assert seen == members


def test_brics_bonds_are_rdkit_bonds_in_original_indices(molecules: list[Chem.Mol]) -> None:
    for mol in molecules[:60]:
        expected = sorted(tuple(sorted(pair)) for pair, _ in BRICS.FindBRICSBonds(mol))
        # H first in the atom list: indices differ from the heavy-atom copy RDKit sees.
        mol_h = Chem.AddHs(mol)
        order = [a.GetIdx() for a in mol_h.GetAtoms() if a.GetAtomicNum() == 1] + list(
            range(mol.GetNumAtoms())
        )
        shuffled = Chem.RenumberAtoms(mol_h, order)
        new_index = {old: new for new, old in enumerate(order)}
        got = brics_bonds(shuffled).tolist()
        assert got == sorted(sorted((new_index[a], new_index[b])) for a, b in expected)


def test_hydrogens_listed_first_still_never_form_a_fragment(molecules: list[Chem.Mol]) -> None:
    mol = molecules[0]
    mol_h = Chem.AddHs(mol)
    order = [a.GetIdx() for a in mol_h.GetAtoms() if a.GetAtomicNum() == 1] + list(
        range(mol.GetNumAtoms())
    )
    labels = brics_fragment_labels(Chem.RenumberAtoms(mol_h, order))
    assert len(np.unique(labels)) == len(rdkit_fragments(mol))


@pytest.mark.parametrize(
    ("smiles", "expected"),
    [
        ("c1ccccc1", [0] * 6),  # no BRICS bond: one fragment
        ("CCOC(=O)c1ccccc1", None),  # ester + aryl: several
        ("[Na+].[Cl-]", [0, 1]),  # two ions, two components
        ("[H][H].c1ccccc1", [1, 1, 0, 0, 0, 0, 0, 0]),  # H-only component after heavy ones
    ],
)
def test_edge_cases(smiles: str, expected: list[int] | None) -> None:
    mol = Chem.MolFromSmiles(smiles)
    labels = brics_fragment_labels(mol)
    if expected is None:
        assert len(np.unique(labels)) == len(rdkit_fragments(mol)) > 1
    else:
        assert labels.tolist() == expected


def test_with_featurized_molecule() -> None:
    features = pytest.importorskip("molssl.chem.features")
    mol = features.mol_from_smiles("CC(=O)Oc1ccccc1C(=O)O")  # aspirin, explicit H
    labels = brics_fragment_labels(mol)
    assert labels.shape == (mol.GetNumAtoms(),)
    assert len(np.unique(labels)) == len(rdkit_fragments(Chem.RemoveHs(mol)))


def test_bad_input_is_a_typed_error() -> None:
    with pytest.raises(TypeError, match=r"Chem\.Mol"):
        brics_fragment_labels("CCO")  # type: ignore[arg-type]
    unsanitised = Chem.MolFromSmiles("C(C)(C)(C)(C)C", sanitize=False)  # pentavalent C
    with pytest.raises(MoleculeError) as info:
        brics_fragment_labels(unsanitised)
    assert info.value.reason == "fragmentation_failed"
    assert brics_fragment_labels(Chem.Mol()).shape == (0,)


def test_cpp_labels_equal_the_search_over_python_brics_bonds(nci_smiles: list[str]) -> None:
    """The C++ path (FragmentOnBRICSBonds) against the breadth-first search over the bonds
    RDKit's Python BRICS rules cut, with explicit hydrogens, on 300 NCI molecules."""
    compared = 0
    for smiles in nci_smiles:
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            continue
        for variant in (Chem.AddHs(mol), mol):
            fast = _labels_in_cpp(variant)
            assert fast is not None, smiles
            expected = _labels_by_search(variant, brics_bonds(variant))
            np.testing.assert_array_equal(fast, expected, err_msg=smiles)
            np.testing.assert_array_equal(brics_fragment_labels(variant), expected)
        compared += 1
    assert compared >= 290
    # Hydrogens not hanging on one heavy atom take the search path.
    for odd in ("[H][H].c1ccccc1", "[H+].CCOC(=O)c1ccccc1", "[2H]OC(=O)CC"):
        mol = Chem.MolFromSmiles(odd, sanitize=True)
        mol_h = Chem.AddHs(mol)
        expected = _labels_by_search(mol_h, brics_bonds(mol_h))
        np.testing.assert_array_equal(brics_fragment_labels(mol_h), expected)

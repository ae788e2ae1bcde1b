"""Tests of molssl.chem.torsions against RDKit (SMARTS, fragments, SetDihedralRad)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import rdMolTransforms as MolTransforms

from molssl.chem.conformers import ConformerOptions, embed_conformers
from molssl.chem.errors import MoleculeError
from molssl.chem.features import mol_from_smiles
from molssl.chem.torsions import (
    ROTATABLE_BOND_SMARTS,
    apply_torsion_deltas,
    perturb_torsions,
    rotatable_torsions,
    torsion_moving_masks,
)
from tests.conftest import read_nci_smiles

ROTATABLE_QUERY = Chem.MolFromSmarts(ROTATABLE_BOND_SMARTS)
# No MMFF: the parity tests need real geometries, not relaxed ones, and this keeps them fast.
EMBED_OPTIONS = ConformerOptions(seed=20240611, optimize=False, timeout_s=10.0)
NUM_NCI_MOLECULES = 300


def _embed(smiles: str) -> Chem.Mol | None:
    """Explicit-H molecule with one seeded ETKDG conformer (no force-field clean-up), or None."""
    try:
        return embed_conformers(mol_from_smiles(smiles), EMBED_OPTIONS)
    except MoleculeError:
        return None


@pytest.fixture(scope="module")
def embedded_nci() -> list[Chem.Mol]:
    """Real NCI molecules with explicit hydrogens and a fixed-seed ETKDG conformer."""
    mols = [_embed(smiles) for smiles in read_nci_smiles(NUM_NCI_MOLECULES)]
    return [mol for mol in mols if mol is not None]


def _smarts_bonds(mol: Chem.Mol) -> set[frozenset[int]]:
    return {
        frozenset(match) for match in mol.GetSubstructMatches(ROTATABLE_QUERY, maxMatches=10**6)
    }


def _torsion_bonds(torsions: np.ndarray) -> set[frozenset[int]]:
    return {frozenset((j, k)) for _, j, k, _ in torsions.tolist()}


def _rdkit_perturbed(mol: Chem.Mol, torsions: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """RDKit reference: SetDihedralRad(old + delta) on a copy, torsion after torsion."""
    copy = Chem.Mol(mol)
    conf = copy.GetConformer()
    for (i, j, k, l), delta in zip(torsions.tolist(), deltas.tolist(), strict=True):
        old = MolTransforms.GetDihedralRad(conf, i, j, k, l)
        MolTransforms.SetDihedralRad(conf, i, j, k, l, old + delta)
    return conf.GetPositions()


def _distances(pos: np.ndarray) -> np.ndarray:
    return np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)


def _wrapped(angle: np.ndarray | float) -> np.ndarray:
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


def _bond_angle(pos: np.ndarray, a: int, b: int, c: int) -> float:
    u, v = pos[a] - pos[b], pos[c] - pos[b]
    return math.atan2(np.linalg.norm(np.cross(u, v)), float(np.dot(u, v)))


def _read_column(path: Path, column: str, limit: int) -> list[str]:
    with open(path, newline="") as fh:
        return [row[column] for _, row in zip(range(limit), csv.DictReader(fh), strict=False)]


# --- which bonds, which atoms -------------------------------------------------------------


def test_rotatable_bonds_are_the_smarts_matches_on_the_heavy_atom_graph(
    nci_smiles: list[str],
) -> None:
    checked = 0
    for smiles in nci_smiles:
        implicit = Chem.MolFromSmiles(smiles)
        if implicit is None:
            continue
        # AddHs appends hydrogens after the heavy atoms: heavy-atom indices are shared.
        explicit = Chem.AddHs(implicit)
        assert _torsion_bonds(rotatable_torsions(explicit)) == _smarts_bonds(implicit), smiles
        assert _torsion_bonds(rotatable_torsions(implicit)) == _smarts_bonds(implicit), smiles
        literal = rotatable_torsions(explicit, hydrogen_rotors=True)
        assert _torsion_bonds(literal) == _smarts_bonds(explicit), smiles
        checked += 1
    assert checked >= 290


def test_drug_like_chembl_bonds_match_smarts(shared_data: Path) -> None:
    smiles_list = _read_column(shared_data / "chembl_samples.csv", "smiles", 500)
    with_torsions = 0
    for smiles in smiles_list:
        implicit = Chem.MolFromSmiles(smiles)
        if implicit is None:
            continue
        torsions = rotatable_torsions(Chem.AddHs(implicit))
        assert _torsion_bonds(torsions) == _smarts_bonds(implicit), smiles
        with_torsions += len(torsions) > 0
    assert with_torsions >= 400


def test_torsion_atoms_are_chosen_deterministically(embedded_nci: list[Chem.Mol]) -> None:
    for mol in embedded_nci:
        torsions = rotatable_torsions(mol)
        assert torsions.dtype == np.int64
        assert torsions.shape == (len(torsions), 4)
        bond_ids = [mol.GetBondBetweenAtoms(j, k).GetIdx() for _, j, k, _ in torsions.tolist()]
        assert bond_ids == sorted(bond_ids)
        for i, j, k, l in torsions.tolist():
            bond = mol.GetBondBetweenAtoms(j, k)
            assert bond.GetBondType() == Chem.BondType.SINGLE and not bond.IsInRing()
            for end, other, chosen in ((j, k, i), (k, j, l)):
                atom = mol.GetAtomWithIdx(end)
                assert not any(b.GetBondType() == Chem.BondType.TRIPLE for b in atom.GetBonds())
                heavy = sorted(
                    n.GetIdx()
                    for n in atom.GetNeighbors()
                    if n.GetIdx() != other and n.GetAtomicNum() > 1
                )
                assert chosen == heavy[0]
        assert np.array_equal(torsions, rotatable_torsions(Chem.Mol(mol)))


@pytest.mark.parametrize(
    ("smiles", "expected_bonds", "expected_with_hydrogen_rotors"),
    [
        ("CCCC", 1, 3),  # butane: only C2-C3 joins two non-terminal heavy atoms
        ("c1ccc(cc1)-c1ccccc1", 1, 1),  # biphenyl: the inter-ring bond, not the ring bonds
        ("C1CCCCC1CC1CCCCC1", 2, 2),
        ("CC(C)C#CC(C)C", 0, 4),  # bonds to a triple-bonded atom never rotate
        ("N#CC(C#N)C#N", 0, 0),
        ("C1CC2CCC1CC2", 0, 0),  # bicyclic: every bond on a ring
        ("CC(=O)NC", 1, 3),  # amide C-N is matched; methyls are terminal
    ],
)
def test_ring_triple_and_terminal_bonds_are_never_rotors(
    smiles: str, expected_bonds: int, expected_with_hydrogen_rotors: int
) -> None:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert len(rotatable_torsions(mol)) == expected_bonds
    assert len(rotatable_torsions(mol, hydrogen_rotors=True)) == expected_with_hydrogen_rotors
    for _, j, k, _ in rotatable_torsions(mol, hydrogen_rotors=True).tolist():
        assert not mol.GetBondBetweenAtoms(j, k).IsInRing()


# --- moving sides ---------------------------------------------------------------------------


def test_moving_masks_are_the_fragment_of_k_after_cutting_the_bond(
    embedded_nci: list[Chem.Mol],
) -> None:
    checked = 0
    for mol in embedded_nci:
        torsions = rotatable_torsions(mol, hydrogen_rotors=True)
        masks = torsion_moving_masks(mol, torsions)
        assert masks.dtype == bool and masks.shape == (len(torsions), mol.GetNumAtoms())
        for (_, j, k, _), mask in zip(torsions.tolist(), masks, strict=True):
            bond = mol.GetBondBetweenAtoms(j, k).GetIdx()
            cut = Chem.FragmentOnBonds(mol, [bond], addDummies=False)
            fragments = Chem.GetMolFrags(cut, asMols=False, sanitizeFrags=False)
            k_side = next(f for f in fragments if k in f)
            j_side = next(f for f in fragments if j in f)
            assert set(np.flatnonzero(mask).tolist()) == set(k_side)
            assert len(k_side) <= len(j_side)  # the smaller side is the one that moves
            checked += 1
    assert checked >= 1000


def test_masks_from_edge_index_equal_masks_from_mol(embedded_nci: list[Chem.Mol]) -> None:
    for mol in embedded_nci[:100]:
        torsions = rotatable_torsions(mol)
        expected = torsion_moving_masks(mol, torsions)
        pairs = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()]
        one_way = np.asarray(pairs, dtype=np.int64).reshape(-1, 2).T
        both_ways = np.concatenate([one_way, one_way[::-1]], axis=1)
        n = mol.GetNumAtoms()
        assert np.array_equal(torsion_moving_masks(both_ways, torsions, num_nodes=n), expected)
        assert np.array_equal(torsion_moving_masks(one_way, torsions, num_nodes=n), expected)
        as_tensor = torch.from_numpy(both_ways)
        assert np.array_equal(torsion_moving_masks(as_tensor, torsions, num_nodes=n), expected)


def test_salts_keep_the_counter_ion_still() -> None:
    # Hydrogens left implicit so that the isolated sodium is the last atom.
    mol = Chem.MolFromSmiles("CCCCCC(=O)[O-].[Na+]")
    torsions = rotatable_torsions(mol)
    masks = torsion_moving_masks(mol, torsions)
    sodium = mol.GetNumAtoms() - 1
    assert mol.GetAtomWithIdx(sodium).GetSymbol() == "Na"
    assert len(torsions) == 4 and not masks[:, sodium].any()
    edge_index = np.array([[b.GetBeginAtomIdx(), b.GetEndAtomIdx()] for b in mol.GetBonds()]).T
    with pytest.raises(ValueError, match="num_nodes"):
        # Without num_nodes the trailing ion is invisible; apply says so instead of crashing.
        pos = np.zeros((mol.GetNumAtoms(), 3))
        apply_torsion_deltas(pos, torsions, torsion_moving_masks(edge_index, torsions), [0.1] * 4)


# --- coordinates ----------------------------------------------------------------------------


def test_parity_with_rdkit_set_dihedral_on_every_distance(embedded_nci: list[Chem.Mol]) -> None:
    rng = np.random.default_rng(0)
    molecules_with_torsions = single_fragment = 0
    for mol in embedded_nci:
        torsions = rotatable_torsions(mol)
        if len(torsions) == 0:
            continue
        molecules_with_torsions += 1
        pos = mol.GetConformer().GetPositions()
        deltas = rng.uniform(-np.pi, np.pi, size=len(torsions))
        ours = apply_torsion_deltas(pos, torsions, torsion_moving_masks(mol, torsions), deltas)
        reference = _rdkit_perturbed(mol, torsions, deltas)
        assert np.abs(_distances(ours) - _distances(reference)).max() < 1e-4
        # Both move k's side, so even the coordinates agree, not only the shape.
        assert np.abs(ours - reference).max() < 1e-6
        # Moving j's side instead (reversed torsion) differs only by a rigid motion, as long
        # as there is no other fragment (a counter-ion stays put with the side that stays).
        if len(Chem.GetMolFrags(mol)) == 1:
            reversed_sides = _rdkit_perturbed(mol, torsions[:, ::-1].copy(), deltas)
            assert np.abs(_distances(ours) - _distances(reversed_sides)).max() < 1e-4
            single_fragment += 1
        assert np.array_equal(perturb_torsions(mol, pos, torsions, deltas), ours)
    assert molecules_with_torsions >= 200 and single_fragment >= 150


def test_each_dihedral_rises_by_its_delta(embedded_nci: list[Chem.Mol]) -> None:
    rng = np.random.default_rng(1)
    checked = 0
    for mol in embedded_nci:
        torsions = rotatable_torsions(mol)
        if len(torsions) == 0:
            continue
        conf = mol.GetConformer()
        pos = conf.GetPositions()
        deltas = rng.normal(0.0, 1.0, size=len(torsions))
        new = perturb_torsions(mol, pos, torsions, deltas)
        moved = Chem.Conformer(conf)
        for atom, xyz in enumerate(new.tolist()):
            moved.SetAtomPosition(atom, xyz)
        for (i, j, k, l), delta in zip(torsions.tolist(), deltas.tolist(), strict=True):
            # A dihedral is undefined when i-j-k or j-k-l is straight; none should be, but a
            # distorted ETKDG geometry must not turn into a false failure here.
            if min(_bond_angle(pos, i, j, k), _bond_angle(pos, j, k, l)) < 0.05:
                continue
            before = MolTransforms.GetDihedralRad(conf, i, j, k, l)
            after = MolTransforms.GetDihedralRad(moved, i, j, k, l)
            assert abs(_wrapped(after - before - delta)) < 1e-6
            checked += 1
    assert checked >= 800


def test_bond_lengths_and_bond_angles_are_unchanged(embedded_nci: list[Chem.Mol]) -> None:
    rng = np.random.default_rng(2)
    for mol in embedded_nci[:150]:
        torsions = rotatable_torsions(mol, hydrogen_rotors=True)
        pos = mol.GetConformer().GetPositions()
        new = perturb_torsions(mol, pos, torsions, rng.uniform(-np.pi, np.pi, len(torsions)))
        for bond in mol.GetBonds():
            a, b = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
            assert abs(np.linalg.norm(new[a] - new[b]) - np.linalg.norm(pos[a] - pos[b])) < 1e-9
        for centre in mol.GetAtoms():
            neighbours = [n.GetIdx() for n in centre.GetNeighbors()]
            b = centre.GetIdx()
            for x, a in enumerate(neighbours):
                for c in neighbours[x + 1 :]:
                    assert abs(_bond_angle(new, a, b, c) - _bond_angle(pos, a, b, c)) < 1e-9


def test_zero_deltas_are_the_identity_and_inputs_are_untouched(
    embedded_nci: list[Chem.Mol],
) -> None:
    for mol in embedded_nci[:50]:
        torsions = rotatable_torsions(mol)
        masks = torsion_moving_masks(mol, torsions)
        pos32 = mol.GetConformer().GetPositions().astype(np.float32)
        kept = pos32.copy()
        out = apply_torsion_deltas(pos32, torsions, masks, np.zeros(len(torsions)))
        assert out.dtype == np.float64 and out.shape == pos32.shape
        assert np.allclose(out, pos32, atol=1e-12, rtol=0)
        assert np.array_equal(pos32, kept)
        out = apply_torsion_deltas(pos32, torsions, masks, np.full(len(torsions), 0.3))
        assert np.array_equal(pos32, kept)


def test_full_turns_come_back_to_the_start(embedded_nci: list[Chem.Mol]) -> None:
    mol = next(m for m in embedded_nci if len(rotatable_torsions(m)) >= 3)
    torsions = rotatable_torsions(mol)
    pos = mol.GetConformer().GetPositions()
    turned = perturb_torsions(mol, pos, torsions, np.full(len(torsions), 2 * np.pi))
    assert np.allclose(turned, pos, atol=1e-9, rtol=0)
    there = perturb_torsions(mol, pos, torsions, np.full(len(torsions), 0.7))
    # Undo in reverse order: each rotation's axis is where the earlier ones left it.
    back = perturb_torsions(mol, there, torsions[::-1].copy(), np.full(len(torsions), -0.7))
    assert np.allclose(back, pos, atol=1e-9, rtol=0)


@pytest.mark.parametrize(
    "smiles", ["c1ccccc1", "C1CCCCC1", "CC", "O", "[Na+].[Cl-]", "CC#CC", "C1CC2CCC1CC2"]
)
def test_molecules_without_rotatable_bonds(smiles: str) -> None:
    mol = _embed(smiles)
    assert mol is not None
    torsions = rotatable_torsions(mol)
    assert torsions.shape == (0, 4) and torsions.dtype == np.int64
    masks = torsion_moving_masks(mol, torsions)
    assert masks.shape == (0, mol.GetNumAtoms())
    pos = mol.GetConformer().GetPositions()
    assert np.array_equal(perturb_torsions(mol, pos, torsions, np.zeros(0)), pos)
    assert np.array_equal(apply_torsion_deltas(pos, torsions, masks, []), pos)


# --- bad input ------------------------------------------------------------------------------


def test_bad_input_gives_clear_errors() -> None:
    mol = _embed("CCCCO")
    assert mol is not None
    pos = mol.GetConformer().GetPositions()
    torsions = rotatable_torsions(mol)
    masks = torsion_moving_masks(mol, torsions)
    ring = Chem.AddHs(Chem.MolFromSmiles("C1CCCCC1C"))
    with pytest.raises(TypeError, match="RDKit Mol"):
        rotatable_torsions("CCCC")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ring"):
        torsion_moving_masks(ring, np.array([[0, 1, 2, 3]]))
    with pytest.raises(ValueError, match="not bonded"):
        torsion_moving_masks(mol, np.array([[0, 1, 3, 4]]))
    with pytest.raises(ValueError, match="outside"):
        torsion_moving_masks(mol, np.array([[0, 1, 2, 99]]))
    with pytest.raises(ValueError, match=r"\(T, 4\)"):
        torsion_moving_masks(mol, np.array([[0, 1, 2]]))
    with pytest.raises(ValueError, match=r"\(2, E\)"):
        torsion_moving_masks(np.zeros((3, 4), dtype=np.int64), torsions)
    with pytest.raises(ValueError, match=r"moving_masks \(T, N\)"):
        apply_torsion_deltas(pos[:-1], torsions, masks, np.zeros(len(torsions)))
    with pytest.raises(ValueError, match="deltas_rad"):
        apply_torsion_deltas(pos, torsions, masks, np.zeros(len(torsions) + 1))
    with pytest.raises(ValueError, match="not finite"):
        apply_torsion_deltas(pos, torsions, masks, np.full(len(torsions), np.nan))
    with pytest.raises(ValueError, match="integer"):
        apply_torsion_deltas(pos, torsions.astype(float), masks, np.zeros(len(torsions)))
    collapsed = pos.copy()
    collapsed[torsions[0, 2]] = collapsed[torsions[0, 1]]
    with pytest.raises(ValueError, match="coincide"):
        apply_torsion_deltas(collapsed, torsions, masks, np.zeros(len(torsions)))
    with pytest.raises(ValueError, match="shape"):
        perturb_torsions(mol, pos[:, :2], torsions, np.zeros(len(torsions)))


def test_distance_matrix_masks_equal_the_bridge_search_on_300_nci(nci_smiles: list[str]) -> None:
    """Molecules take RDKit's distance matrix, edge indices the bridge search: same masks,
    hydrogen rotors and counter-ions included."""
    compared = 0
    for smiles in [*nci_smiles, "CCCC[N+](C)(C)C.[Cl-]", "OCCO.CCCO"]:
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            continue
        mol = Chem.AddHs(mol)
        edge_index = np.array([[b.GetBeginAtomIdx(), b.GetEndAtomIdx()] for b in mol.GetBonds()])
        edge_index = edge_index.T.reshape(2, -1)
        for rotors in (False, True):
            torsions = rotatable_torsions(mol, hydrogen_rotors=rotors)
            expected = torsion_moving_masks(edge_index, torsions, num_nodes=mol.GetNumAtoms())
            np.testing.assert_array_equal(torsion_moving_masks(mol, torsions), expected)
            compared += len(torsions)
    assert compared > 1000

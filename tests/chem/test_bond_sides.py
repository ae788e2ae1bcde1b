"""Tests of molssl.chem.bond_sides against brute force (search after cutting each bond)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rdkit import Chem

from molssl.chem.bond_sides import BondSides, adjacency_lists, edge_index_adjacency, mol_bonds


def _reachable_without(adjacency: list[list[int]], start: int, cut: tuple[int, int]) -> set[int]:
    """Brute force: vertices reached from ``start`` without crossing the edge ``cut``."""
    blocked = {cut, cut[::-1]}
    seen, stack = {start}, [start]
    while stack:
        v = stack.pop()
        for w in adjacency[v]:
            if (v, w) not in blocked and w not in seen:
                seen.add(w)
                stack.append(w)
    return seen


def _check_every_edge(adjacency: list[list[int]], edges: list[tuple[int, int]]) -> int:
    sides = BondSides(adjacency)
    bridges = 0
    for j, k in edges:
        k_side = _reachable_without(adjacency, k, (j, k))
        if j in k_side:
            with pytest.raises(ValueError, match="ring"):
                sides.side_size(j, k)
            continue
        bridges += 1
        assert sides.side_size(j, k) == len(k_side)
        assert sides.side_size(k, j) == len(_reachable_without(adjacency, j, (j, k)))
        child = sides.cut_child(j, k)
        below = {
            v
            for v in range(len(adjacency))
            if 0 <= sides.preorder[v] - sides.preorder[child] < sides.subtree_size(child)
        }
        assert below == (k_side if child == k else _reachable_without(adjacency, j, (j, k)))
    return bridges


def test_sides_of_every_bond_of_real_molecules(nci_smiles: list[str]) -> None:
    bridges = 0
    for smiles in nci_smiles[:150]:
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            continue
        mol = Chem.AddHs(mol)
        bonds = mol_bonds(mol)
        assert bonds == [(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()]
        adjacency = adjacency_lists(mol.GetNumAtoms(), bonds)
        bridges += _check_every_edge(adjacency, bonds)
        sides = BondSides(adjacency)
        for bond in mol.GetBonds():
            # RDKit's ring perception agrees with the bridge test.
            j, k = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
            if bond.IsInRing():
                with pytest.raises(ValueError, match="ring"):
                    sides.cut_child(j, k)
    assert bridges > 3000


def test_random_graphs_with_cycles_and_components() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 25))
        edges = {(int(rng.integers(0, v)), v) for v in range(1, n) if rng.random() < 0.85}
        for _ in range(int(rng.integers(0, 4))):
            a, b = sorted(rng.choice(n, size=2, replace=True).tolist())
            if a != b:
                edges.add((a, b))
        edge_list = sorted(edges)
        adjacency = adjacency_lists(n, edge_list)
        _check_every_edge(adjacency, edge_list)
        sides = BondSides(adjacency)
        sizes = sorted(sides.component_size.values())
        assert sum(sizes) == n


def test_edge_index_adjacency_symmetrises_and_validates() -> None:
    one_way = np.array([[0, 1, 2, 2], [1, 2, 3, 2]])  # the self-loop 2-2 is dropped
    expected = [[1], [0, 2], [1, 3], [2], []]
    assert edge_index_adjacency(one_way, num_nodes=5) == expected
    both = np.concatenate([one_way, one_way[::-1]], axis=1)
    assert edge_index_adjacency(torch.from_numpy(both), num_nodes=5) == expected
    assert edge_index_adjacency(both, num_nodes=None) == expected[:4]
    assert edge_index_adjacency(np.zeros((2, 0), dtype=np.int64), num_nodes=3) == [[], [], []]
    with pytest.raises(ValueError, match=r"\(2, E\)"):
        edge_index_adjacency(np.zeros((3, 2), dtype=np.int64), None)
    with pytest.raises(ValueError, match="integer"):
        edge_index_adjacency(one_way.astype(float), None)
    with pytest.raises(ValueError, match="outside"):
        edge_index_adjacency(one_way, num_nodes=3)
    with pytest.raises(ValueError, match="not bonded"):
        BondSides(expected).cut_child(0, 3)

"""Which side of a bond each atom is on: bridges and bond sides of a molecular graph.

Used by :mod:`molssl.chem.torsions` to orient torsions (the smaller side moves) and to build
their moving-side masks, from an RDKit molecule or a PyG ``edge_index`` alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from rdkit import Chem

__all__ = ["BondSides", "adjacency_lists", "edge_index_adjacency", "mol_bonds"]


class BondSides:
    """Which atoms lie on each side of a bond: a depth-first spanning forest with low-links.

    One linear pass (Tarjan's bridge search) over the graph; after it, the subtree of ``v``
    is the set of vertices whose preorder index lies in ``[preorder[v], last_in_subtree[v]]``,
    and a tree edge ``parent[c] - c`` is a bridge (its removal disconnects the graph) iff
    ``low[c] > preorder[parent[c]]``. This answers "which side of bond j-k" for every acyclic
    bond at once, where a search per bond would cost a pass per bond.

    Args:
        adjacency: Neighbour list of every vertex (symmetric, no duplicates).

    Attributes:
        preorder: Preorder index of each vertex.
        last_in_subtree: Largest preorder index in each vertex's subtree.
        parent: Parent in the forest, ``-1`` for roots.
        low: Tarjan low-link of each vertex.
        root_of: Root vertex of each vertex's connected component.
        component_size: Number of vertices of each component, keyed by root.
    """

    def __init__(self, adjacency: Sequence[Sequence[int]]) -> None:
        n = len(adjacency)
        preorder = [-1] * n
        low = [0] * n
        parent = [-1] * n
        last_in_subtree = [0] * n
        root_of = [-1] * n
        timer = 0
        for root in range(n):
            if preorder[root] != -1:
                continue
            preorder[root] = low[root] = timer
            timer += 1
            root_of[root] = root
            # An explicit stack of neighbour iterators: recursion would overflow on long
            # chains (polymers, peptides) long before any realistic molecule size limit.
            stack = [(root, iter(adjacency[root]))]
            while stack:
                v, neighbours = stack[-1]
                descended = False
                for w in neighbours:
                    if preorder[w] == -1:
                        parent[w] = v
                        preorder[w] = low[w] = timer
                        timer += 1
                        root_of[w] = root
                        stack.append((w, iter(adjacency[w])))
                        descended = True
                        break
                    if w != parent[v] and preorder[w] < low[v]:
                        low[v] = preorder[w]
                if descended:
                    continue
                stack.pop()
                last_in_subtree[v] = timer - 1
                if stack:
                    p = stack[-1][0]
                    if low[v] < low[p]:
                        low[p] = low[v]
        self.adjacency = adjacency
        self.preorder = preorder
        self.low = low
        self.parent = parent
        self.last_in_subtree = last_in_subtree
        self.root_of = root_of
        roots, counts = np.unique(np.asarray(root_of, dtype=np.int64), return_counts=True)
        self.component_size = dict(zip(roots.tolist(), counts.tolist(), strict=True))

    def subtree_size(self, v: int) -> int:
        """Number of vertices in the forest subtree of ``v`` (``v`` included)."""
        return self.last_in_subtree[v] - self.preorder[v] + 1

    def cut_child(self, j: int, k: int) -> int:
        """The endpoint of bond ``j-k`` lying below the other in the forest.

        Raises:
            ValueError: If ``j-k`` is not a bond of the graph, or lies on a ring.
        """
        if self.parent[k] == j:
            child, above = k, j
        elif self.parent[j] == k:
            child, above = j, k
        elif k in self.adjacency[j]:
            # A bond that is not a tree edge closes a cycle.
            raise ValueError(f"bond {j}-{k} lies on a ring: cutting it does not split the molecule")
        else:
            raise ValueError(f"atoms {j} and {k} are not bonded; j-k must be a bond")
        if self.low[child] <= self.preorder[above]:
            raise ValueError(f"bond {j}-{k} lies on a ring: cutting it does not split the molecule")
        return child

    def side_size(self, j: int, k: int) -> int:
        """Number of atoms on ``k``'s side of the bond ``j-k``."""
        child = self.cut_child(j, k)
        below = self.subtree_size(child)
        return below if child == k else self.component_size[self.root_of[k]] - below


def mol_bonds(mol: Chem.Mol) -> list[tuple[int, int]]:
    """``(begin, end)`` atom indices of every bond, in RDKit bond-index order."""
    # Indexed access: iterating mol.GetBonds() goes through a slow Python sequence wrapper
    # (about 4x the cost per bond).
    bond_at = mol.GetBondWithIdx
    return [
        (bond.GetBeginAtomIdx(), bond.GetEndAtomIdx())
        for bond in map(bond_at, range(mol.GetNumBonds()))
    ]


def adjacency_lists(num_atoms: int, bonds: list[tuple[int, int]]) -> list[list[int]]:
    """Neighbour list of every atom from a list of undirected bonds."""
    adjacency: list[list[int]] = [[] for _ in range(num_atoms)]
    for a, b in bonds:
        adjacency[a].append(b)
        adjacency[b].append(a)
    return adjacency


def edge_index_adjacency(edge_index: Any, num_nodes: int | None) -> list[list[int]]:
    """Neighbour lists from a PyG-style ``(2, E)`` edge index (NumPy array or torch tensor).

    Args:
        edge_index: Integer atom pairs, one or both directions; self-loops are ignored.
        num_nodes: Number of atoms; ``None`` means the largest index + 1, which misses
            trailing isolated atoms such as a counter-ion.

    Raises:
        ValueError: Wrong shape or dtype, or an index outside ``[0, num_nodes)``.
    """
    # Duck-typed so that a torch LongTensor works without this module importing torch.
    if hasattr(edge_index, "detach"):
        edge_index = edge_index.detach().cpu().numpy()
    edges = np.asarray(edge_index)
    if edges.ndim != 2 or edges.shape[0] != 2:
        raise ValueError(f"edge_index must have shape (2, E); got {edges.shape}")
    if edges.size and not np.issubdtype(edges.dtype, np.integer):
        raise ValueError(f"edge_index must hold integer atom indices; got dtype {edges.dtype}")
    if num_nodes is None:
        num_nodes = int(edges.max()) + 1 if edges.size else 0
    if edges.size and (edges.min() < 0 or edges.max() >= num_nodes):
        raise ValueError(f"edge_index refers to atoms outside [0, {num_nodes})")
    neighbour_sets: list[set[int]] = [set() for _ in range(num_nodes)]
    for a, b in edges.T.tolist():
        if a != b:
            # Symmetrised and deduplicated: PyG stores both directions, but a one-directional
            # edge list describes the same molecule.
            neighbour_sets[a].add(b)
            neighbour_sets[b].add(a)
    return [sorted(s) for s in neighbour_sets]

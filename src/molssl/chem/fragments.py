"""BRICS fragment label of every atom, for UniCorn's fragment masking.

The molecule is cut at its BRICS bonds (``BRICS.FindBRICSBonds``) and every connected piece
is one fragment. Hydrogens never change the answer:

* BRICS environments count heavy neighbours (SMARTS ``D``), so explicit hydrogens would make
  RDKit miss or invent cuts; the bonds are therefore always found on a hydrogen-free copy and
  mapped back to the atom indices of the molecule given.
* A BRICS bond joins two heavy atoms, so a hydrogen stays in its heavy atom's piece: it gets
  that atom's label and is never a fragment of its own. Only a component with no heavy atom at
  all (``[H][H]``, ``[H+]`` in a salt) is a fragment made of hydrogens.

Labels are ``0 .. F-1`` in order of each fragment's lowest heavy-atom index (then, for
hydrogen-only components, lowest atom index), so they do not depend on where the explicit
hydrogens sit in the atom list. A molecule without BRICS bonds is a single fragment (all
zeros) if it is connected.

The labels are computed in RDKit's C++ (``FragmentOnBRICSBonds`` on the hydrogen-free copy,
then ``GetMolFrags``), each hydrogen taking its heavy atom's label; molecules whose hydrogens
are not each bonded to exactly one heavy atom (``[H][H]``, ``[H+]``, bridging hydrogens) take
the general path: a breadth-first search over the bonds :func:`brics_bonds` does not cut.
RDKit's C++ and Python BRICS rules cut the same bonds (tested on NCI and ChEMBL molecules).
"""

from __future__ import annotations

from collections import deque

import numpy as np
from rdkit import Chem
from rdkit.Chem import BRICS

from molssl.chem.bond_sides import mol_bonds
from molssl.chem.errors import MoleculeError
from molssl.chem.rdkit_log import quiet_rdkit

__all__ = ["brics_bonds", "brics_fragment_labels"]

_ORIGINAL_INDEX = "molssl_original_index"


def _check_mol(mol: object) -> Chem.Mol:
    if not isinstance(mol, Chem.Mol):
        raise TypeError(f"expected an RDKit Chem.Mol, got {type(mol).__name__}")
    return mol


def _without_hydrogens(mol: Chem.Mol) -> Chem.Mol:
    """Sanitised hydrogen-free copy (BRICS environments count heavy neighbours)."""
    with quiet_rdkit() as log:
        try:
            return Chem.RemoveAllHs(mol, sanitize=True)
        except (ValueError, RuntimeError) as exc:  # MolSanitizeException is a ValueError
            detail = log.summary() or str(exc)
            raise MoleculeError(
                f"cannot find BRICS bonds of {Chem.MolToSmiles(mol)!r}: {detail}",
                reason="fragmentation_failed",
            ) from exc


def brics_bonds(mol: Chem.Mol) -> np.ndarray:
    """Atom pairs of the BRICS bonds of ``mol``, as indices of ``mol`` itself.

    Args:
        mol: A sanitised molecule, with or without explicit hydrogens.

    Returns:
        ``(K, 2)`` int64, each row sorted, rows in ascending order.

    Raises:
        TypeError: If ``mol`` is not an RDKit molecule.
        MoleculeError: ``reason="fragmentation_failed"`` if the hydrogen-free copy does not
            sanitise (the molecule was not sanitised to begin with).
    """
    mol = _check_mol(mol)
    heavy = Chem.Mol(mol)
    for atom in heavy.GetAtoms():
        atom.SetIntProp(_ORIGINAL_INDEX, atom.GetIdx())
    heavy = _without_hydrogens(heavy)
    with quiet_rdkit():
        found = list(BRICS.FindBRICSBonds(heavy))
    original = [atom.GetIntProp(_ORIGINAL_INDEX) for atom in heavy.GetAtoms()]
    pairs = {tuple(sorted((original[a], original[b]))) for (a, b), _ in found}
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def brics_fragment_labels(mol: Chem.Mol) -> np.ndarray:
    """BRICS fragment label of every atom of ``mol`` (hydrogens included).

    Args:
        mol: A sanitised molecule, with or without explicit hydrogens.

    Returns:
        ``(N,)`` int64 labels ``0 .. F-1`` (see the module docstring for the order).

    Raises:
        TypeError: If ``mol`` is not an RDKit molecule.
        MoleculeError: ``reason="fragmentation_failed"`` for a molecule that is not sanitised.
    """
    mol = _check_mol(mol)
    labels = _labels_in_cpp(mol)
    if labels is None:
        labels = _labels_by_search(mol, brics_bonds(mol))
    return labels


def _labels_in_cpp(mol: Chem.Mol) -> np.ndarray | None:
    """The labels when every hydrogen hangs on exactly one heavy atom, else ``None``."""
    n = mol.GetNumAtoms()
    atoms = list(map(mol.GetAtomWithIdx, range(n)))
    is_hydrogen = np.fromiter(map(Chem.Atom.GetAtomicNum, atoms), dtype=np.int64, count=n) == 1
    ends = np.asarray(mol_bonds(mol), dtype=np.int64).reshape(-1, 2)
    hydrogen_ends = is_hydrogen[ends]
    bonds_per_hydrogen = np.bincount(ends[hydrogen_ends], minlength=n)[is_hydrogen]
    if hydrogen_ends.all(axis=1).any() or (bonds_per_hydrogen != 1).any():
        return None
    heavy_index = np.flatnonzero(~is_hydrogen)
    heavy = _without_hydrogens(mol)
    if heavy.GetNumAtoms() != len(heavy_index):  # RemoveAllHs kept or lost an atom
        return None
    with quiet_rdkit() as log:
        try:
            # Original atoms keep their indices; each cut adds two dummy atoms after them.
            pieces = Chem.GetMolFrags(Chem.FragmentOnBRICSBonds(heavy))
        except (ValueError, RuntimeError) as exc:
            raise MoleculeError(
                f"cannot cut the BRICS bonds of {Chem.MolToSmiles(mol)!r}: {log.summary() or exc}",
                reason="fragmentation_failed",
            ) from exc
    piece_of = np.empty(sum(map(len, pieces)), dtype=np.int64)
    for piece, members in enumerate(pieces):
        piece_of[list(members)] = piece
    piece_of = piece_of[: len(heavy_index)]
    # Number pieces by their lowest heavy atom: RemoveAllHs keeps the heavy atoms' order.
    _, first_atom, piece_of = np.unique(piece_of, return_index=True, return_inverse=True)
    rank = np.empty(len(first_atom), dtype=np.int64)
    rank[np.argsort(first_atom)] = np.arange(len(first_atom))
    labels = np.empty(n, dtype=np.int64)
    labels[heavy_index] = rank[piece_of.reshape(-1)]
    hydrogen_bonds = ends[hydrogen_ends.any(axis=1)]
    hydrogen_side = hydrogen_ends[hydrogen_ends.any(axis=1)]
    hydrogens = hydrogen_bonds[hydrogen_side]
    labels[hydrogens] = labels[hydrogen_bonds[~hydrogen_side]]
    return labels


def _labels_by_search(mol: Chem.Mol, cut_bonds: np.ndarray) -> np.ndarray:
    """Connected pieces once ``cut_bonds`` are removed, numbered heavy atoms first."""
    n = mol.GetNumAtoms()
    cut = {(int(a), int(b)) for a, b in cut_bonds}
    neighbours: list[list[int]] = [[] for _ in range(n)]
    for a, b in mol_bonds(mol):
        if (min(a, b), max(a, b)) not in cut:
            neighbours[a].append(b)
            neighbours[b].append(a)
    heavy_first = sorted(range(n), key=lambda i: (mol.GetAtomWithIdx(i).GetAtomicNum() == 1, i))
    labels = np.full(n, -1, dtype=np.int64)
    next_label = 0
    for seed in heavy_first:
        if labels[seed] >= 0:
            continue
        labels[seed] = next_label
        queue = deque([seed])
        while queue:
            atom = queue.popleft()
            for other in neighbours[atom]:
                if labels[other] < 0:
                    labels[other] = next_label
                    queue.append(other)
        next_label += 1
    return labels

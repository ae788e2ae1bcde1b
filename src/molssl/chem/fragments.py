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
"""

from __future__ import annotations

from collections import deque

import numpy as np
from rdkit import Chem
from rdkit.Chem import BRICS

from molssl.chem.errors import MoleculeError
from molssl.chem.rdkit_log import quiet_rdkit

__all__ = ["brics_bonds", "brics_fragment_labels"]

_ORIGINAL_INDEX = "molssl_original_index"


def _check_mol(mol: object) -> Chem.Mol:
    if not isinstance(mol, Chem.Mol):
        raise TypeError(f"expected an RDKit Chem.Mol, got {type(mol).__name__}")
    return mol


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
    with quiet_rdkit() as log:
        try:
            heavy = Chem.RemoveAllHs(heavy, sanitize=True)
        except (ValueError, RuntimeError) as exc:  # MolSanitizeException is a ValueError
            detail = log.summary() or str(exc)
            raise MoleculeError(
                f"cannot find BRICS bonds of {Chem.MolToSmiles(mol)!r}: {detail}",
                reason="fragmentation_failed",
            ) from exc
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
    n = mol.GetNumAtoms()
    cut = {(int(a), int(b)) for a, b in brics_bonds(mol)}
    neighbours: list[list[int]] = [[] for _ in range(n)]
    for bond in mol.GetBonds():
        a, b = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
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

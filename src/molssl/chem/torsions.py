"""Rotatable torsions, their moving sides, and fast torsion perturbation of a conformer.

Conventions used throughout this module:

* A torsion is a row ``(i, j, k, l)`` of atom indices; ``j-k`` is the rotatable bond,
  ``i`` is a neighbour of ``j`` and ``l`` a neighbour of ``k``.
* **The side of ``k`` moves** (the connected component holding ``k`` and ``l`` once the
  ``j-k`` bond is cut), exactly as in RDKit's ``rdMolTransforms.SetDihedralRad``, so the
  two give the same coordinates, not only the same shape.
* :func:`rotatable_torsions` orients every torsion so that the ``k`` side is the smaller
  one (fewer atoms to move); on a tie ``j < k``.
* Other fragments of a multi-fragment record (counter-ions, solvent) are on neither side:
  they never move, so they keep their place relative to ``j``'s side.
* A rotation by ``+delta`` about the ``j -> k`` axis (right-hand rule) raises the signed
  dihedral ``(i, j, k, l)`` by ``delta``, with RDKit's sign convention.

The intended use is: :func:`rotatable_torsions` and :func:`torsion_moving_masks` once per
molecule (they need the molecular graph), then :func:`apply_torsion_deltas` per sample,
which is pure NumPy and touches no RDKit object.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from rdkit import Chem

from molssl.chem.bond_sides import (
    BondSides,
    adjacency_lists,
    edge_index_adjacency,
    mol_bonds,
)

__all__ = [
    "ROTATABLE_BOND_SMARTS",
    "apply_torsion_deltas",
    "perturb_torsions",
    "rotatable_torsions",
    "torsion_moving_masks",
]

ROTATABLE_BOND_SMARTS = "[!$(*#*)&!D1]-&!@[!$(*#*)&!D1]"
"""Single, acyclic bond between two atoms that are neither terminal nor triple-bonded."""

_ROTATABLE_BOND_QUERY = Chem.MolFromSmarts(ROTATABLE_BOND_SMARTS)


def _first_neighbour(neighbours: list[int], exclude: int, is_hydrogen: list[bool]) -> int:
    """Lowest-index heavy neighbour other than ``exclude``, else the lowest-index hydrogen."""
    return min((is_hydrogen[n], n) for n in neighbours if n != exclude)[1]


def rotatable_torsions(mol: Chem.Mol, hydrogen_rotors: bool = False) -> np.ndarray:
    """One torsion ``(i, j, k, l)`` per rotatable bond ``j-k``, oriented so ``k``'s side is smaller.

    A bond is rotatable when it matches :data:`ROTATABLE_BOND_SMARTS`. By default the match
    is judged on the heavy-atom graph, i.e. as if hydrogens were implicit, so the result
    does not depend on whether ``mol`` carries explicit hydrogens: a methyl, hydroxyl or
    amino group (terminal heavy atom) is not a rotor. ``i`` and ``l`` are the
    lowest-index heavy neighbours of ``j`` (other than ``k``) and of ``k`` (other than
    ``j``). Rows are sorted by RDKit bond index.

    Args:
        mol: An RDKit molecule, with or without explicit hydrogens.
        hydrogen_rotors: Apply the SMARTS literally to ``mol``'s explicit graph, so that with
            explicit hydrogens the bonds to CH3 / OH / NH2 groups count too; ``i`` or ``l``
            is then a hydrogen when no heavy neighbour exists.

    Returns:
        ``np.ndarray`` of shape ``(T, 4)``, dtype int64; ``(0, 4)`` without rotatable bonds.
        Rotating torsion ``t`` moves the atoms of ``k``'s side (see
        :func:`torsion_moving_masks`), which never has more atoms than ``j``'s side.
    """
    if not isinstance(mol, Chem.Mol):
        raise TypeError(f"rotatable_torsions expects an RDKit Mol, got {type(mol).__name__}")
    # Up to one match per bond; RDKit's default cap of 1000 matches would truncate polymers.
    max_matches = max(1000, mol.GetNumBonds() + 1)
    matches = mol.GetSubstructMatches(_ROTATABLE_BOND_QUERY, maxMatches=max_matches)
    if not matches:
        return np.zeros((0, 4), dtype=np.int64)
    bonds = mol_bonds(mol)
    bond_index = {pair: idx for idx, pair in enumerate(bonds)}
    adjacency = adjacency_lists(mol.GetNumAtoms(), bonds)
    atom_at = mol.GetAtomWithIdx
    is_hydrogen = [atom_at(idx).GetAtomicNum() == 1 for idx in range(mol.GetNumAtoms())]
    # Across a bridge j-k, an atom is on k's side exactly when it is closer to k than to j;
    # RDKit's C++ distance matrix (cached on the molecule, so the shortest-path matrix of a
    # record reuses it) gives both sides' sizes without a graph search in Python.
    distances = Chem.GetDistanceMatrix(mol)
    rows: list[tuple[int, int, int, int, int]] = []
    for a, b in matches:
        if not hydrogen_rotors and any(
            sum(not is_hydrogen[n] for n in adjacency[end]) < 2 for end in (a, b)
        ):
            continue
        j, k = (a, b) if a < b else (b, a)
        if mol.GetBondBetweenAtoms(j, k).IsInRing():  # the SMARTS excludes these
            raise ValueError(f"bond {j}-{k} lies on a ring: cutting it does not split the molecule")
        to_j, to_k = distances[j], distances[k]
        if np.count_nonzero(to_k < to_j) > np.count_nonzero(to_j < to_k):
            j, k = k, j
        i = _first_neighbour(adjacency[j], exclude=k, is_hydrogen=is_hydrogen)
        l = _first_neighbour(adjacency[k], exclude=j, is_hydrogen=is_hydrogen)
        bond = bond_index[(j, k)] if (j, k) in bond_index else bond_index[(k, j)]
        rows.append((bond, i, j, k, l))
    rows.sort()
    return np.asarray([row[1:] for row in rows], dtype=np.int64).reshape(-1, 4)


def _as_torsion_array(torsions: Any) -> np.ndarray:
    array = np.asarray(torsions)
    if array.size == 0:
        return np.zeros((0, 4), dtype=np.int64)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"torsions must have shape (T, 4); got {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"torsions must hold integer atom indices; got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def torsion_moving_masks(
    mol_or_edge_index: Chem.Mol | Any, torsions: Any, num_nodes: int | None = None
) -> np.ndarray:
    """Atoms that move when each torsion's bond is rotated: ``k``'s side of bond ``j-k``.

    Computed in one depth-first pass over the graph (bridge tree), whatever the number of
    torsions; meant to be run once per molecule and stored next to the torsions.

    Args:
        mol_or_edge_index: An RDKit molecule, or an ``edge_index`` of shape ``(2, E)``
            (NumPy array or torch tensor; one or both directions).
        torsions: ``(T, 4)`` integer array of ``(i, j, k, l)`` rows.
        num_nodes: Number of atoms. Taken from the molecule when one is given; with an
            ``edge_index`` it defaults to the largest index + 1, which misses trailing
            isolated atoms such as a counter-ion, so pass it whenever that can happen.

    Returns:
        ``(T, N)`` bool array; row ``t`` is the connected component holding ``k`` once
        bond ``j-k`` is cut (``k`` and ``l`` included, ``j`` and ``i`` excluded).

    Raises:
        ValueError: If a torsion's ``j-k`` is not a bond, lies on a ring, or an index is out
            of range.
    """
    if isinstance(mol_or_edge_index, Chem.Mol):
        if num_nodes is not None and num_nodes != mol_or_edge_index.GetNumAtoms():
            raise ValueError(
                f"num_nodes={num_nodes} but the molecule has "
                f"{mol_or_edge_index.GetNumAtoms()} atoms"
            )
        return _masks_of_mol(mol_or_edge_index, _as_torsion_array(torsions))
    adjacency = edge_index_adjacency(mol_or_edge_index, num_nodes)
    n = len(adjacency)
    torsion_array = _as_torsion_array(torsions)
    if len(torsion_array) == 0:
        return np.zeros((0, n), dtype=bool)
    if torsion_array.min() < 0 or torsion_array.max() >= n:
        raise ValueError(f"torsions refer to atoms outside [0, {n})")
    sides = BondSides(adjacency)
    lower = np.empty(len(torsion_array), dtype=np.int64)
    upper = np.empty(len(torsion_array), dtype=np.int64)
    complement = np.empty(len(torsion_array), dtype=bool)
    component = np.empty(len(torsion_array), dtype=np.int64)
    for t, (_, j, k, _) in enumerate(torsion_array.tolist()):
        child = sides.cut_child(j, k)
        lower[t] = sides.preorder[child]
        upper[t] = sides.last_in_subtree[child]
        # If j hangs below k, k's side is j's subtree subtracted from the whole component.
        complement[t] = child == j
        component[t] = sides.root_of[k]
    preorder = np.asarray(sides.preorder, dtype=np.int64)
    root_of = np.asarray(sides.root_of, dtype=np.int64)
    in_subtree = (preorder >= lower[:, None]) & (preorder <= upper[:, None])
    same_component = root_of[None, :] == component[:, None]
    return same_component & (in_subtree ^ complement[:, None])


def _masks_of_mol(mol: Chem.Mol, torsion_array: np.ndarray) -> np.ndarray:
    """:func:`torsion_moving_masks` of a molecule, from RDKit's distance matrix.

    Cutting a bridge ``j-k`` leaves ``k``'s side as the atoms closer to ``k`` than to ``j``
    (every path from them to ``j`` passes ``k``); atoms of other fragments are at the same
    (unreachable) distance from both, so they stay still. The same masks as the bridge
    search over the graph, for which ``edge_index`` inputs still use :class:`BondSides`.
    """
    n = mol.GetNumAtoms()
    if len(torsion_array) == 0:
        return np.zeros((0, n), dtype=bool)
    if torsion_array.min() < 0 or torsion_array.max() >= n:
        raise ValueError(f"torsions refer to atoms outside [0, {n})")
    for j, k in torsion_array[:, 1:3].tolist():
        bond = mol.GetBondBetweenAtoms(j, k)
        if bond is None:
            raise ValueError(f"atoms {j} and {k} are not bonded; j-k must be a bond")
        if bond.IsInRing():
            raise ValueError(f"bond {j}-{k} lies on a ring: cutting it does not split the molecule")
    distances = Chem.GetDistanceMatrix(mol)
    return distances[torsion_array[:, 2]] < distances[torsion_array[:, 1]]


def apply_torsion_deltas(pos: Any, torsions: Any, moving_masks: Any, deltas_rad: Any) -> np.ndarray:
    """Rotate each torsion's moving atoms about its ``j -> k`` axis; the per-sample hot path.

    Torsions are applied in order ``t = 0 .. T-1``, each on the coordinates the previous
    one produced (Rodrigues rotation, float64). With the masks of
    :func:`torsion_moving_masks` the dihedral ``(i, j, k, l)`` of torsion ``t`` ends up
    raised by ``deltas_rad[t]``, and bond lengths and bond angles are unchanged. Pure
    NumPy: no RDKit object is touched.

    Args:
        pos: ``(N, 3)`` coordinates (any float dtype; not modified).
        torsions: ``(T, 4)`` integer array of ``(i, j, k, l)``; only ``j`` and ``k`` are read.
        moving_masks: ``(T, N)`` bool array, the atoms rotated by each torsion.
        deltas_rad: ``(T,)`` angle changes in radians.

    Returns:
        New ``(N, 3)`` float64 coordinates.

    Raises:
        ValueError: On inconsistent shapes, non-finite deltas, an out-of-range atom index,
            or coincident ``j`` and ``k`` positions.
    """
    coords = np.asarray(pos, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 3:
        raise ValueError(f"pos must have shape (N, 3); got {coords.shape}")
    n = coords.shape[0]
    torsion_array = np.asarray(torsions)
    masks = np.asarray(moving_masks, dtype=bool)
    deltas = np.asarray(deltas_rad, dtype=np.float64)
    num_torsions = len(torsion_array)
    if torsion_array.size and torsion_array.dtype.kind not in "iu":
        raise ValueError(
            f"torsions must hold integer atom indices; got dtype {torsion_array.dtype}"
        )
    if (
        torsion_array.ndim != 2
        or torsion_array.shape[1] != 4
        or masks.shape != (num_torsions, n)
        or deltas.shape != (num_torsions,)
    ):
        if num_torsions == 0 and torsion_array.size == 0 and deltas.size == 0:
            return coords.copy()
        raise ValueError(
            "expected torsions (T, 4), moving_masks (T, N) and deltas_rad (T,) with "
            f"N={n}; got {torsion_array.shape}, {masks.shape}, {deltas.shape} "
            "(an edge_index without num_nodes can miss trailing isolated atoms)"
        )
    if num_torsions == 0:
        return coords.copy()

    # Homogeneous coordinates make each rigid rotation one small matmul (rotation and
    # translation together); the cost per torsion is then a handful of NumPy calls on
    # an (N, 4) block, which is what beats RDKit's per-call bookkeeping.
    current = np.empty((n, 4), dtype=np.float64)
    current[:, :3] = coords
    current[:, 3] = 1.0
    current_flat = current.reshape(-1)
    rotated = np.empty_like(current)
    rotated_flat = rotated.reshape(-1)
    transform = np.empty((4, 4), dtype=np.float64)
    transform_flat = transform.reshape(-1)
    # One mask entry per homogeneous coordinate: a flat putmask is about twice as fast as a
    # broadcast copyto(where=...), which pays for this single repeat from two torsions on.
    flat_masks = np.repeat(masks, 4, axis=1)
    cos, sin, sqrt, isfinite = math.cos, math.sin, math.sqrt, math.isfinite
    for t, ((_, j, k, _), delta) in enumerate(
        zip(torsion_array.tolist(), deltas.tolist(), strict=True)
    ):
        if not (0 <= j < n and 0 <= k < n):
            raise ValueError(f"torsion {t} refers to atoms outside [0, {n}): j={j}, k={k}")
        if not isfinite(delta):
            raise ValueError(f"deltas_rad[{t}] is not finite: {delta}")
        # Scalar maths in plain floats: for one 3x3 matrix it is several times cheaper
        # than NumPy calls on tiny arrays.
        jx, jy, jz, _ = current[j].tolist()
        kx, ky, kz, _ = current[k].tolist()
        ux, uy, uz = kx - jx, ky - jy, kz - jz
        length = sqrt(ux * ux + uy * uy + uz * uz)
        if length < 1e-8:
            raise ValueError(f"torsion {t}: atoms {j} and {k} coincide; no rotation axis")
        ux, uy, uz = ux / length, uy / length, uz / length
        c, s = cos(delta), sin(delta)
        one_minus_c = 1.0 - c
        xy, xz, yz = ux * uy * one_minus_c, ux * uz * one_minus_c, uy * uz * one_minus_c
        r00, r01, r02 = c + ux * ux * one_minus_c, xy - uz * s, xz + uy * s
        r10, r11, r12 = xy + uz * s, c + uy * uy * one_minus_c, yz - ux * s
        r20, r21, r22 = xz - uy * s, yz + ux * s, c + uz * uz * one_minus_c
        # Rows act on row vectors: x' = x @ R.T + b, with b = p_j - p_j @ R.T so that the
        # axis through p_j stays fixed.
        bx = jx - (r00 * jx + r01 * jy + r02 * jz)
        by = jy - (r10 * jx + r11 * jy + r12 * jz)
        bz = jz - (r20 * jx + r21 * jy + r22 * jz)
        transform_flat[:] = (
            r00, r10, r20, 0.0,
            r01, r11, r21, 0.0,
            r02, r12, r22, 0.0,
            bx, by, bz, 1.0,
        )  # fmt: skip
        np.dot(current, transform, out=rotated)
        np.putmask(current_flat, flat_masks[t], rotated_flat)
    return np.ascontiguousarray(current[:, :3])


def perturb_torsions(mol: Chem.Mol, pos: Any, torsions: Any, deltas_rad: Any) -> np.ndarray:
    """Coordinates with torsion ``t``'s dihedral raised by ``deltas_rad[t]``, in order.

    Convenience form of :func:`torsion_moving_masks` followed by
    :func:`apply_torsion_deltas`; in a data pipeline compute the masks once instead.

    Args:
        mol: The molecule whose graph defines the moving sides.
        pos: ``(N, 3)`` coordinates of ``mol``'s atoms.
        torsions: ``(T, 4)`` torsions, e.g. from :func:`rotatable_torsions`.
        deltas_rad: ``(T,)`` dihedral changes in radians.

    Returns:
        New ``(N, 3)`` float64 coordinates; bond lengths and bond angles are unchanged.
    """
    masks = torsion_moving_masks(mol, torsions)
    coords = np.asarray(pos, dtype=np.float64)
    if coords.shape != (mol.GetNumAtoms(), 3):
        raise ValueError(
            f"pos must have shape ({mol.GetNumAtoms()}, 3) for this molecule; got {coords.shape}"
        )
    return apply_torsion_deltas(coords, _as_torsion_array(torsions), masks, deltas_rad)

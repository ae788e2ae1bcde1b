"""The heavy-atom graph of a featurised molecule: its hydrogen atoms removed from its arrays.

molssl featurises molecules with explicit hydrogens (3D work needs them), while some models are
trained on heavy-atom graphs: MoleBLEND's PCQM4Mv2 molecules are read by RDKit with its default
hydrogen removal and its MoleculeNet graphs come from SMILES without explicit hydrogens. Rather
than featurise every molecule twice, :func:`remove_hydrogens` turns a sample's arrays into those
of ``Chem.RemoveHs(mol)`` for the same molecule, without RDKit:

* atoms keep their order; ``edge_index`` is re-indexed and loses every bond to a hydrogen, and
  ``edge_attr`` the same rows (bond features do not depend on the hydrogens);
* in ``x``, the neighbour count (degree column) is recounted on the heavy-atom graph; the
  total hydrogen count already counts explicit and implicit hydrogens alike, so it stands; a
  tetrahedral tag (clockwise / counter-clockwise, relative to the order of the atom's bonds)
  is inverted where removing its hydrogens is an odd permutation of that order, as RDKit does
  when it removes them (the bond order of an atom is the order of its edges in ``edge_index``,
  as :func:`~molssl.chem.features.mol_to_data` writes them);
* a hydrogen is a leaf (one bond), so no shortest path between heavy atoms passes through one:
  ``spd`` and ``path_edges`` (:class:`~molssl.chem.graph.AddGraphRelations`) keep the heavy
  pairs, with edge ids re-numbered. Where a hydrogen has several bonds (bridging hydrides),
  both are recomputed on the heavy-atom graph;
* per-atom arrays keep the heavy atoms' rows (coordinates, coordinate noise, atom masks), the
  BRICS ``fragment`` labels are re-numbered ``0 .. F-1`` in the same order (a fragment made
  only of hydrogens, ``[H+]``, disappears), and torsions keep their atoms re-indexed (their
  four atoms are heavy by default, :func:`~molssl.chem.torsions.rotatable_torsions`) with
  ``torsion_moving`` restricted to the heavy atoms: rotating the heavy atoms of a side is what
  rotating the whole side does to them.

Every hydrogen atom goes, including the few that ``Chem.RemoveHs`` keeps (isotopes such as
deuterium, a hydrogen without a heavy neighbour, bridging hydrogens): the result is the
heavy-atom graph. A per-atom array this module does not know (energy/forces targets, which
count the hydrogens) is refused with an error naming it, never silently misaligned.
"""

from __future__ import annotations

from collections.abc import MutableMapping

import numpy as np

from molssl.chem.features import (
    ATOM_FEATURE_DIMS,
    ATOM_FEATURE_NAMES,
    CHIRAL_CCW,
    CHIRAL_CW,
    HYDROGEN_CLASS,
    degree_category,
)
from molssl.chem.graph import shortest_path_edges, shortest_path_matrix

__all__ = ["ATOM_KEYS", "remove_hydrogens"]

#: Per-atom arrays whose rows are simply kept for the heavy atoms.
ATOM_KEYS = ("z", "x", "pos", "coord_noise", "atom_mask", "fragment")
_PAIR_KEYS = ("edge_index", "edge_attr", "spd", "path_edges", "torsion_atoms", "torsion_moving")
_KNOWN_KEYS = ATOM_KEYS + _PAIR_KEYS
_DEGREE = ATOM_FEATURE_NAMES.index("degree")
_CHIRALITY = ATOM_FEATURE_NAMES.index("chirality")


def hydrogen_mask(arrays: MutableMapping[str, np.ndarray]) -> np.ndarray:
    """``(N,)`` bool, ``True`` at hydrogen atoms: from ``z``, else from ``x``'s element column.

    Raises:
        ValueError: Neither ``z`` nor ``x`` is there.
    """
    z = arrays.get("z")
    if z is not None:
        return np.asarray(z) == 1
    x = arrays.get("x")
    if x is None:
        raise ValueError("RemoveHydrogens needs 'z' (atomic numbers) or 'x' on each sample")
    return np.asarray(x)[:, 0] == HYDROGEN_CLASS


def remove_hydrogens(arrays: MutableMapping[str, np.ndarray]) -> None:
    """Replace a sample's arrays by those of its heavy-atom graph (see the module docstring).

    Assigns new arrays to the keys it changes and never writes into an array it was given
    (those may be a record's own). A sample without hydrogens is left as it is.

    Args:
        arrays: The sample's arrays by key, as :func:`~molssl.chem.features.mol_to_data` and
            the pre-training records name them (``edge_index`` ``(2, E)``, ``spd`` ``(N*N,)``,
            ``path_edges`` ``(N*N, K)``, ``torsion_moving`` ``(T, N)``, ...).

    Raises:
        ValueError: An unknown per-atom array, a torsion through a hydrogen, or an ``x`` that
            is not molssl's atom features.
    """
    hydrogen = hydrogen_mask(arrays)
    num_atoms = len(hydrogen)
    if not hydrogen.any():
        return
    _check_known(arrays, num_atoms)
    keep = ~hydrogen
    new_index = np.cumsum(keep) - 1
    edge_index = np.asarray(arrays.get("edge_index", np.zeros((2, 0), dtype=np.int64)))
    keep_edge = keep[edge_index[0]] & keep[edge_index[1]]
    new_edges = new_index[edge_index[:, keep_edge]]
    bridging = bool((np.bincount(edge_index[0], minlength=num_atoms)[hydrogen] > 1).any())

    if "x" in arrays:
        arrays["x"] = _heavy_features(arrays["x"], edge_index, hydrogen, keep, new_edges)
    for key in ATOM_KEYS:
        if key != "x" and arrays.get(key) is not None:
            arrays[key] = np.asarray(arrays[key])[keep]
    if arrays.get("fragment") is not None:
        arrays["fragment"] = np.unique(arrays["fragment"], return_inverse=True)[1].reshape(-1)
    if "edge_index" in arrays:
        arrays["edge_index"] = new_edges
    if arrays.get("edge_attr") is not None:
        arrays["edge_attr"] = np.asarray(arrays["edge_attr"])[keep_edge]
    if arrays.get("spd") is not None:
        arrays["spd"] = _heavy_spd(arrays["spd"], keep, new_edges, bridging)
    if arrays.get("path_edges") is not None:
        paths = arrays["path_edges"]
        arrays["path_edges"] = _heavy_paths(paths, keep, keep_edge, new_edges, bridging)
    if arrays.get("torsion_atoms") is not None:
        arrays["torsion_atoms"] = _heavy_torsions(arrays["torsion_atoms"], hydrogen, new_index)
    if arrays.get("torsion_moving") is not None:
        arrays["torsion_moving"] = np.asarray(arrays["torsion_moving"])[:, keep]


def _check_known(arrays: MutableMapping[str, np.ndarray], num_atoms: int) -> None:
    for key, value in arrays.items():
        shape = getattr(value, "shape", ())
        if key not in _KNOWN_KEYS and len(shape) >= 1 and shape[0] == num_atoms:
            raise ValueError(
                f"RemoveHydrogens cannot tell whether {key!r} {tuple(shape)} holds one row per "
                f"atom, hydrogens included (e.g. forces); it drops the hydrogens' rows of "
                f"{ATOM_KEYS} only. Remove {key!r} before this transform, or keep the hydrogens"
            )


def _heavy_features(
    x: np.ndarray,
    edge_index: np.ndarray,
    hydrogen: np.ndarray,
    keep: np.ndarray,
    new_edges: np.ndarray,
) -> np.ndarray:
    """``x`` of the heavy atoms: degree recounted, tetrahedral tags re-oriented."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != len(ATOM_FEATURE_DIMS):
        raise ValueError(
            f"RemoveHydrogens: 'x' must be molssl's atom features ({len(ATOM_FEATURE_DIMS)} "
            f"columns, molssl.chem.features), got shape {x.shape}"
        )
    out = x[keep].copy()
    out[:, _DEGREE] = degree_category(np.bincount(new_edges[0], minlength=len(out)))
    chiral = (x[:, _CHIRALITY] == CHIRAL_CW) | (x[:, _CHIRALITY] == CHIRAL_CCW)
    hydrogen_neighbour = np.zeros(len(x), dtype=bool)
    hydrogen_neighbour[edge_index[0][hydrogen[edge_index[1]]]] = True
    new_index = np.cumsum(keep) - 1
    for atom in np.flatnonzero(chiral & keep & hydrogen_neighbour):
        if _removal_is_odd(edge_index[1][edge_index[0] == atom], hydrogen):
            row = new_index[atom]
            out[row, _CHIRALITY] = CHIRAL_CW + CHIRAL_CCW - out[row, _CHIRALITY]
    return out


def _removal_is_odd(neighbours: np.ndarray, hydrogen: np.ndarray) -> bool:
    """Whether removing the hydrogens from this bond order is an odd permutation.

    RDKit's ``RemoveHs`` removes hydrogens from the highest atom index down; each removal moves
    the hydrogen's bond to the end of the current order before dropping it, which takes as many
    transpositions as there are bonds after it, and inverts the tag when that number is odd.
    """
    order = list(neighbours)
    swaps = 0
    for atom in sorted((int(n) for n in neighbours if hydrogen[n]), reverse=True):
        position = order.index(atom)
        swaps += len(order) - 1 - position
        del order[position]
    return swaps % 2 == 1


def _heavy_spd(
    spd: np.ndarray, keep: np.ndarray, new_edges: np.ndarray, bridging: bool
) -> np.ndarray:
    spd = np.asarray(spd)
    count = int(keep.sum())
    if bridging:
        return shortest_path_matrix(new_edges, count).astype(spd.dtype).reshape(-1)
    size = len(keep)
    return spd.reshape(size, size)[np.ix_(keep, keep)].reshape(-1)


def _heavy_paths(
    paths: np.ndarray,
    keep: np.ndarray,
    keep_edge: np.ndarray,
    new_edges: np.ndarray,
    bridging: bool,
) -> np.ndarray:
    paths = np.asarray(paths)
    count, hops = int(keep.sum()), paths.shape[-1]
    if bridging:
        return shortest_path_edges(new_edges, count, hops).astype(paths.dtype).reshape(-1, hops)
    size = len(keep)
    # Old edge id -> new id (-1 for a bond to a hydrogen, which no heavy path uses; -1 stays).
    edge_map = np.full(len(keep_edge) + 1, -1, dtype=paths.dtype)
    edge_map[:-1][keep_edge] = np.arange(int(keep_edge.sum()))
    heavy = paths.reshape(size, size, hops)[np.ix_(keep, keep)]
    return edge_map[heavy].reshape(-1, hops)


def _heavy_torsions(
    torsions: np.ndarray, hydrogen: np.ndarray, new_index: np.ndarray
) -> np.ndarray:
    torsions = np.asarray(torsions)
    if torsions.size and hydrogen[torsions].any():
        raise ValueError(
            "RemoveHydrogens: a torsion of the sample runs through a hydrogen atom (records "
            "built with hydrogen_rotors); its dihedral has no heavy-atom form"
        )
    return new_index[torsions].reshape(torsions.shape)

"""Bemis-Murcko scaffold of a molecule, the grouping key of scaffold splits.

The scaffold is the ring systems plus the linkers between them, side chains removed, as
canonical SMILES (RDKit's ``MurckoScaffold``). An acyclic molecule has the empty scaffold
``""``. Stereochemistry is dropped by default, as in MoleculeNet/chemprop scaffold splits, so
that enantiomers share a scaffold and cannot land in different splits.
"""

from __future__ import annotations

from rdkit import Chem
from rdkit.Chem.Scaffolds import MurckoScaffold

from molssl.chem.features import mol_from_smiles

__all__ = ["murcko_scaffold"]


def murcko_scaffold(molecule: str | Chem.Mol, include_chirality: bool = False) -> str:
    """Canonical SMILES of the Bemis-Murcko scaffold.

    Args:
        molecule: A SMILES string or a sanitised RDKit molecule (explicit hydrogens allowed).
        include_chirality: Keep stereo marks in the scaffold SMILES.

    Returns:
        The scaffold SMILES; ``""`` for a molecule without rings.

    Raises:
        InvalidSmilesError: For a SMILES RDKit cannot parse or sanitise, or a value that is
            not a string (``invalid_smiles``), or missing/blank/NaN input (``empty_input``).
        MoleculeError: Other typed errors of :func:`molssl.chem.features.mol_from_smiles`
            (dummy atoms, hydrogens only).
    """
    if isinstance(molecule, Chem.Mol):
        mol = Chem.RemoveHs(molecule)
    else:
        mol = mol_from_smiles(molecule, add_hs=False, max_heavy_atoms=None)
    return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=include_chirality)

"""Per-sample pre-training ``Data`` for real molecules, as the pre-training dataset makes them.

Keys: ``z``, ``x``, ``edge_index``, ``edge_attr``, ``pos`` (one seeded ETKDGv3 + MMFF94
conformer, float32), ``fragment`` (BRICS labels), ``torsion_atoms``, ``torsion_moving``,
``smiles``, ``mol_id``. Built from ``molssl.chem`` directly; fragment labels come from
``molssl.chem.fragments`` when that module is present, else from RDKit's BRICS bonds (the
same definition: atoms connected once BRICS bonds are cut, hydrogens with their heavy atom).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from rdkit import Chem
from rdkit.Chem import BRICS
from torch_geometric.data import Batch, Data

from molssl.chem.conformers import ConformerOptions, embed_conformers
from molssl.chem.features import mol_from_smiles, mol_to_data
from molssl.chem.torsions import rotatable_torsions, torsion_moving_masks


def rdkit_brics_labels(mol: Chem.Mol) -> np.ndarray:
    """Fragment index per atom: connected components once RDKit's BRICS bonds are cut."""
    bonds = [mol.GetBondBetweenAtoms(i, j).GetIdx() for (i, j), _ in BRICS.FindBRICSBonds(mol)]
    pieces = Chem.FragmentOnBonds(mol, bonds, addDummies=False) if bonds else mol
    labels = np.full(mol.GetNumAtoms(), -1, dtype=np.int64)
    for index, atoms in enumerate(Chem.GetMolFrags(pieces, asMols=False, sanitizeFrags=False)):
        labels[list(atoms)] = index
    return labels


def fragment_labels(mol: Chem.Mol) -> np.ndarray:
    """molssl's BRICS labels when available, else :func:`rdkit_brics_labels`."""
    try:
        from molssl.chem.fragments import brics_fragment_labels
    except ImportError:
        return rdkit_brics_labels(mol)
    return brics_fragment_labels(mol)


@functools.cache
def pretrain_sample(smiles: str, mol_id: int = 0, conformer: bool = True) -> Data:
    """The dataset's per-sample ``Data`` (before views); cached, so callers must not mutate."""
    mol = mol_from_smiles(smiles)
    if conformer:
        mol = embed_conformers(mol, ConformerOptions(seed=mol_id))
    data = mol_to_data(mol, conf_id=0 if conformer else None)
    torsions = rotatable_torsions(mol)
    data.fragment = torch.from_numpy(fragment_labels(mol))
    data.torsion_atoms = torch.from_numpy(torsions)
    data.torsion_moving = torch.from_numpy(torsion_moving_masks(mol, torsions))
    data.mol_id = torch.tensor(mol_id)
    return data


def collate(samples: list[Data]) -> Batch:
    """Batch samples as the datamodule does, after dropping the unbatchable torsion keys."""
    kept = []
    for sample in samples:
        sample = sample.clone()
        del sample.torsion_atoms, sample.torsion_moving
        kept.append(sample)
    return Batch.from_data_list(kept)

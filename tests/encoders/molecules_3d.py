"""Real molecules with RDKit conformers, and exact rigid motions, for the 3D encoder tests."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from molssl.chem.conformers import ConformerOptions, embed_conformers
from molssl.chem.features import mol_from_smiles, mol_to_data
from tests.conftest import read_nci_smiles

# NCI molecules with 12-21 atoms once hydrogens are added: a quinone (nearly planar), a
# nitro-thiazoline, a dioxime, an N-bromo imide and a flexible thioether.
#: A MoleBLEND transformer of test size, deterministic (no dropout); shared by the encoder's and
#: the blend-then-predict objective's tests.
TINY_BLEND = {
    "num_layers": 2,
    "num_heads": 4,
    "hidden_channels": 32,
    "num_gaussians": 16,
    "max_spd": 8,
    "dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
}

NCI_INDICES = (0, 3, 8, 15, 18)
# The N-bromo imide: 12 atoms, small enough for a finite-difference force check.
SMALL_INDEX = 15


def molecule_3d(smiles: str, seed: int = 7) -> Data:
    """``Data(z, pos)`` for ``smiles`` through molssl's featurization: explicit hydrogens, one
    seeded ETKDGv3 + MMFF94 conformer; positions in float64 for the tests to cast down."""
    mol = embed_conformers(mol_from_smiles(smiles), ConformerOptions(seed=seed))
    data = mol_to_data(mol, conf_id=0)
    return Data(z=data.z, pos=data.pos.double(), smiles=data.smiles)


def nci_molecules() -> list[Data]:
    """The molecules of :data:`NCI_INDICES` with conformers."""
    smiles = read_nci_smiles(max(NCI_INDICES) + 1)
    return [molecule_3d(smiles[i]) for i in NCI_INDICES]


def small_molecule() -> Data:
    """The 12-atom molecule used for finite differences."""
    return molecule_3d(read_nci_smiles(SMALL_INDEX + 1)[SMALL_INDEX])


def as_batch(molecules: list[Data], dtype: torch.dtype) -> Batch:
    """Batch the molecules with positions cast to ``dtype``."""
    return Batch.from_data_list(
        [Data(z=m.z, pos=m.pos.to(dtype), smiles=m.smiles) for m in molecules]
    )


def fixed_rotation(dtype: torch.dtype = torch.float64) -> Tensor:
    """A fixed, non-trivial proper rotation: Z(0.7) @ Y(-1.1) @ X(2.3)."""
    a, b, c = 0.7, -1.1, 2.3
    # Built in float64 so the matrix is orthogonal to float64 precision.
    rz = [[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]]
    ry = [[math.cos(b), 0.0, math.sin(b)], [0.0, 1.0, 0.0], [-math.sin(b), 0.0, math.cos(b)]]
    rx = [[1.0, 0.0, 0.0], [0.0, math.cos(c), -math.sin(c)], [0.0, math.sin(c), math.cos(c)]]
    matrices = [torch.tensor(m, dtype=torch.float64) for m in (rz, ry, rx)]
    return (matrices[0] @ matrices[1] @ matrices[2]).to(dtype)


FIXED_TRANSLATION = (3.0, -1.5, 0.25)


def moved(batch: Batch, rotation: Tensor) -> Batch:
    """A copy of ``batch`` with positions rotated then translated by :data:`FIXED_TRANSLATION`."""
    out = batch.clone()
    shift = torch.tensor(FIXED_TRANSLATION, dtype=batch.pos.dtype)
    out.pos = batch.pos @ rotation.to(batch.pos.dtype).T + shift
    return out


def rotate_vectors(vec: Tensor, rotation: Tensor) -> Tensor:
    """Apply ``rotation`` to vector features ``(N, 3)`` or ``(N, 3, C)`` along axis 1."""
    rotation = rotation.to(vec.dtype)
    if vec.dim() == 2:
        return vec @ rotation.T
    return torch.einsum("ij,njc->nic", rotation, vec)

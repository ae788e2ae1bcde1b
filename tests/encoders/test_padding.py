"""Flat PyG node order <-> padded per-molecule tensors."""

from __future__ import annotations

import pytest
import torch
from rdkit import Chem

from molssl.encoders.padding import from_padded, to_padded
from tests.conftest import read_nci_smiles


def test_round_trip_on_real_molecule_sizes() -> None:
    mols = [Chem.AddHs(Chem.MolFromSmiles(s)) for s in read_nci_smiles(12)]
    sizes = [m.GetNumAtoms() for m in mols]
    batch = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    atomic_numbers = torch.tensor([a.GetAtomicNum() for m in mols for a in m.GetAtoms()])
    values = torch.stack([atomic_numbers.double(), torch.arange(len(batch)).double()], dim=1)
    padded, node_mask = to_padded(values, batch, fill_value=-1.0)
    assert padded.shape == (len(mols), max(sizes), 2)
    assert node_mask.sum(dim=1).tolist() == sizes
    for i, mol in enumerate(mols):
        n = mol.GetNumAtoms()
        expected = [a.GetAtomicNum() for a in mol.GetAtoms()]
        assert padded[i, :n, 0].long().tolist() == expected
        assert torch.all(padded[i, n:] == -1.0)
    assert torch.equal(from_padded(padded, node_mask), values)


def test_trailing_empty_molecule_kept_with_num_graphs() -> None:
    values = torch.arange(5.0).unsqueeze(1)
    batch = torch.tensor([0, 0, 1, 1, 1])
    padded, node_mask = to_padded(values, batch, num_graphs=3)
    assert padded.shape == (3, 3, 1)
    assert not node_mask[2].any()
    assert torch.equal(from_padded(padded, node_mask), values)


def test_none_batch_is_one_molecule() -> None:
    padded, node_mask = to_padded(torch.ones(4, 2), None)
    assert padded.shape == (1, 4, 2) and bool(node_mask.all())


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="sorted"):
        to_padded(torch.ones(3, 1), torch.tensor([1, 0, 1]))
    with pytest.raises(ValueError, match="shape"):
        to_padded(torch.ones(3, 1), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="node_mask"):
        from_padded(torch.ones(2, 3, 1), torch.ones(2, 3))

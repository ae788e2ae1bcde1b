"""Atom and bond feature embeddings: per-column sums on real molecules, vocabulary checks."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch

from molssl.chem.features import (
    ATOM_FEATURE_DIMS,
    BOND_FEATURE_DIMS,
    mol_from_smiles,
    mol_to_data,
)
from molssl.encoders.embeddings import AtomFeatureEmbedding, BondFeatureEmbedding
from tests.conftest import read_nci_smiles


@pytest.fixture(scope="module")
def batch() -> Batch:
    return Batch.from_data_list([mol_to_data(mol_from_smiles(s)) for s in read_nci_smiles(20)])


def brute_force_sum(
    module: AtomFeatureEmbedding | BondFeatureEmbedding, features: torch.Tensor
) -> torch.Tensor:
    """Sum over columns of column k's own block of the table, row by row."""
    weight = module.embedding.weight
    out = torch.zeros(features.size(0), weight.size(1), dtype=weight.dtype)
    for row in range(features.size(0)):
        start = 0
        for column, size in enumerate(module.feature_dims):
            out[row] += weight[start + int(features[row, column])]
            start += size
    return out


def test_atom_embedding_is_the_sum_of_its_column_embeddings(batch: Batch) -> None:
    torch.manual_seed(0)
    module = AtomFeatureEmbedding(8)
    assert module.feature_dims == tuple(ATOM_FEATURE_DIMS)
    assert module.embedding.num_embeddings == sum(ATOM_FEATURE_DIMS)
    torch.testing.assert_close(module(batch.x), brute_force_sum(module, batch.x))


def test_bond_embedding_is_the_sum_of_its_column_embeddings(batch: Batch) -> None:
    torch.manual_seed(0)
    module = BondFeatureEmbedding(4)
    assert module.feature_dims == tuple(BOND_FEATURE_DIMS)
    torch.testing.assert_close(module(batch.edge_attr), brute_force_sum(module, batch.edge_attr))


def test_columns_do_not_share_rows(batch: Batch) -> None:
    """Index 0 of column 0 and index 0 of column 1 are different embeddings."""
    module = AtomFeatureEmbedding(8)
    zeros = torch.zeros(1, len(ATOM_FEATURE_DIMS), dtype=torch.long)
    shifted = zeros.clone()
    shifted[0, 1] = 1
    assert not torch.allclose(module(zeros), module(shifted))


def test_last_bucket_is_valid_and_beyond_it_raises(batch: Batch) -> None:
    module = AtomFeatureEmbedding(8)
    top = torch.tensor([[d - 1 for d in ATOM_FEATURE_DIMS]])
    assert module(top).shape == (1, 8)
    for column, size in enumerate(ATOM_FEATURE_DIMS):
        bad = top.clone()
        bad[0, column] = size
        with pytest.raises(ValueError, match=f"column {column}"):
            module(bad)
    negative = top.clone()
    negative[0, 2] = -1
    with pytest.raises(ValueError, match="column 2"):
        module(negative)


def test_wrong_shape_or_dtype_raises(batch: Batch) -> None:
    module = BondFeatureEmbedding(4)
    with pytest.raises(ValueError, match="bond features must have shape"):
        module(batch.x)
    with pytest.raises(ValueError, match="integer"):
        module(batch.edge_attr.float())
    with pytest.raises(ValueError, match="feature_dims"):
        AtomFeatureEmbedding(4, feature_dims=(3, 0))

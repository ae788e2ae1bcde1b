"""Gaussian distance kernel with per-element-pair affine (Transformer-M) against its formula."""

from __future__ import annotations

import math

import pytest
import torch
from rdkit import Chem

from molssl.chem.conformers import ConformerOptions, embed_conformers
from molssl.chem.features import ATOM_FEATURE_DIMS, element_index, mol_from_smiles
from molssl.encoders.gaussian import (
    DistanceAttentionBias,
    PairGaussianBasis,
    unordered_pair_index,
)
from tests.conftest import read_nci_smiles


@pytest.fixture(scope="module")
def molecule_pairs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every atom pair of a real NCI molecule with an RDKit conformer: (i, j, distance)."""
    smiles = next(s for s in read_nci_smiles(50) if "." not in s and "Cl" in s)
    mol = embed_conformers(mol_from_smiles(smiles), ConformerOptions(num_conformers=1, seed=1))
    distances = torch.from_numpy(Chem.Get3DDistanceMatrix(mol, confId=0))
    z = torch.tensor([atom.GetAtomicNum() for atom in mol.GetAtoms()])
    return z, distances, element_index(z)


def test_pair_index_is_symmetric_and_injective() -> None:
    types = torch.arange(5)
    a, b = torch.meshgrid(types, types, indexing="ij")
    index = unordered_pair_index(a, b, 5)
    assert torch.equal(index, index.T)
    upper = torch.triu(torch.ones(5, 5, dtype=torch.bool))
    assert index[upper].unique().numel() == int(upper.sum())


def test_basis_matches_the_formula_per_pair(
    molecule_pairs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> None:
    _, distances, element = molecule_pairs
    num_types = ATOM_FEATURE_DIMS[0]
    torch.manual_seed(0)
    basis = PairGaussianBasis(num_gaussians=8, num_atom_types=num_types).double()
    with torch.no_grad():  # a non-trivial affine per pair type
        basis.pair_mul.weight.uniform_(0.5, 1.5)
        basis.pair_bias.weight.uniform_(-0.3, 0.3)
    n = distances.size(0)
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    types = unordered_pair_index(element[i], element[j], num_types)
    with torch.no_grad():
        features = basis(distances.reshape(-1), types.reshape(-1)).reshape(n, n, 8)
    mul, shift = basis.pair_mul.weight.detach(), basis.pair_bias.weight.detach()
    means, stds = basis.means.detach(), basis.stds.detach()
    for a in range(0, n, 3):
        for b in range(n):
            pair = int(types[a, b])
            x = float(mul[pair]) * float(distances[a, b]) + float(shift[pair])
            for k in range(8):
                std = abs(float(stds[k])) + 1e-2
                expected = math.exp(-0.5 * ((x - float(means[k])) / std) ** 2) / (
                    math.sqrt(2 * math.pi) * std
                )
                assert float(features[a, b, k]) == pytest.approx(expected, rel=1e-12, abs=1e-300)
    torch.testing.assert_close(features, features.transpose(0, 1), atol=0, rtol=0)


def test_distance_bias_shapes_and_gradients(
    molecule_pairs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> None:
    _, distances, element = molecule_pairs
    module = DistanceAttentionBias(
        num_heads=4, num_gaussians=16, num_atom_types=ATOM_FEATURE_DIMS[0]
    )
    d = distances[0, 1:].float().requires_grad_(True)
    types = unordered_pair_index(
        element[:1].expand_as(element[1:]), element[1:], ATOM_FEATURE_DIMS[0]
    )
    bias, features = module(d, types)
    assert bias.shape == (d.numel(), 4) and features.shape == (d.numel(), 16)
    bias.sum().backward()
    assert d.grad is not None and torch.isfinite(d.grad).all() and bool((d.grad != 0).any())


def test_invalid_sizes() -> None:
    with pytest.raises(ValueError, match="num_gaussians"):
        PairGaussianBasis(num_gaussians=0)
    with pytest.raises(ValueError, match="num_atom_types"):
        PairGaussianBasis(num_atom_types=0)

"""MoleBLEND's 2D relation biases against per-pair brute force on RDKit's own graph."""

from __future__ import annotations

import itertools

import pytest
import torch
from rdkit import Chem
from torch_geometric.data import Batch, Data

from molssl.chem.features import mol_from_smiles, mol_to_data
from molssl.chem.graph import dense_graph_relations
from molssl.encoders.blend_relations import EdgeRelationBias, ShortestPathBias
from tests.conftest import read_nci_smiles


@pytest.fixture(scope="module")
def mols_and_batch() -> tuple[list[Chem.Mol], Batch]:
    """Eight real NCI molecules with hydrogens, one of them a salt (unreachable pairs)."""
    smiles = read_nci_smiles(300)
    salt = next(s for s in smiles if "." in s and len(s) < 40)
    chosen = [*[s for s in smiles if "." not in s][:7], salt]
    mols = [mol_from_smiles(s) for s in chosen]
    return mols, Batch.from_data_list([mol_to_data(m) for m in mols])


def test_shortest_path_bias_matches_rdkit_distances(
    mols_and_batch: tuple[list[Chem.Mol], Batch],
) -> None:
    mols, batch = mols_and_batch
    torch.manual_seed(0)
    module = ShortestPathBias(num_heads=3, max_spd=6)
    relations = dense_graph_relations(batch)
    bias = module(relations.spd)
    table = module.embedding.weight
    for b, mol in enumerate(mols):
        rdkit_spd = Chem.GetDistanceMatrix(mol)
        n = mol.GetNumAtoms()
        for i in range(n):
            for j in range(n):
                hops = rdkit_spd[i, j]
                row = 7 if hops > 1e6 else min(int(hops), 6)  # RDKit: 1e8 when unreachable
                assert torch.equal(bias[b, i, j], table[row])
    assert bool((relations.spd < 0).any()), "the salt should have unreachable pairs"


def test_shortest_path_bias_gradient_is_the_embeddings(
    mols_and_batch: tuple[list[Chem.Mol], Batch],
) -> None:
    """The CPU gather (``index_select``) gives ``nn.Embedding``'s table gradient: per row, the
    sum of the upstream gradients of the pairs in its bucket (float64, sums in another order)."""
    _, batch = mols_and_batch
    torch.manual_seed(0)
    module = ShortestPathBias(num_heads=3, max_spd=6).double()
    spd = dense_graph_relations(batch).spd
    upstream = torch.randn(*spd.shape, 3, dtype=torch.float64)
    (module(spd) * upstream).sum().backward()
    expected = torch.nn.functional.embedding(module.spd_bucket(spd), module.embedding.weight)
    (reference,) = torch.autograd.grad((expected * upstream).sum(), module.embedding.weight)
    torch.testing.assert_close(module.embedding.weight.grad, reference, rtol=1e-12, atol=1e-12)


def test_bond_encoding_matches_bond_table(mols_and_batch: tuple[list[Chem.Mol], Batch]) -> None:
    mols, batch = mols_and_batch
    torch.manual_seed(0)
    module = EdgeRelationBias(num_heads=4, encoding="bond")
    relations = dense_graph_relations(batch, max_hops=1)
    bias = module(batch.edge_attr, relations.spd, relations.path_edges)
    bond_rows = module.bond_embedding(batch.edge_attr)
    edge_offset = 0
    for b, (mol, data) in enumerate(zip(mols, batch.to_data_list(), strict=True)):
        lookup = {(int(s), int(t)): k for k, (s, t) in enumerate(data.edge_index.t().tolist())}
        n = mol.GetNumAtoms()
        for i in range(n):
            for j in range(n):
                if i == j:
                    expected = module.self_pair
                elif mol.GetBondBetweenAtoms(i, j) is not None:
                    expected = bond_rows[edge_offset + lookup[(i, j)]]
                else:
                    expected = module.no_bond
                torch.testing.assert_close(bias[b, i, j], expected, atol=0, rtol=0)
        edge_offset += data.edge_index.size(1)
    # Bond features are symmetric, so the bond encoding is too.
    pair_mask = relations.node_mask[:, :, None] & relations.node_mask[:, None, :]
    assert torch.equal(bias[pair_mask], bias.transpose(1, 2)[pair_mask])


def test_multi_hop_encoding_matches_path_average(
    mols_and_batch: tuple[list[Chem.Mol], Batch],
) -> None:
    mols, batch = mols_and_batch
    torch.manual_seed(0)
    module = EdgeRelationBias(num_heads=3, encoding="multi_hop", max_hops=3).double()
    relations = dense_graph_relations(batch, max_hops=3)
    bias = module(batch.edge_attr, relations.spd, relations.path_edges)
    bond_rows = module.bond_embedding(batch.edge_attr)
    for b, mol in enumerate(mols[:3]):
        n = mol.GetNumAtoms()
        for i in range(n):
            for j in range(n):
                hops = int(relations.spd[b, i, j])
                path = relations.path_edges[b, i, j]
                expected = torch.zeros(3, dtype=torch.float64)
                for k in range(min(max(hops, 0), 3)):
                    expected += bond_rows[path[k]] @ module.hop_weights[k]
                expected /= max(min(hops, 3), 1)
                torch.testing.assert_close(bias[b, i, j], expected, atol=1e-12, rtol=1e-12)


def _acyclic(smiles: str, min_heavy_atoms: int) -> bool:
    """A connected molecule without rings, of at least ``min_heavy_atoms`` heavy atoms."""
    if "." in smiles:
        return False
    # Keep the Mol referenced while its RingInfo is used: RingInfo does not keep it alive.
    mol = Chem.MolFromSmiles(smiles)
    return mol.GetNumAtoms() >= min_heavy_atoms and mol.GetRingInfo().NumRings() == 0


def test_multi_hop_encoding_matches_a_hand_computed_path() -> None:
    """MoleBLEND's edge relation (the default multi-hop encoding) on an acyclic real molecule,
    where every shortest path is unique: RDKit's path between the atoms, its first five bonds
    embedded and mixed by the hop matrices, averaged over ``min(hops, 5)``; 0 on the
    diagonal."""
    smiles = next(s for s in read_nci_smiles(300) if _acyclic(s, min_heavy_atoms=8))
    mol = mol_from_smiles(smiles)
    data = mol_to_data(mol)
    torch.manual_seed(0)
    module = EdgeRelationBias(num_heads=3, encoding="multi_hop", max_hops=5).double()
    relations = dense_graph_relations(data, max_hops=5)
    bias = module(data.edge_attr, relations.spd, relations.path_edges)[0]
    column = {(u, v): e for e, (u, v) in enumerate(data.edge_index.t().tolist())}
    longest = 0
    for i in range(mol.GetNumAtoms()):
        for j in range(mol.GetNumAtoms()):
            atoms = list(Chem.GetShortestPath(mol, i, j)) if i != j else [i]
            bonds = list(itertools.pairwise(atoms))
            longest = max(longest, len(bonds))
            expected = torch.zeros(3, dtype=torch.float64)
            for hop, (u, v) in enumerate(bonds[:5]):
                features = data.edge_attr[column[(u, v)]].unsqueeze(0)
                expected += module.bond_embedding(features)[0] @ module.hop_weights[hop]
            expected /= max(min(len(bonds), 5), 1)
            torch.testing.assert_close(bias[i, j], expected, atol=1e-12, rtol=1e-12)
    assert longest > 5, "the molecule must have paths beyond the five encoded hops"


def test_bond_encoding_on_a_molecule_without_bonds() -> None:
    module = EdgeRelationBias(num_heads=2, encoding="bond")
    data = mol_to_data(mol_from_smiles("[Na+].[Cl-]"))
    batch = Batch.from_data_list([data, Data(**dict(data.items()))])
    relations = dense_graph_relations(batch)
    bias = module(batch.edge_attr, relations.spd, relations.path_edges)
    assert torch.equal(bias[:, 0, 1], module.no_bond.expand(2, -1))
    assert torch.equal(bias[:, 1, 1], module.self_pair.expand(2, -1))


def test_invalid_configuration() -> None:
    with pytest.raises(ValueError, match="max_spd"):
        ShortestPathBias(num_heads=2, max_spd=0)
    with pytest.raises(ValueError, match="max_hops"):
        EdgeRelationBias(num_heads=2, encoding="multi_hop", max_hops=0)
    module = EdgeRelationBias(num_heads=2, encoding="multi_hop", max_hops=4)
    data = mol_to_data(mol_from_smiles("CCO"))
    relations = dense_graph_relations(data, max_hops=2)
    with pytest.raises(ValueError, match="hops"):
        module(data.edge_attr, relations.spd, relations.path_edges)

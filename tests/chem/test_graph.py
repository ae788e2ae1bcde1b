"""Shortest-path distances and edge paths against RDKit, on real NCI molecules with hydrogens."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rdkit import Chem
from torch_geometric.data import Batch, Data

from molssl.chem.graph import (
    AddGraphRelations,
    dense_graph_relations,
    shortest_path_edges,
    shortest_path_matrix,
)

NUM_MOLECULES = 120
SALTS = ["CCCC[N+](C)(C)C.[Cl-]", "[Na+].[Cl-]", "NN.OB1OB(O1)OB2OB(O)O2"]


def bond_edge_index(mol: Chem.Mol) -> np.ndarray:
    """``(2, E)`` both directions, built from RDKit bonds independently of molssl.features."""
    pairs = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()]
    both = pairs + [(j, i) for i, j in pairs]
    return np.asarray(both, dtype=np.int64).reshape(-1, 2).T


def rdkit_distances(mol: Chem.Mol) -> np.ndarray:
    """RDKit's topological distances with its huge 'unreachable' value mapped to -1."""
    dist = Chem.GetDistanceMatrix(mol)
    out = dist.astype(np.int64)
    out[dist > 1e6] = -1
    return out


def molecule_data(smiles: str) -> Data:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    edge_index = torch.from_numpy(bond_edge_index(mol))
    edge_attr = torch.arange(edge_index.size(1))  # an edge's own id, to check global offsets
    return Data(edge_index=edge_index, edge_attr=edge_attr, num_nodes=mol.GetNumAtoms())


def assert_valid_paths(
    edge_index: np.ndarray, spd: np.ndarray, paths: np.ndarray, node_offset: int = 0
) -> None:
    """Every path starts at i, is connected, ends at j after spd hops (or is truncated)."""
    n, _, max_hops = paths.shape
    src, dst = edge_index
    for i in range(n):
        for j in range(n):
            path = paths[i, j]
            expected_len = min(spd[i, j], max_hops) if spd[i, j] > 0 else 0
            assert (path[expected_len:] == -1).all(), (i, j, path)
            assert (path[:expected_len] >= 0).all(), (i, j, path)
            current = i + node_offset
            for edge in path[:expected_len]:
                assert src[edge] == current
                current = dst[edge]
            if 0 < spd[i, j] <= max_hops:
                assert current == j + node_offset


@pytest.fixture(scope="module")
def nci_molecules(nci_smiles: list[str]) -> list[Chem.Mol]:
    return [Chem.AddHs(Chem.MolFromSmiles(s)) for s in nci_smiles[:NUM_MOLECULES] + SALTS]


def test_spd_equals_rdkit_distance_matrix(nci_molecules: list[Chem.Mol]) -> None:
    disconnected = 0
    for mol in nci_molecules:
        expected = rdkit_distances(mol)
        disconnected += int((expected == -1).any())
        got = shortest_path_matrix(bond_edge_index(mol), mol.GetNumAtoms())
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, expected, err_msg=Chem.MolToSmiles(mol))
    assert disconnected >= len(SALTS)


def test_spd_accepts_torch_edge_index_and_atoms_without_bonds() -> None:
    empty = torch.zeros(2, 0, dtype=torch.long)
    np.testing.assert_array_equal(shortest_path_matrix(empty, 2), [[0, -1], [-1, 0]])
    assert shortest_path_matrix(empty, 0).shape == (0, 0)
    assert shortest_path_edges(empty, 2, max_hops=2).tolist() == [[[-1, -1]] * 2] * 2


def test_paths_are_real_shortest_paths(nci_molecules: list[Chem.Mol]) -> None:
    for mol in nci_molecules[:40] + nci_molecules[-len(SALTS) :]:
        edge_index = bond_edge_index(mol)
        n = mol.GetNumAtoms()
        spd = rdkit_distances(mol)
        full = shortest_path_edges(edge_index, n, max_hops=int(spd.max()) + 3)
        assert_valid_paths(edge_index, spd, full)
        # Truncation keeps the first hops of the same deterministic path.
        short = shortest_path_edges(edge_index, n, max_hops=3)
        np.testing.assert_array_equal(short, full[:, :, :3])


def test_path_takes_lowest_edge_id_on_ties() -> None:
    # A 4-ring 0-1-2-3-0: two shortest paths from 0 to 2, through 1 (edge 0) or 3 (edge 3).
    edge_index = np.array([[0, 1, 2, 3, 1, 2, 3, 0], [1, 2, 3, 0, 0, 1, 2, 3]])
    paths = shortest_path_edges(edge_index, 4, max_hops=2)
    np.testing.assert_array_equal(paths[0, 2], [0, 1])  # 0->1 (id 0), 1->2 (id 1)
    np.testing.assert_array_equal(paths[2, 0], [2, 3])  # 2->3 (id 2) beats 2->1 (id 5)


@pytest.mark.parametrize(
    ("edge_index", "num_nodes", "match"),
    [
        (np.array([[0, 1], [1, 2]]), 3, "both directions"),
        (np.array([[0, 1], [1, 5]]), 3, "outside"),
        (np.array([0, 1, 1, 0]), 2, "shape"),
    ],
)
def test_bad_edge_index_is_a_clear_error(
    edge_index: np.ndarray, num_nodes: int, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        shortest_path_matrix(edge_index, num_nodes)
    with pytest.raises(ValueError, match=match):
        shortest_path_edges(edge_index, num_nodes, max_hops=2)


def test_add_graph_relations_stores_flat_local_relations() -> None:
    data = molecule_data("CC(=O)Nc1ccc(O)cc1")
    out = AddGraphRelations(max_hops=4)(data)
    n = data.num_nodes
    assert out.spd.shape == (n * n,) and out.spd.dtype == torch.long
    assert out.path_edges.shape == (n * n, 4) and out.path_edges.dtype == torch.long
    edge_index = data.edge_index.numpy()
    np.testing.assert_array_equal(out.spd.view(n, n).numpy(), shortest_path_matrix(edge_index, n))
    np.testing.assert_array_equal(
        out.path_edges.view(n, n, 4).numpy(), shortest_path_edges(edge_index, n, 4)
    )


def test_dense_relations_same_with_or_without_precomputed(nci_smiles: list[str]) -> None:
    smiles = [nci_smiles[0], "[Na+].[Cl-]", nci_smiles[5], "O", nci_smiles[279]]
    plain = Batch.from_data_list([molecule_data(s) for s in smiles])
    transform = AddGraphRelations(max_hops=7)
    precomputed = Batch.from_data_list([transform(molecule_data(s)) for s in smiles])
    on_the_fly = dense_graph_relations(plain, max_hops=5)
    # Precomputed with more hops than asked: truncated, still identical.
    from_stored = dense_graph_relations(precomputed, max_hops=5)
    for a, b in zip(on_the_fly, from_stored, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # Precomputed with fewer hops than asked: recomputed, still identical.
    fewer = Batch.from_data_list([AddGraphRelations(2)(molecule_data(s)) for s in smiles])
    for a, b in zip(on_the_fly, dense_graph_relations(fewer, max_hops=5), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_dense_relations_pad_and_offset_a_mixed_batch(nci_smiles: list[str]) -> None:
    smiles = [nci_smiles[1], "O", nci_smiles[2], "CCCC[N+](C)(C)C.[Cl-]"]
    datas = [molecule_data(s) for s in smiles]
    batch = Batch.from_data_list([AddGraphRelations(5)(d) for d in datas])
    rel = dense_graph_relations(batch, max_hops=5)
    sizes = [d.num_nodes for d in datas]
    n_max = max(sizes)
    assert rel.spd.shape == (len(smiles), n_max, n_max)
    assert rel.path_edges.shape == (len(smiles), n_max, n_max, 5)
    global_edges = batch.edge_index.numpy()
    node_offset = 0
    for g, (data, n) in enumerate(zip(datas, sizes, strict=True)):
        assert rel.node_mask[g].tolist() == [True] * n + [False] * (n_max - n)
        assert (rel.spd[g, n:] == -1).all() and (rel.spd[g, :, n:] == -1).all()
        assert (rel.path_edges[g, n:] == -1).all() and (rel.path_edges[g, :, n:] == -1).all()
        spd = rel.spd[g, :n, :n].numpy()
        np.testing.assert_array_equal(spd, shortest_path_matrix(data.edge_index, n))
        paths = rel.path_edges[g, :n, :n].numpy()
        assert_valid_paths(global_edges, spd, paths, node_offset=node_offset)
        # Global ids index the batch's edge_attr: map back to this molecule's local ids.
        local = np.where(paths >= 0, batch.edge_attr.numpy()[np.maximum(paths, 0)], -1)
        np.testing.assert_array_equal(local, shortest_path_edges(data.edge_index, n, 5))
        node_offset += n


def test_dense_relations_of_a_single_data_object() -> None:
    data = molecule_data("c1ccncc1")
    rel = dense_graph_relations(data, max_hops=3)
    n = data.num_nodes
    assert rel.spd.shape == (1, n, n) and bool(rel.node_mask.all())
    np.testing.assert_array_equal(rel.spd[0].numpy(), shortest_path_matrix(data.edge_index, n))


def test_dense_relations_reject_mismatched_precomputed() -> None:
    data = AddGraphRelations(3)(molecule_data("CCO"))
    data.spd = data.spd[:-1]
    with pytest.raises(ValueError, match="AddGraphRelations"):
        dense_graph_relations(Batch.from_data_list([data]), max_hops=3)


def test_works_on_featurized_molecules() -> None:
    features = pytest.importorskip("molssl.chem.features")
    mol = features.mol_from_smiles("CC(C)Cc1ccc(cc1)C(C)C(=O)O")
    data = features.mol_to_data(mol)
    rel = dense_graph_relations(Batch.from_data_list([AddGraphRelations(5)(data)]), max_hops=5)
    np.testing.assert_array_equal(rel.spd[0].numpy(), rdkit_distances(mol))


def spd_only(data: Data) -> Data:
    """What prepared records give: the flat ``spd`` without ``path_edges``."""
    out = AddGraphRelations(max_hops=0)(data)
    del out.path_edges
    return out


@pytest.mark.parametrize("max_hops", [0, 1, 5, 40])
def test_paths_derived_from_spd_equal_computed(nci_smiles: list[str], max_hops: int) -> None:
    # 60 NCI molecules with hydrogens and salts, in batches of mixed sizes: the derived paths
    # are exactly the ones computed from scratch (same tie-break, global ids, padding).
    smiles = [*nci_smiles[:60], *SALTS, "O", "[Na+]"]
    for start in range(0, len(smiles), 16):
        chunk = smiles[start : start + 16]
        plain = Batch.from_data_list([molecule_data(s) for s in chunk])
        derived = Batch.from_data_list([spd_only(molecule_data(s)) for s in chunk])
        assert "path_edges" not in derived and "spd" in derived
        expected = dense_graph_relations(plain, max_hops=max_hops)
        got = dense_graph_relations(derived, max_hops=max_hops)
        for a, b in zip(expected, got, strict=True):
            torch.testing.assert_close(b, a, rtol=0, atol=0)


def test_paths_derived_from_spd_on_records_data(nci_smiles: list[str]) -> None:
    # The batches the pre-training pipeline builds from prepared records (featurised molecules).
    features = pytest.importorskip("molssl.chem.features")
    mols = [features.mol_from_smiles(s) for s in nci_smiles[100:124]]
    datas = [features.mol_to_data(mol) for mol in mols]
    plain = Batch.from_data_list(datas)
    derived = Batch.from_data_list([spd_only(d.clone()) for d in datas])
    for a, b in zip(
        dense_graph_relations(plain, max_hops=5),
        dense_graph_relations(derived, max_hops=5),
        strict=True,
    ):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


def test_short_precomputed_paths_are_derived_from_spd(nci_smiles: list[str]) -> None:
    smiles = nci_smiles[30:36]
    batch = Batch.from_data_list([AddGraphRelations(2)(molecule_data(s)) for s in smiles])
    plain = Batch.from_data_list([molecule_data(s) for s in smiles])
    relations = dense_graph_relations(batch, max_hops=4)
    expected = dense_graph_relations(plain, max_hops=4)
    torch.testing.assert_close(relations.path_edges, expected.path_edges, rtol=0, atol=0)
    # The stored spd is what the paths come from: with every distance 0, there is no hop.
    batch.spd = torch.zeros_like(batch.spd)
    assert (dense_graph_relations(batch, max_hops=4).path_edges == -1).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_paths_derived_from_spd_on_cuda(nci_smiles: list[str]) -> None:
    datas = [spd_only(molecule_data(s)) for s in [*nci_smiles[:40], *SALTS]]
    batch = Batch.from_data_list(datas)
    on_cpu = dense_graph_relations(batch, max_hops=5)
    on_gpu = dense_graph_relations(batch.to("cuda"), max_hops=5)
    for a, b in zip(on_cpu, on_gpu, strict=True):
        assert b.device.type == "cuda"
        torch.testing.assert_close(b.cpu(), a, rtol=0, atol=0)

"""Graphormer: bias parity with a brute-force reference, batching, permutation, atom masking."""

from __future__ import annotations

import jsonargparse
import numpy as np
import pytest
import torch
from rdkit import Chem
from torch_geometric.data import Batch, Data

from molssl.chem.features import mol_from_smiles, mol_to_data
from molssl.chem.graph import AddGraphRelations, dense_graph_relations
from molssl.encoders.base import EncoderOutput
from molssl.encoders.blend_relations import EdgeRelationBias, ShortestPathBias
from molssl.encoders.graphormer import Graphormer
from tests.conftest import read_nci_smiles

TINY = {
    "num_layers": 2,
    "num_heads": 4,
    "hidden_channels": 32,
    "ffn_channels": 48,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.1,
    "max_spd": 6,
    "max_hops": 3,
}
SALT = "CC(=O)[O-].[Na+]"


def tiny_model(dtype: torch.dtype = torch.float32, **overrides: object) -> Graphormer:
    torch.manual_seed(0)
    model = Graphormer(**{**TINY, **overrides}).to(dtype).eval()
    # Non-zero biases everywhere, so that a wrongly routed bias cannot hide behind small init.
    with torch.no_grad():
        for parameter in model.attention_bias.parameters():
            parameter.normal_(0.0, 0.5)
    return model


@pytest.fixture(scope="module")
def mols() -> list[Chem.Mol]:
    """Real molecules of different sizes (hydrogens explicit) plus a salt with two fragments."""
    return [mol_from_smiles(s) for s in [*read_nci_smiles(30)[::5], SALT]]


@pytest.fixture(scope="module")
def molecules(mols: list[Chem.Mol]) -> list[Data]:
    return [mol_to_data(mol) for mol in mols]


def test_output_contract(molecules: list[Data]) -> None:
    model = tiny_model()
    batch = Batch.from_data_list(molecules)
    out = model(batch)
    assert isinstance(out, EncoderOutput)
    assert out.node.shape == (batch.num_nodes, model.out_dim)
    assert out.graph.shape == (len(molecules), model.out_dim)
    assert out.vec is None and out.extras == {}
    assert torch.isfinite(out.node).all() and torch.isfinite(out.graph).all()


def reference_bias(model: Graphormer, mol: Chem.Mol, data: Data) -> torch.Tensor:
    """(H, 1 + N, 1 + N) bias with loops over pairs and hops; distances from RDKit."""
    bias_module = model.attention_bias
    n = data.num_nodes
    rdkit_spd = Chem.GetDistanceMatrix(mol).astype(np.int64)
    paths = dense_graph_relations(data, max_hops=bias_module.max_hops).path_edges[0]
    bond_emb = bias_module.edge_bias.bond_embedding(data.edge_attr)
    out = torch.zeros(bias_module.num_heads, n + 1, n + 1, dtype=bond_emb.dtype)
    out[:, 0, :] = bias_module.virtual_distance[:, None]
    out[:, 1:, 0] = bias_module.virtual_distance[:, None]
    for i in range(n):
        for j in range(n):
            distance = int(rdkit_spd[i, j])
            reachable = distance < n  # RDKit's distance between fragments is a large number
            bucket = min(distance, bias_module.max_spd) if reachable else bias_module.max_spd + 1
            value = bias_module.spd_bias.embedding.weight[bucket].clone()
            hops = [int(e) for e in paths[i, j] if e >= 0]
            assert len(hops) == (min(distance, bias_module.max_hops) if reachable else 0)
            if hops:
                value += sum(
                    bond_emb[e] @ bias_module.edge_bias.hop_weights[h] for h, e in enumerate(hops)
                ) / len(hops)
            out[:, i + 1, j + 1] = value
    return out


def test_attention_bias_matches_brute_force_reference(
    mols: list[Chem.Mol], molecules: list[Data]
) -> None:
    model = tiny_model(torch.float64)
    picks = [1, len(mols) - 1]  # a real molecule with long paths, and the salt
    chosen = [molecules[k] for k in picks]
    relations = dense_graph_relations(Batch.from_data_list(chosen), max_hops=model.max_hops)
    assert int(relations.spd.max()) > TINY["max_spd"], "the distance cap must be exercised"
    batch = Batch.from_data_list(chosen)
    bias = model.attention_bias(relations.spd, relations.path_edges, batch.edge_attr)
    for b, k in enumerate(picks):
        n = molecules[k].num_nodes
        expected = reference_bias(model, mols[k], molecules[k])
        torch.testing.assert_close(bias[b, :, : n + 1, : n + 1], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_batched_equals_each_molecule_alone(
    molecules: list[Data], dtype: torch.dtype, tol: float
) -> None:
    model = tiny_model(dtype)
    assert len({d.num_nodes for d in molecules}) == len(molecules)
    batched = model(Batch.from_data_list(molecules))
    offset = 0
    for b, data in enumerate(molecules):
        alone = model(Batch.from_data_list([data]))
        n = data.num_nodes
        torch.testing.assert_close(
            batched.node[offset : offset + n], alone.node, rtol=tol, atol=tol
        )
        torch.testing.assert_close(batched.graph[b], alone.graph[0], rtol=tol, atol=tol)
        offset += n
    single = model(molecules[0])
    torch.testing.assert_close(single.graph, model(Batch.from_data_list(molecules[:1])).graph)


def test_precomputed_relations_give_the_same_output(molecules: list[Data]) -> None:
    model = tiny_model(torch.float64)
    transform = AddGraphRelations(max_hops=TINY["max_hops"])
    on_the_fly = model(Batch.from_data_list(molecules))
    precomputed = model(Batch.from_data_list([transform(d.clone()) for d in molecules]))
    torch.testing.assert_close(precomputed.node, on_the_fly.node, rtol=0, atol=0)
    torch.testing.assert_close(precomputed.graph, on_the_fly.graph, rtol=0, atol=0)


def permuted(data: Data, perm: torch.Tensor, edge_perm: torch.Tensor) -> Data:
    """``data`` with atom ``perm[k]`` renumbered ``k`` and edges reordered by ``edge_perm``."""
    new_id = torch.empty_like(perm)
    new_id[perm] = torch.arange(perm.numel())
    return Data(
        x=data.x[perm],
        edge_index=new_id[data.edge_index[:, edge_perm]],
        edge_attr=data.edge_attr[edge_perm],
        num_nodes=data.num_nodes,
        smiles=data.smiles,
    )


def shortest_path_feature_sequences(data: Data, max_hops: int) -> list[list[set[tuple]]]:
    """For every pair, the set of bond-feature sequences of ALL its shortest paths (truncated)."""
    n = data.num_nodes
    src, dst = data.edge_index.tolist()
    features = [tuple(row) for row in data.edge_attr.tolist()]
    neighbours: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for e, (u, v) in enumerate(zip(src, dst, strict=True)):
        neighbours[u].append((v, e))
    out = []
    for i in range(n):
        seqs: list[set[tuple]] = [set() for _ in range(n)]
        seqs[i] = {()}
        frontier, seen = [i], {i}
        while frontier:
            reached: dict[int, set[tuple]] = {}
            for u in frontier:
                for v, e in neighbours[u]:
                    if v not in seen:
                        extended = {(*s, features[e])[:max_hops] for s in seqs[u]}
                        reached.setdefault(v, set()).update(extended)
            for v, found in reached.items():
                seqs[v] = found
            seen.update(reached)
            frontier = list(reached)
        out.append(seqs)
    return out


def test_permutation_with_consistent_relations(molecules: list[Data]) -> None:
    """Atoms and edges renumbered, the precomputed paths renumbered alike: node outputs permute
    and the graph embedding stays, whatever the molecule (ties between paths included)."""
    model = tiny_model(torch.float64)
    transform = AddGraphRelations(max_hops=TINY["max_hops"])
    generator = torch.Generator().manual_seed(3)
    for data in molecules:
        n, num_edges = data.num_nodes, data.edge_index.size(1)
        perm = torch.randperm(n, generator=generator)
        edge_perm = torch.randperm(num_edges, generator=generator)
        original = transform(data.clone())
        moved = permuted(data, perm, edge_perm)
        new_edge_id = torch.empty_like(edge_perm)
        new_edge_id[edge_perm] = torch.arange(num_edges)
        spd = original.spd.view(n, n)[perm][:, perm]
        paths = original.path_edges.view(n, n, -1)[perm][:, perm]
        moved.spd = spd.reshape(-1)
        moved.path_edges = torch.where(paths >= 0, new_edge_id[paths.clamp(min=0)], -1).view(
            n * n, -1
        )
        out, out_moved = model(original), model(moved)
        torch.testing.assert_close(out_moved.node, out.node[perm], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(out_moved.graph, out.graph, rtol=1e-10, atol=1e-10)


def test_permutation_end_to_end_where_shortest_paths_agree(
    mols: list[Chem.Mol], molecules: list[Data]
) -> None:
    """With relations computed on the fly: exact invariance wherever every pair's tied shortest
    paths carry the same bond features (the edge encoding takes one path, as in the paper)."""
    model = tiny_model(torch.float64)
    generator = torch.Generator().manual_seed(4)
    tested_rings = 0
    for mol, data in zip(mols, molecules, strict=True):
        sequences = shortest_path_feature_sequences(data, TINY["max_hops"])
        if any(len(s) > 1 for row in sequences for s in row):
            continue
        tested_rings += mol.GetRingInfo().NumRings() > 0
        perm = torch.randperm(data.num_nodes, generator=generator)
        edge_perm = torch.randperm(data.edge_index.size(1), generator=generator)
        out, out_moved = model(data), model(permuted(data, perm, edge_perm))
        torch.testing.assert_close(out_moved.node, out.node[perm], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(out_moved.graph, out.graph, rtol=1e-10, atol=1e-10)
    assert tested_rings >= 2


def masked_batch(molecules: list[Data], masked: list[int]) -> Batch:
    batch = Batch.from_data_list(molecules)
    atom_mask = torch.zeros(batch.num_nodes, dtype=torch.bool)
    atom_mask[masked] = True
    batch.atom_mask = atom_mask
    return batch


def test_masked_atoms_cannot_leak_their_identity(molecules: list[Data]) -> None:
    model = tiny_model(torch.float64)
    masked = [0, 3, molecules[0].num_nodes + 2]
    batch = masked_batch(molecules, masked)
    out = model(batch)
    assert not torch.allclose(out.node, model(Batch.from_data_list(molecules)).node)
    changed = batch.clone()
    for atom in masked:
        # Another element and other features: the output must not move anywhere.
        changed.x[atom] = (changed.x[atom] + 1) % torch.tensor(model.atom_embedding.feature_dims)
    assert not torch.equal(changed.x, batch.x)
    out_changed = model(changed)
    torch.testing.assert_close(out_changed.node, out.node, rtol=0, atol=0)
    torch.testing.assert_close(out_changed.graph, out.graph, rtol=0, atol=0)


def test_masking_acts_only_through_the_input_embedding(molecules: list[Data]) -> None:
    model = tiny_model(torch.float64)
    plain = model(Batch.from_data_list(molecules))
    none_masked = model(masked_batch(molecules, []))
    torch.testing.assert_close(none_masked.node, plain.node, rtol=0, atol=0)
    atom = 5
    batch = masked_batch(molecules, [atom])
    with torch.no_grad():
        # A mask embedding equal to the atom's own feature embedding must change nothing.
        assert model.mask_embedding is not None
        model.mask_embedding.copy_(model.atom_embedding(batch.x[atom : atom + 1])[0])
    same = model(batch)
    torch.testing.assert_close(same.node, plain.node, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(same.graph, plain.graph, rtol=1e-12, atol=1e-12)


def test_every_parameter_gets_a_gradient(molecules: list[Data]) -> None:
    model = tiny_model().train()
    out = model(masked_batch(molecules, [1, 7]))
    (out.node.pow(2).mean() + out.graph.pow(2).mean()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert not torch.allclose(model(Batch.from_data_list(molecules)).graph, out.graph)


def test_constructible_from_class_path() -> None:
    parser = jsonargparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--encoder", type=torch.nn.Module)
    config = parser.parse_object(
        {"encoder": {"class_path": "molssl.encoders.graphormer.Graphormer", "init_args": TINY}}
    )
    encoder = parser.instantiate(config).encoder
    assert isinstance(encoder, Graphormer)
    assert encoder.out_dim == 32 and len(encoder.transformer.layers) == 2
    assert encoder.attention_bias.edge_bias.hop_weights.shape == (3, 4, 4)
    # One implementation of both encodings, shared with MoleBLEND.
    assert isinstance(encoder.attention_bias.spd_bias, ShortestPathBias)
    assert encoder.attention_bias.spd_bias.max_spd == TINY["max_spd"]
    assert isinstance(encoder.attention_bias.edge_bias, EdgeRelationBias)
    assert encoder.attention_bias.edge_bias.encoding == "multi_hop"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden_channels": 30}, "divisible"),
        ({"max_hops": 0}, "max_hops"),
        ({"max_spd": 0}, "max_spd"),
        ({"max_degree": 0}, "max_degree"),
    ],
)
def test_bad_configuration_raises(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Graphormer(**{**TINY, **kwargs})


def test_bad_input_raises_clear_errors(molecules: list[Data]) -> None:
    model = tiny_model()
    batch = Batch.from_data_list(molecules[:2])
    no_bonds = batch.clone()
    no_bonds.edge_attr = None
    with pytest.raises(ValueError, match="edge_attr"):
        model(no_bonds)
    out_of_vocab = batch.clone()
    out_of_vocab.x[0, 0] = 10_000
    with pytest.raises(ValueError, match="column 0"):
        model(out_of_vocab)
    wrong_mask = batch.clone()
    wrong_mask.atom_mask = torch.zeros(batch.num_nodes)
    with pytest.raises(ValueError, match="atom_mask"):
        model(wrong_mask)
    unmaskable = tiny_model(mask_token=False)
    with pytest.raises(ValueError, match="mask_token"):
        unmaskable(masked_batch(molecules[:2], [0]))

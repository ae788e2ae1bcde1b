"""MoleBLEND blended-relation transformer: the pair and atom draws (ours and the official one),
the atom features against brute force, padding, invariances, 3D isolation, 2D-only input."""

from __future__ import annotations

import math

import pytest
import torch
from jsonargparse import ArgumentParser
from rdkit import Chem
from torch import nn
from torch_geometric.data import Batch, Data

from molssl.chem.conformers import ConformerOptions, embed_conformers
from molssl.chem.features import mol_from_smiles, mol_to_data
from molssl.encoders.blend import MoleBlendTransformer
from molssl.encoders.blend_choice import (
    ATOM_2D,
    ATOM_3D,
    PADDING_CHOICE,
    RELATION_DISTANCE,
    RELATION_EDGE,
    RELATION_SPD,
    sample_atom_choice,
    sample_blend_choice,
)
from molssl.encoders.blend_distance import ATOM_3D_FEATURE_SCALE
from molssl.encoders.gaussian import unordered_pair_index
from molssl.objectives.views import RemoveHydrogens
from tests.conftest import read_nci_smiles
from tests.encoders.molecules_3d import TINY_BLEND

TINY = TINY_BLEND
EXACT = {"atol": 1e-10, "rtol": 1e-10}


def _embedded_data(smiles: str, heavy: bool = False) -> Data:
    mol = embed_conformers(mol_from_smiles(smiles), ConformerOptions(num_conformers=1, seed=7))
    data = mol_to_data(mol, conf_id=0)
    data.pos = data.pos.double()
    if heavy:  # MoleBLEND's heavy-atom graph
        data, mol = RemoveHydrogens()(data), Chem.RemoveHs(mol)
    # RDKit's own neighbour counts (of the atoms the graph has), for the brute-force tests.
    data.rdkit_degree = torch.tensor([atom.GetDegree() for atom in mol.GetAtoms()])
    return data


@pytest.fixture(scope="module")
def molecules() -> list[Data]:
    """Real NCI molecules of different sizes (with hydrogens), each with an RDKit conformer."""
    picked: list[Data] = []
    sizes: set[int] = set()
    for smiles in read_nci_smiles(120):
        if "." in smiles:
            continue
        data = _embedded_data(smiles)
        if 12 <= data.num_nodes <= 40 and data.num_nodes not in sizes:
            picked.append(data)
            sizes.add(data.num_nodes)
        if len(picked) == 5:
            break
    assert len(picked) == 5
    return picked


@pytest.fixture(scope="module")
def heavy_molecules(molecules: list[Data]) -> list[Data]:
    """The same molecules as heavy-atom graphs (RemoveHydrogens)."""
    return [_embedded_data(data.smiles, heavy=True) for data in molecules]


@pytest.fixture(scope="module")
def salt() -> Data:
    """A real disconnected molecule (salt) from the NCI set: unreachable atom pairs."""
    smiles = next(s for s in read_nci_smiles(300) if "." in s and len(s) < 40)
    return _embedded_data(smiles)


def _model(**overrides: object) -> MoleBlendTransformer:
    torch.manual_seed(0)
    model = MoleBlendTransformer(**{**TINY, **overrides})  # type: ignore[arg-type]
    return model.double().eval()


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _permuted(data: Data, perm: torch.Tensor) -> Data:
    """The same molecule with atom ``new_k = old perm[k]``."""
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(perm.numel())
    return Data(
        x=data.x[perm],
        z=data.z[perm],
        pos=data.pos[perm],
        edge_index=inverse[data.edge_index],
        edge_attr=data.edge_attr,
        num_nodes=data.num_nodes,
    )


def _is_acyclic(smiles: str, min_heavy_atoms: int) -> bool:
    """A connected molecule without rings: every shortest path is the only path."""
    if "." in smiles:
        return False
    # Keep the Mol referenced while its RingInfo is used: RingInfo does not keep it alive.
    mol = mol_from_smiles(smiles)
    return mol.GetNumHeavyAtoms() >= min_heavy_atoms and mol.GetRingInfo().NumRings() == 0


def _rotation(axis: tuple[float, float, float], angle: float) -> torch.Tensor:
    """Rodrigues rotation matrix (float64)."""
    k = torch.tensor(axis, dtype=torch.float64)
    k = k / k.norm()
    cross = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    cross = cross.double()
    return (
        torch.eye(3, dtype=torch.float64)
        + math.sin(angle) * cross
        + (1 - math.cos(angle)) * (cross @ cross)
    )


def test_choice_is_symmetric_per_molecule_and_padding_is_marked(molecules: list[Data]) -> None:
    batch = Batch.from_data_list(molecules)
    out = _model().train()(batch, generator=_generator())
    choice, node_mask = out.extras["blend_choice"], out.extras["node_mask"]
    pair_mask = node_mask[:, :, None] & node_mask[:, None, :]
    assert choice.shape == pair_mask.shape and choice.dtype == torch.long
    assert torch.equal(choice, choice.transpose(1, 2))
    assert bool((choice[~pair_mask] == PADDING_CHOICE).all())
    real = choice[pair_mask]
    assert set(real.unique().tolist()) == {RELATION_SPD, RELATION_EDGE, RELATION_DISTANCE}


def test_each_molecule_gets_its_own_draw(molecules: list[Data]) -> None:
    # Eight copies of one molecule: a batch-shared mask would make them all identical.
    batch = Batch.from_data_list([molecules[0]] * 8)
    choice = _model().train()(batch, generator=_generator(3)).extras["blend_choice"]
    n = molecules[0].num_nodes
    upper = torch.ones(n, n, dtype=torch.bool).triu()
    draws = [choice[b][upper] for b in range(8)]
    agreement = [float((draws[0] == d).double().mean()) for d in draws[1:]]
    # Independent draws agree on a pair with probability 0.2^2 + 0.2^2 + 0.6^2 = 0.44.
    assert all(0.25 < a < 0.65 for a in agreement), agreement


@pytest.mark.parametrize("probs", [(0.2, 0.2, 0.6), (0.5, 0.3, 0.2), (0.7, 0.0, 0.3)])
def test_frequencies_match_blend_probs(probs: tuple[float, float, float]) -> None:
    node_mask = torch.ones(64, 40, dtype=torch.bool)
    node_mask[::3, 25:] = False  # some molecules are shorter
    choice = sample_blend_choice(node_mask, probs, _generator(11))
    upper = torch.ones(40, 40, dtype=torch.bool).triu()
    drawn = choice[(choice >= 0) & upper]  # independent draws only (the rest are mirrors)
    assert drawn.numel() > 40_000
    freq = torch.bincount(drawn, minlength=3).double() / drawn.numel()
    # Binomial standard error here is below 0.0025; 0.01 is four of them.
    assert torch.allclose(freq, torch.tensor(probs, dtype=torch.float64), atol=0.01), freq
    for relation, p in enumerate(probs):
        if p == 0.0:
            assert not bool((drawn == relation).any())


def test_without_coordinates_blend_renormalises_over_2d(molecules: list[Data]) -> None:
    batch = Batch.from_data_list(
        [Data(**{k: v for k, v in d.items() if k != "pos"}) for d in molecules]
    )
    out = _model().train()(batch, generator=_generator())
    real = out.extras["blend_choice"][out.extras["blend_choice"] >= 0]
    freq = torch.bincount(real, minlength=3).double() / real.numel()
    assert freq[RELATION_DISTANCE] == 0.0
    assert abs(float(freq[RELATION_SPD]) - 0.5) < 0.05
    atoms = out.extras["atom_choice"]
    assert bool((atoms[atoms >= 0] == ATOM_2D).all())
    with pytest.raises(ValueError, match="no relation is left"):
        _model(blend_probs=(0.0, 0.0, 1.0)).train()(batch)


@pytest.mark.parametrize("edge_encoding", ["bond", "multi_hop"])
def test_batched_equals_unbatched_in_all_mode(
    molecules: list[Data], salt: Data, edge_encoding: str
) -> None:
    model = _model(relation_mode="all", edge_encoding=edge_encoding)
    data_list = [*molecules, salt]
    batched = model(Batch.from_data_list(data_list))
    offset = 0
    for b, data in enumerate(data_list):
        alone = model(data)  # a bare Data is encoded as a batch of one
        n = data.num_nodes
        torch.testing.assert_close(batched.node[offset : offset + n], alone.node, **EXACT)
        torch.testing.assert_close(batched.graph[b], alone.graph[0], **EXACT)
        offset += n
    assert torch.isfinite(batched.node).all() and torch.isfinite(batched.graph).all()


def test_batched_equals_unbatched_with_a_fixed_choice(molecules: list[Data]) -> None:
    model = _model()
    batch = Batch.from_data_list(molecules)
    batched = model(batch, generator=_generator(5))
    choice, atoms = batched.extras["blend_choice"], batched.extras["atom_choice"]
    assert set(atoms[atoms >= 0].tolist()) == {ATOM_2D, ATOM_3D}
    offset = 0
    for b, data in enumerate(molecules):
        n = data.num_nodes
        alone = model(
            Batch.from_data_list([data]),
            blend_choice=choice[b : b + 1, :n, :n],
            atom_choice=atoms[b : b + 1, :n],
        )
        torch.testing.assert_close(batched.node[offset : offset + n], alone.node, **EXACT)
        torch.testing.assert_close(batched.graph[b], alone.graph[0], **EXACT)
        offset += n


@pytest.mark.parametrize("edge_encoding", ["bond", "multi_hop"])
def test_atom_permutation_invariance_in_all_mode(molecules: list[Data], edge_encoding: str) -> None:
    model = _model(relation_mode="all", edge_encoding=edge_encoding)
    if edge_encoding == "bond":
        data = molecules[-1]
    else:
        # Multi-hop paths are unique only in acyclic molecules; elsewhere ties are broken by
        # atom order (documented), so test the exact invariance on a real acyclic molecule.
        data = next(_embedded_data(s) for s in read_nci_smiles(300) if _is_acyclic(s, 10))
    perm = torch.randperm(data.num_nodes, generator=_generator(1))
    before = model(Batch.from_data_list([data]))
    after = model(Batch.from_data_list([_permuted(data, perm)]))
    torch.testing.assert_close(after.node, before.node[perm], **EXACT)
    torch.testing.assert_close(after.graph, before.graph, **EXACT)


@pytest.mark.parametrize("mode", ["blend", "all"])
def test_invariant_to_rotation_and_translation(molecules: list[Data], mode: str) -> None:
    model = _model(relation_mode=mode)
    batch = Batch.from_data_list(molecules)
    moved = batch.clone()
    rotation = _rotation((0.3, -1.0, 0.5), 1.1)
    moved.pos = batch.pos @ rotation.T + torch.tensor([4.0, -2.5, 7.0], dtype=torch.float64)
    before = model(batch, generator=_generator(2))
    after = model(moved, generator=_generator(2))
    torch.testing.assert_close(after.node, before.node, **EXACT)
    torch.testing.assert_close(after.graph, before.graph, **EXACT)
    # Control: a non-rigid change of the coordinates does change the output.
    bent = batch.clone()
    bent.pos = batch.pos * torch.tensor([1.0, 1.3, 1.0], dtype=torch.float64)
    assert not torch.allclose(model(bent, generator=_generator(2)).node, before.node)


def test_distance_enters_only_through_chosen_pairs_and_3d_atoms(molecules: list[Data]) -> None:
    model = _model()
    batch = Batch.from_data_list(molecules)
    jittered = batch.clone()
    jittered.pos = batch.pos + 0.3 * torch.randn(batch.pos.shape, generator=_generator(4)).double()

    # No pair chose the distance and no atom its 3D feature: coordinates are irrelevant.
    model_2d = _model(blend_probs=(0.5, 0.5, 0.0), atom_blend_probs=(1.0, 0.0))
    torch.testing.assert_close(
        model_2d(jittered, generator=_generator()).node,
        model_2d(batch, generator=_generator()).node,
        **EXACT,
    )

    # All atoms 2D, and atom k of molecule 0 shows no 3D pair: moving atom k changes nothing ...
    out = model(batch, generator=_generator(6))
    choice = out.extras["blend_choice"].clone()
    atoms = out.extras["atom_choice"].clamp(max=ATOM_2D)
    k = 3
    n0 = molecules[0].num_nodes
    choice[0, k, :n0] = torch.where(choice[0, k, :n0] == RELATION_DISTANCE, 0, choice[0, k, :n0])
    choice[0, :n0, k] = choice[0, k, :n0]
    moved = batch.clone()
    moved.pos = batch.pos.clone()
    moved.pos[k] += torch.tensor([0.4, -0.2, 0.3], dtype=torch.float64)
    reference = model(batch, blend_choice=choice, atom_choice=atoms)
    torch.testing.assert_close(
        model(moved, blend_choice=choice, atom_choice=atoms).node, reference.node, **EXACT
    )
    # ... while the same move matters once one of its pairs shows the distance (control), or
    # once another atom of the molecule takes its 3D feature (which sums over all atoms). At
    # initialisation a single pair's distance bias is small: far above rounding, though.
    with_pair = choice.clone()
    with_pair[0, k, k + 1] = with_pair[0, k + 1, k] = RELATION_DISTANCE
    change = (
        model(moved, blend_choice=with_pair, atom_choice=atoms).node
        - model(batch, blend_choice=with_pair, atom_choice=atoms).node
    )
    assert change.abs().max() > 1e-9
    with_atom = atoms.clone()
    with_atom[0, k + 2] = ATOM_3D
    change = (
        model(moved, blend_choice=choice, atom_choice=with_atom).node
        - model(batch, blend_choice=choice, atom_choice=with_atom).node
    )
    assert change.abs().max() > 1e-9


@pytest.mark.parametrize("graphs", ["molecules", "heavy_molecules"])
def test_input_tokens_match_brute_force_atom_features(
    graphs: str, request: pytest.FixtureRequest
) -> None:
    """An atom's input is its feature embedding plus its degree embedding (2D, degree counted
    by RDKit; on heavy-atom graphs, the degree in ``Chem.RemoveHs(mol)``) or
    ``0.01 * W sum_j gauss(d_ij)`` over every atom j of the molecule, itself included (3D),
    as the official ``blend_atom_feature``."""
    molecules: list[Data] = request.getfixturevalue(graphs)
    assert all(bool((data.z > 1).all()) for data in molecules) == (graphs == "heavy_molecules")
    model = _model(embedding_norm=True)
    batch = Batch.from_data_list(molecules[:2])
    captured: list[torch.Tensor] = []
    model.embedding_norm.register_forward_hook(lambda m, args, out: captured.append(args[0]))
    out = model(batch, generator=_generator(8))
    atoms = out.extras["atom_choice"]
    tokens = captured[0][:, 1:]
    basis, proj = model.distance.bias.basis, model.distance.node_proj
    for b, data in enumerate(molecules[:2]):
        features = model.atom_embedding(data.x)
        for i in range(data.num_nodes):
            if int(atoms[b, i]) == ATOM_2D:
                extra = model.degree_embedding.weight[int(data.rdkit_degree[i])]
            else:
                summed = torch.zeros(basis.num_gaussians, dtype=torch.float64)
                for j in range(data.num_nodes):
                    distance = (data.pos[i] - data.pos[j]).norm().clamp(min=1e-6)
                    pair = unordered_pair_index(data.x[i, 0], data.x[j, 0], model.num_atom_types)
                    summed += basis(distance.reshape(1), pair.reshape(1))[0]
                extra = ATOM_3D_FEATURE_SCALE * proj(summed)
            torch.testing.assert_close(tokens[b, i], features[i] + extra, atol=1e-12, rtol=1e-10)
    assert set(atoms[atoms >= 0].tolist()) == {ATOM_2D, ATOM_3D}

    # The distance relation's pair bias, pair by pair (symmetric, zero on padding).
    node_mask = out.extras["node_mask"]
    pos = torch.zeros(*node_mask.shape, 3, dtype=torch.float64)
    pos[node_mask] = batch.pos
    element = torch.zeros(node_mask.shape, dtype=torch.long)
    element[node_mask] = batch.x[:, 0]
    bias, _ = model.distance(pos, element, node_mask)
    data = molecules[1]
    for i in range(data.num_nodes):
        for j in range(data.num_nodes):
            distance = (data.pos[i] - data.pos[j]).norm().clamp(min=1e-6).reshape(1)
            pair = unordered_pair_index(data.x[i, 0], data.x[j, 0], model.num_atom_types)
            expected = model.distance.bias(distance, pair.reshape(1))[0][0]
            torch.testing.assert_close(bias[1, i, j], expected, atol=1e-12, rtol=1e-10)
    assert bool((bias[0, molecules[0].num_nodes :] == 0).all())


def test_atom_draw_frequencies_and_official_pair_draw(molecules: list[Data]) -> None:
    node_mask = torch.ones(256, 40, dtype=torch.bool)
    node_mask[::3, 25:] = False
    atoms = sample_atom_choice(node_mask, 0.6, _generator(12))
    real = atoms[node_mask]
    assert bool((atoms[~node_mask] == PADDING_CHOICE).all())
    # Binomial standard error 0.0052 over ~8,900 atoms: 0.6 of them take the 3D feature.
    assert abs(float((real == ATOM_3D).double().mean()) - 0.6) < 0.02
    # The official pair draw: one (N, N) choice for the whole batch, not symmetric.
    batch = Batch.from_data_list([molecules[0]] * 4)
    choice = (
        _model(blend_draw="batch").train()(batch, generator=_generator()).extras["blend_choice"]
    )
    assert all(torch.equal(choice[0], choice[b]) for b in range(1, 4))
    assert not torch.equal(choice[0], choice[0].T)
    shared = sample_blend_choice(node_mask, (0.2, 0.2, 0.6), _generator(13), per_molecule=False)
    assert torch.equal(shared[1, :25, :25], shared[0, :25, :25])
    drawn = shared[0][shared[0] >= 0]
    freq = torch.bincount(drawn, minlength=3).double() / drawn.numel()
    assert torch.allclose(freq, torch.tensor([0.2, 0.2, 0.6], dtype=torch.float64), atol=0.05)


def test_two_d_only_input_ignores_coordinates(molecules: list[Data]) -> None:
    batch = Batch.from_data_list(molecules)
    jittered = batch.clone()
    jittered.pos = batch.pos + torch.randn(batch.pos.shape, generator=_generator(9)).double()
    without = Batch.from_data_list(
        [Data(**{k: v for k, v in d.items() if k != "pos"}) for d in molecules]
    )
    for mode in ("all", "blend"):
        model = _model(use_3d=False, relation_mode=mode)
        reference = model(batch, generator=_generator())
        for other in (jittered, without):
            torch.testing.assert_close(model(other, generator=_generator()).node, reference.node)
        if mode == "blend":
            assert not bool((reference.extras["blend_choice"] == RELATION_DISTANCE).any())
            atoms = reference.extras["atom_choice"]
            assert bool((atoms[atoms >= 0] == ATOM_2D).all())


def test_defaults_are_the_official_architecture() -> None:
    model = MoleBlendTransformer(num_layers=3, num_heads=2, hidden_channels=8, drop_path=0.1)
    assert model.edge_bias.encoding == "multi_hop" and model.edge_bias.max_hops == 5
    assert model.blend_probs == pytest.approx((0.2, 0.2, 0.6))
    assert model.atom_blend_probs == pytest.approx((0.4, 0.6))
    assert model.blend_draw == "molecule" and model.use_3d
    assert isinstance(model.embedding_norm, nn.LayerNorm)
    # Post-LN blocks and no LayerNorm after the last one (moleblend_encoder_layer.py,
    # sandwich_ln off; the encoder normalises only its input, emb_layer_norm).
    assert not any(layer.norm_first for layer in model.transformer.layers)
    assert isinstance(model.transformer.final_norm, nn.Identity)
    assert [layer.drop_path.p for layer in model.transformer.layers] == pytest.approx(
        [0.0, 0.05, 0.1]
    )
    assert model.spd_bias.embedding.num_embeddings == 512  # the official num_spatial


def test_eval_draws_are_reproducible_and_training_draws_vary(molecules: list[Data]) -> None:
    model = _model()
    batch = Batch.from_data_list(molecules)
    first = model(batch).extras["blend_choice"]
    assert torch.equal(model(batch).extras["blend_choice"], first)
    model.train()
    assert not torch.equal(model(batch).extras["blend_choice"], model(batch).extras["blend_choice"])
    model.relation_mode = "all"
    extras = model(batch).extras
    assert "blend_choice" not in extras and "atom_choice" not in extras


def test_extras_contract_and_gradients(molecules: list[Data], salt: Data) -> None:
    model = _model(edge_encoding="multi_hop")
    batch = Batch.from_data_list([*molecules, salt])
    batch.pos.requires_grad_(True)
    out = model.train()(batch, generator=_generator())
    num_graphs, n_max = out.extras["node_mask"].shape
    assert model.out_dim == TINY["hidden_channels"]
    assert out.node.shape == (batch.num_nodes, model.out_dim)
    assert out.graph.shape == (num_graphs, model.out_dim) and out.vec is None
    node_mask = out.extras["node_mask"]
    torch.testing.assert_close(out.extras["node_padded"][node_mask], out.node)
    assert out.extras["spd"].shape == (num_graphs, n_max, n_max)
    assert out.extras["path_edges"].shape == (num_graphs, n_max, n_max, 5)
    # The salt has unreachable pairs, marked -1 like padding.
    assert bool((out.extras["spd"][-1][: salt.num_nodes, : salt.num_nodes] == -1).any())
    assert out.extras["atom_choice"].shape == (num_graphs, n_max)
    # Weights per entry: plain sums of layer-normalised outputs are constant (round-off grads).
    generator = torch.Generator().manual_seed(0)
    node_weights = torch.randn(out.node.shape, generator=generator).to(out.node.dtype)
    graph_weights = torch.randn(out.graph.shape, generator=generator).to(out.graph.dtype)
    ((out.node * node_weights).sum() + (out.graph * graph_weights).sum()).backward()
    assert batch.pos.grad is not None and torch.isfinite(batch.pos.grad).all()
    assert float(batch.pos.grad.abs().sum()) > 0.0
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


def test_bad_inputs_raise_clear_errors(molecules: list[Data]) -> None:
    model = _model()
    batch = Batch.from_data_list(molecules[:2])
    n_max = max(d.num_nodes for d in molecules[:2])
    with pytest.raises(ValueError, match="shape"):
        model(batch, blend_choice=torch.zeros(2, n_max + 1, n_max + 1, dtype=torch.long))
    bad = torch.zeros(2, n_max, n_max, dtype=torch.long)
    bad[0, 0, 1] = 3
    with pytest.raises(ValueError, match="0, 1 or 2"):
        model(batch, blend_choice=bad)
    asym = torch.zeros(2, n_max, n_max, dtype=torch.long)
    asym[0, 0, 1] = RELATION_EDGE
    with pytest.raises(ValueError, match="symmetric"):
        model(batch, blend_choice=asym)
    _model(blend_draw="batch")(batch, blend_choice=asym)  # the official draw is not symmetric
    with pytest.raises(ValueError, match="atom_choice"):
        model(batch, atom_choice=torch.full((2, n_max), 2))
    with pytest.raises(ValueError, match="atom_choice"):
        model(batch, atom_choice=torch.zeros(2, n_max + 1, dtype=torch.long))
    no_pos = Batch.from_data_list(
        [Data(**{k: v for k, v in d.items() if k != "pos"}) for d in molecules[:2]]
    )
    with pytest.raises(ValueError, match="no 'pos'"):
        model(no_pos, blend_choice=torch.full((2, n_max, n_max), RELATION_DISTANCE))
    with pytest.raises(ValueError, match="no 'pos'"):
        model(no_pos, atom_choice=torch.full((2, n_max), ATOM_3D))
    without_bonds = Data(**{k: v for k, v in molecules[0].items() if k != "edge_attr"})
    with pytest.raises(ValueError, match="edge_attr"):
        model(without_bonds)
    flat_pos = molecules[0].clone()
    flat_pos.pos = flat_pos.pos[:, :2]
    with pytest.raises(ValueError, match="pos must have shape"):
        model(flat_pos)
    with pytest.raises(ValueError, match="blend_probs"):
        MoleBlendTransformer(**TINY, blend_probs=(0.5, -0.1, 0.6))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="blend_probs"):
        MoleBlendTransformer(**TINY, blend_probs=(0.0, 0.0, 0.0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="relation_mode"):
        MoleBlendTransformer(**TINY, relation_mode="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="edge encoding"):
        MoleBlendTransformer(**TINY, edge_encoding="path")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="blend_draw"):
        MoleBlendTransformer(**TINY, blend_draw="pair")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="atom_blend_probs"):
        MoleBlendTransformer(**TINY, atom_blend_probs=(0.4, 0.3, 0.3))  # type: ignore[arg-type]


def test_configurable_by_class_path() -> None:
    parser = ArgumentParser()
    parser.add_argument("--encoder", type=nn.Module)
    config = parser.parse_object(
        {
            "encoder": {
                "class_path": "molssl.encoders.blend.MoleBlendTransformer",
                "init_args": {**TINY, "blend_probs": [0.1, 0.3, 0.6], "relation_mode": "all"},
            }
        }
    )
    encoder = parser.instantiate(config).encoder
    assert isinstance(encoder, MoleBlendTransformer)
    assert encoder.relation_mode == "all"
    assert encoder.blend_probs == pytest.approx((0.1, 0.3, 0.6))
    assert encoder.out_dim == TINY["hidden_channels"]

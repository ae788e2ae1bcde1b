"""BlendPredict on real molecules with a tiny MoleBLEND encoder: the official targets and losses
against a brute-force reference built from RDKit and NumPy, pair selection, padding, batching,
equivariance of the denoising prediction, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from rdkit import Chem
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from molssl.chem.conformers import ConformerOptions, embed_conformers
from molssl.chem.features import BOND_FEATURE_DIMS, mol_from_smiles, mol_to_data
from molssl.encoders.base import EncoderOutput
from molssl.encoders.blend import MoleBlendTransformer
from molssl.encoders.blend_choice import (
    ATOM_3D,
    RELATION_DISTANCE,
    RELATION_EDGE,
    RELATION_SPD,
    sample_atom_choice,
    sample_blend_choice,
)
from molssl.encoders.padding import to_padded
from molssl.objectives.blend_predict import (
    NUM_EDGE_CLASSES,
    RELATION_KEYS,
    BlendPredict,
    edge_feature_class,
)
from molssl.objectives.denoise import CoordDenoise
from molssl.objectives.views import CoordNoise
from tests.conftest import read_nci_smiles
from tests.encoders.molecules_3d import TINY_BLEND, fixed_rotation
from tests.objectives.samples import collate, pretrain_sample

# NCI molecules with conformers: a quinone without rotatable bonds (0), a nitro-thiazoline
# (3), a dioxime (8) and a flexible thioether (18); plus the first salt of the set.
INDICES = (0, 3, 8, 18)
TINY = TINY_BLEND
RDKIT_BOND_TYPES = (
    Chem.BondType.SINGLE,
    Chem.BondType.DOUBLE,
    Chem.BondType.TRIPLE,
    Chem.BondType.AROMATIC,
)
RDKIT_STEREOS = (
    Chem.BondStereo.STEREONONE,
    Chem.BondStereo.STEREOANY,
    Chem.BondStereo.STEREOZ,
    Chem.BondStereo.STEREOE,
    Chem.BondStereo.STEREOCIS,
    Chem.BondStereo.STEREOTRANS,
)


def molecule_smiles() -> list[str]:
    nci = read_nci_smiles(300)
    salt = next(s for s in nci if "." in s and len(s) < 40)
    return [*(nci[i] for i in INDICES), salt]


def noisy_samples(sigma: float = 0.2, seed: int = 0) -> list[Data]:
    """Real samples in float64 through the objective's view (coordinate noise)."""
    torch.manual_seed(seed)
    samples = []
    for index, smiles in enumerate(molecule_smiles()):
        data = pretrain_sample(smiles, mol_id=index).clone()
        data.pos = data.pos.double()
        samples.append(CoordNoise(sigma)(data))
    return samples


def tiny_encoder() -> MoleBlendTransformer:
    torch.manual_seed(0)
    return MoleBlendTransformer(**TINY).double()  # type: ignore[arg-type]


def fixed_choices(batch: Batch, seed: int = 1) -> dict[str, Tensor]:
    """A pair and an atom choice drawn once, to pass to the encoder."""
    node_mask = to_padded(batch.z, batch.batch, batch.num_graphs)[1]
    generator = torch.Generator().manual_seed(seed)
    return {
        "blend_choice": sample_blend_choice(node_mask, (0.2, 0.2, 0.6), generator),
        "atom_choice": sample_atom_choice(node_mask, 0.6, generator),
    }


@pytest.fixture(scope="module")
def samples() -> list[Data]:
    return noisy_samples()


@pytest.fixture(scope="module")
def batch(samples: list[Data]) -> Batch:
    return collate(samples)


def objective(**overrides: object) -> BlendPredict:
    torch.manual_seed(3)
    settings: dict[str, object] = {"spd_classes": 6, "noise_channels": 16, "pos_channels": 8}
    return BlendPredict(**{**settings, **overrides}).double()  # type: ignore[arg-type]


def rdkit_bond_class(bond: Chem.Bond) -> int:
    """The joint class of a bond, by hand from RDKit's bond properties."""
    kind = bond.GetBondType()
    columns = (
        RDKIT_BOND_TYPES.index(kind) if kind in RDKIT_BOND_TYPES else len(RDKIT_BOND_TYPES),
        int(bond.GetIsConjugated()),
        int(bond.IsInRing()),
        RDKIT_STEREOS.index(bond.GetStereo())
        if bond.GetStereo() in RDKIT_STEREOS
        else len(RDKIT_STEREOS),
    )
    index = 0
    for value, size in zip(columns, BOND_FEATURE_DIMS, strict=True):
        index = index * size + value
    return index


def test_defaults_are_the_official_values() -> None:
    predict = BlendPredict()
    assert predict.requires == ("blend",)
    assert predict.name == "blend_predict"
    assert not predict.hidden_pairs_only  # official: every pair
    assert (predict.spd_classes, predict.edge_hops) == (11, 5)
    assert predict.relation_weights == {
        RELATION_SPD: 0.1,
        RELATION_EDGE: 0.1,
        RELATION_DISTANCE: 0.5,
    }
    assert predict.denoise_weight == 6.0
    assert predict.noise_sigma == 0.2
    # The same view as CoordDenoise's, so runs with both objectives share one noise draw.
    assert predict.views() == CoordDenoise(sigma=0.2).views() == [CoordNoise(0.2)]


def test_spd_classes_merge_long_paths_into_the_last_class() -> None:
    predict = BlendPredict()
    spd = torch.tensor([1, 2, 10, 11, 15, 19, 25])
    assert predict.spd_class(spd).tolist() == [0, 1, 9, 10, 10, 10, 10]


def test_edge_feature_class_matches_rdkit_bonds() -> None:
    classes = []
    for smiles in read_nci_smiles(60):
        mol = mol_from_smiles(smiles)
        data = mol_to_data(mol)
        expected = []
        for u, v in data.edge_index.t().tolist():
            expected.append(rdkit_bond_class(mol.GetBondBetweenAtoms(u, v)))
        computed = edge_feature_class(data.edge_attr).tolist()
        assert computed == expected, smiles
        classes += computed
    assert len(set(classes)) > 4  # single, double, aromatic, conjugated, ring bonds
    # A bijection of the feature combinations onto 0 .. NUM_EDGE_CLASSES - 1.
    grid = torch.cartesian_prod(*(torch.arange(size) for size in BOND_FEATURE_DIMS))
    assert torch.equal(edge_feature_class(grid), torch.arange(NUM_EDGE_CLASSES))


def test_pair_masks_match_brute_force(batch: Batch) -> None:
    output = tiny_encoder().train()(batch)
    choice, node_mask = output.extras["blend_choice"], output.extras["node_mask"]
    spd = output.extras["spd"]
    num_graphs, size = node_mask.shape
    for hidden_only in (False, True):
        masks = objective(hidden_pairs_only=hidden_only).relation_pair_masks(output.extras)
        for relation in RELATION_KEYS:
            expected = torch.zeros(num_graphs, size, size, dtype=torch.bool)
            for b in range(num_graphs):
                for i in range(size):
                    for j in range(size):
                        real = bool(node_mask[b, i]) and bool(node_mask[b, j]) and i != j
                        if relation != RELATION_DISTANCE:
                            real = real and int(spd[b, i, j]) > 0
                        hidden = int(choice[b, i, j]) != relation
                        expected[b, i, j] = real and (hidden or not hidden_only)
            assert torch.equal(masks[relation], expected)


def test_losses_match_a_brute_force_reference(samples: list[Data], batch: Batch) -> None:
    """Every term rebuilt pair by pair: SPD from RDKit's distance matrix, the bonds of each hop
    checked to form a shortest path in RDKit's molecule and classed from RDKit's bond
    properties, the 3D target from the clean conformer in NumPy."""
    encoder = tiny_encoder().eval()
    output = encoder(batch, **fixed_choices(batch))
    predict = objective()
    result = predict.loss(batch, {"blend": output})
    node = output.extras["node_padded"]
    path_edges = output.extras["path_edges"]
    edge_index = batch.edge_index

    spd_rows: list[tuple[int, int, int, int]] = []
    edge_rows: list[tuple[int, int, int, int, int]] = []
    pos_rows: dict[int, list[tuple[int, int, np.ndarray]]] = {}
    offset = 0
    for b, smiles in enumerate(molecule_smiles()):
        # The molecule the sample was featurised from (pretrain_sample embeds first).
        mol = embed_conformers(mol_from_smiles(smiles), ConformerOptions(seed=b))
        topological = Chem.GetDistanceMatrix(mol)
        clean = pretrain_sample(smiles, mol_id=b).pos.double().numpy()  # before the noise
        n = mol.GetNumAtoms()
        for i in range(n):
            for j in range(n):
                if i == j:
                    continue
                pos_rows.setdefault(b, []).append((i, j, clean[j] - clean[i]))
                hops = topological[i, j]
                if hops > 1e6:  # different fragments of the salt
                    continue
                spd_rows.append((b, i, j, min(int(hops), 6) - 1))
                atom = i
                for hop in range(min(int(hops), 5)):
                    u, v = (int(a) - offset for a in edge_index[:, path_edges[b, i, j, hop]])
                    assert u == atom and topological[v, j] == hops - hop - 1
                    bond = mol.GetBondBetweenAtoms(u, v)
                    edge_rows.append((b, i, j, hop, rdkit_bond_class(bond)))
                    atom = v
        offset += n

    def cross_entropy(logits: Tensor, target: list[int]) -> float:
        return torch.nn.functional.cross_entropy(logits, torch.tensor(target)).item()

    b, i, j, target = (torch.tensor(column) for column in zip(*spd_rows, strict=True))
    spd = cross_entropy(predict.spd_head(node, b, i, j), target.tolist())
    assert result.metrics["spd_loss"].item() == pytest.approx(spd, rel=1e-9)

    b, i, j, hop, target = (torch.tensor(column) for column in zip(*edge_rows, strict=True))
    logits = predict.edge_head(node, b, i, j).view(-1, 5, NUM_EDGE_CLASSES)
    edge = cross_entropy(logits[torch.arange(len(hop)), hop], target.tolist())
    assert result.metrics["edge_loss"].item() == pytest.approx(edge, rel=1e-9)

    molecule_means = []
    for b, rows in pos_rows.items():
        first = torch.tensor([row[0] for row in rows])
        second = torch.tensor([row[1] for row in rows])
        graph = torch.full_like(first, b)
        prediction = predict.pos_head(node, graph, first, second).detach().numpy()
        target_np = np.stack([row[2] for row in rows])
        cosine = (prediction * target_np).sum(1) / (
            np.linalg.norm(prediction, axis=1) * np.linalg.norm(target_np, axis=1)
        )
        molecule_means.append(float(np.mean(1.0 - cosine)))
    pos = float(np.mean(molecule_means))
    assert result.metrics["pos_loss"].item() == pytest.approx(pos, rel=1e-9)

    # Denoising: 1 - cos to the noise, at the atoms whose input feature came from 3D only.
    prediction = predict.predict_noise(batch, output).detach().numpy()
    atoms = output.extras["atom_choice"][output.extras["node_mask"]] == ATOM_3D
    noise = batch.coord_noise.numpy()[atoms.numpy()]
    chosen = prediction[atoms.numpy()]
    cosine = (chosen * noise).sum(1) / (
        np.linalg.norm(chosen, axis=1) * np.linalg.norm(noise, axis=1)
    )
    denoise = float(np.mean(1.0 - cosine))
    assert result.metrics["denoise_loss"].item() == pytest.approx(denoise, rel=1e-9)
    assert 0 < int(atoms.sum()) < batch.num_nodes

    total = 0.1 * spd + 0.1 * edge + 0.5 * pos + 6.0 * denoise
    assert result.loss.item() == pytest.approx(total, rel=1e-9)
    # The salt's ions are unreachable from each other: left out of the 2D terms only.
    assert result.metrics["spd_pairs"].item() < result.metrics["pos_pairs"].item()


class _Oracle(nn.Module):
    """A 3D head answering with a fixed function of the pair's clean or noisy positions."""

    def __init__(self, positions: Tensor, sign: float = 1.0) -> None:
        super().__init__()
        self.positions, self.sign = positions, sign

    def forward(self, node: Tensor, graph: Tensor, first: Tensor, second: Tensor) -> Tensor:
        return self.sign * (self.positions[graph, second] - self.positions[graph, first])


def test_3d_target_is_the_clean_relative_position(batch: Batch) -> None:
    output = tiny_encoder().eval()(batch, **fixed_choices(batch))
    node_mask = output.extras["node_mask"]
    clean = to_padded(batch.pos - batch.coord_noise, batch.batch)[0]
    noisy = to_padded(batch.pos, batch.batch)[0]
    predict = objective()

    def pos_loss(head: nn.Module) -> float:
        predict.pos_head = head
        return predict.loss(batch, {"blend": output}).metrics["pos_loss"].item()

    assert pos_loss(_Oracle(clean)) == pytest.approx(0.0, abs=1e-12)
    assert pos_loss(_Oracle(clean, sign=-1.0)) == pytest.approx(2.0, abs=1e-12)
    # The noisy conformer is close to, but not, the target.
    assert 1e-4 < pos_loss(_Oracle(noisy)) < 0.1
    assert bool(node_mask.any())


def test_hidden_pairs_only_drops_the_shown_relation(batch: Batch) -> None:
    output = tiny_encoder().train()(batch)
    every = objective().loss(batch, {"blend": output}).metrics
    hidden = objective(hidden_pairs_only=True).loss(batch, {"blend": output}).metrics
    choice = output.extras["blend_choice"]
    for relation, key in RELATION_KEYS.items():
        shown = (choice == relation) & objective().relation_pair_masks(output.extras)[relation]
        removed = (every[f"{key}_pairs"] - hidden[f"{key}_pairs"]).item() * batch.num_graphs
        assert removed == pytest.approx(shown.sum().item())
        assert 0 < hidden[f"{key}_pairs"].item() < every[f"{key}_pairs"].item()


def test_padded_pairs_never_contribute(batch: Batch) -> None:
    output = tiny_encoder().eval()(batch, **fixed_choices(batch))
    predict = objective()
    reference = predict.loss(batch, {"blend": output})
    node_mask = output.extras["node_mask"]
    assert not bool(node_mask.all()), "the batch must have padding for this test to mean much"
    poisoned = dict(output.extras)
    poisoned["node_padded"] = output.extras["node_padded"].masked_fill(
        ~node_mask.unsqueeze(-1), float("nan")
    )
    result = predict.loss(
        batch, {"blend": EncoderOutput(output.node, output.graph, None, poisoned)}
    )
    # NaN in a padded slot reaches the loss and every metric as NaN if any padded pair or atom
    # leaks; the poisoned tensor may still take another reduction kernel, which changes the
    # last bits on some CPUs, so equality is up to float64 round-off.
    assert result.loss.item() == pytest.approx(reference.loss.item(), rel=1e-12)
    for key, value in reference.metrics.items():
        assert result.metrics[key].item() == pytest.approx(value.item(), rel=1e-12), key


def test_batched_loss_matches_the_single_molecules(samples: list[Data], batch: Batch) -> None:
    """Pooled terms (SPD, edge, denoising) are count-weighted means of the molecules' values;
    the 3D term is the plain mean of the molecules' means, as officially."""
    encoder, predict = tiny_encoder().eval(), objective()
    choices = fixed_choices(batch)
    batched = predict.loss(batch, {"blend": encoder(batch, **choices)}).metrics
    sizes = batch.ptr.diff().tolist()
    singles = []
    for b, (sample, size) in enumerate(zip(samples, sizes, strict=True)):
        own = {
            "blend_choice": choices["blend_choice"][b : b + 1, :size, :size],
            "atom_choice": choices["atom_choice"][b : b + 1, :size],
        }
        single = collate([sample])
        singles.append(predict.loss(single, {"blend": encoder(single, **own)}).metrics)

    def weighted(metric: str, count: str) -> float:
        counts = [m[count].item() for m in singles]
        values = [m[metric].item() for m in singles]
        return sum(v * c for v, c in zip(values, counts, strict=True)) / sum(counts)

    for key in ("spd", "edge"):
        total = sum(m[f"{key}_pairs"].item() for m in singles)
        assert total == pytest.approx(batched[f"{key}_pairs"].item() * len(samples))
    # SPD pairs are counted per pair; the edge loss is pooled over (pair, hop) entries, so its
    # batch value is checked by the brute-force test rather than by pair counts here.
    assert batched["spd_loss"].item() == pytest.approx(weighted("spd_loss", "spd_pairs"))
    assert batched["denoise_loss"].item() == pytest.approx(
        weighted("denoise_loss", "denoise_atoms")
    )
    assert batched["pos_loss"].item() == pytest.approx(
        float(np.mean([m["pos_loss"].item() for m in singles]))
    )


def test_denoise_prediction_is_equivariant(batch: Batch) -> None:
    encoder, predict = tiny_encoder().eval(), objective()
    choices = fixed_choices(batch)
    # Non-trivial pair weights, so that the check does not pass on a near-zero prediction.
    torch.nn.init.normal_(predict.noise_head[-1].weight, std=1.0)
    prediction = predict.predict_noise(batch, encoder(batch, **choices))
    assert prediction.shape == (batch.num_nodes, 3) and prediction.abs().max() > 0.1
    rotation = fixed_rotation()
    moved = batch.clone()
    moved.pos = batch.pos @ rotation.T + torch.tensor([3.0, -1.5, 0.25], dtype=torch.float64)
    moved.coord_noise = batch.coord_noise @ rotation.T
    moved_prediction = predict.predict_noise(moved, encoder(moved, **choices))
    torch.testing.assert_close(moved_prediction, prediction @ rotation.T, rtol=1e-7, atol=1e-9)
    # And so is the denoising loss, whose target rotates with the conformer.
    before = predict.loss(batch, {"blend": encoder(batch, **choices)})
    after = predict.loss(moved, {"blend": encoder(moved, **choices)})
    assert after.metrics["denoise_loss"].item() == pytest.approx(
        before.metrics["denoise_loss"].item(), rel=1e-9
    )


def test_loss_is_finite_with_gradients_to_encoder_and_every_head(batch: Batch) -> None:
    encoder, predict = tiny_encoder().train(), objective()
    result = predict.loss(batch, {"blend": encoder(batch)})
    assert result.loss.dim() == 0 and torch.isfinite(result.loss)
    assert result.batch_size == batch.num_graphs
    assert all(torch.isfinite(value) for value in result.metrics.values())
    # Untrained heads guess: near-uniform classifiers, near-random directions.
    assert result.metrics["spd_loss"].item() == pytest.approx(math.log(6), rel=0.2)
    assert result.metrics["edge_loss"].item() == pytest.approx(math.log(NUM_EDGE_CLASSES), rel=0.2)
    assert result.metrics["pos_loss"].item() == pytest.approx(1.0, abs=0.3)
    assert result.metrics["denoise_loss"].item() == pytest.approx(1.0, abs=0.3)
    result.loss.backward()
    modules = {
        "encoder": encoder,
        "spd_head": predict.spd_head,
        "edge_head": predict.edge_head,
        "pos_head": predict.pos_head,
        "pair_features": predict.pair_features,
        "noise_head": predict.noise_head,
    }
    for name, module in modules.items():
        grads = [p.grad for p in module.parameters() if p.requires_grad and p.grad is not None]
        assert grads, name
        assert all(torch.isfinite(g).all() for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name


def test_state_dict_round_trip_into_a_fresh_objective(batch: Batch) -> None:
    encoder = tiny_encoder().eval()
    output = encoder(batch, **fixed_choices(batch))
    trained = objective()
    expected = trained.loss(batch, {"blend": output}).loss
    fresh = objective()
    fresh.load_state_dict(trained.state_dict())
    assert fresh.loss(batch, {"blend": output}).loss.item() == expected.item()


def test_clear_errors(batch: Batch) -> None:
    output = tiny_encoder().train()(batch)
    no_noise = batch.clone()
    del no_noise.coord_noise
    with pytest.raises(ValueError, match="coord_noise"):
        objective().loss(no_noise, {"blend": output})
    foreign = EncoderOutput(node=output.node, graph=output.graph)
    with pytest.raises(ValueError, match="MoleBlendTransformer"):
        objective().loss(batch, {"blend": foreign})
    with pytest.raises(ValueError, match="max_hops"):
        objective(edge_hops=6).loss(batch, {"blend": output})
    all_relations = tiny_encoder().train()
    all_relations.relation_mode = "all"
    shown_everything = all_relations(batch)
    with pytest.raises(ValueError, match="hidden_pairs_only"):
        objective(hidden_pairs_only=True).loss(batch, {"blend": shown_everything})
    # Without blending, every atom is denoised.
    result = objective().loss(batch, {"blend": shown_everything})
    assert result.metrics["denoise_atoms"].item() * batch.num_graphs == batch.num_nodes
    for bad in ({"spd_classes": 0}, {"edge_hops": 0}, {"pos_weight": -1.0}):
        with pytest.raises(ValueError):
            BlendPredict(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sigma"):
        BlendPredict(noise_sigma=0.0)

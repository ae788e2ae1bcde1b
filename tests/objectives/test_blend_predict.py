"""BlendPredict on real molecules with a tiny MoleBLEND encoder: pair selection, targets against
RDKit, padding, batching, equivariance of the denoising prediction, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from rdkit import Chem
from torch_geometric.data import Batch, Data

from molssl.chem.conformers import ConformerOptions, embed_conformers
from molssl.chem.features import mol_from_smiles
from molssl.encoders.base import EncoderOutput
from molssl.encoders.blend import MoleBlendTransformer
from molssl.encoders.blend_choice import (
    RELATION_DISTANCE,
    RELATION_EDGE,
    RELATION_SPD,
    sample_blend_choice,
)
from molssl.encoders.padding import to_padded
from molssl.objectives.blend_predict import NO_BOND_CLASS, RELATION_KEYS, BlendPredict
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


def molecule_smiles() -> list[str]:
    nci = read_nci_smiles(300)
    salt = next(s for s in nci if "." in s and len(s) < 40)
    return [*(nci[i] for i in INDICES), salt]


def noisy_samples(sigma: float = 0.04, seed: int = 0) -> list[Data]:
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


def fixed_choice(batch: Batch, seed: int = 1) -> torch.Tensor:
    node_mask = to_padded(batch.z, batch.batch, batch.num_graphs)[1]
    return sample_blend_choice(node_mask, (0.2, 0.2, 0.6), torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def samples() -> list[Data]:
    return noisy_samples()


@pytest.fixture(scope="module")
def batch(samples: list[Data]) -> Batch:
    return collate(samples)


def objective(**overrides: object) -> BlendPredict:
    torch.manual_seed(3)
    settings: dict[str, object] = {"max_spd": 4, "num_distance_bins": 24, "max_distance": 6.0}
    return BlendPredict(**{**settings, **overrides}).double()  # type: ignore[arg-type]


def test_view_requires_and_name() -> None:
    predict = BlendPredict(noise_sigma=0.04)
    assert predict.requires == ("blend",)
    assert predict.name == "blend_predict"
    # The same view as CoordDenoise's, so UniCorn-style runs share one noise draw.
    assert predict.views() == CoordDenoise(sigma=0.04).views() == [CoordNoise(0.04)]


def test_hidden_pair_masks_match_brute_force(batch: Batch) -> None:
    encoder = tiny_encoder().train()
    output = encoder(batch)
    predict = objective()
    masks = predict.relation_pair_masks(output.extras)
    choice, node_mask = output.extras["blend_choice"], output.extras["node_mask"]
    num_graphs, size = node_mask.shape
    for relation in RELATION_KEYS:
        expected = torch.zeros(num_graphs, size, size, dtype=torch.bool)
        for b in range(num_graphs):
            for i in range(size):
                for j in range(size):
                    real = bool(node_mask[b, i]) and bool(node_mask[b, j]) and i != j
                    expected[b, i, j] = real and int(choice[b, i, j]) != relation
        assert torch.equal(masks[relation], expected)
        assert torch.equal(masks[relation], masks[relation].transpose(1, 2))
    # Each unordered pair is counted once: half the ordered pairs of the symmetric mask.
    result = predict.loss(batch, {"blend": output})
    for relation, key in RELATION_KEYS.items():
        counted = result.metrics[f"{key}_pairs"].item() * num_graphs
        assert counted == pytest.approx(masks[relation].sum().item() / 2)
        assert 0 < counted < sum(n * (n - 1) / 2 for n in batch.ptr.diff().tolist())


def test_all_pairs_option_supervises_every_pair(batch: Batch) -> None:
    output = tiny_encoder().train()(batch)
    result = objective(hidden_pairs_only=False).loss(batch, {"blend": output})
    all_pairs = sum(n * (n - 1) / 2 for n in batch.ptr.diff().tolist()) / batch.num_graphs
    for key in RELATION_KEYS.values():
        assert result.metrics[f"{key}_pairs"].item() == pytest.approx(all_pairs)


def test_relation_losses_match_rdkit_targets(samples: list[Data], batch: Batch) -> None:
    """Losses and metrics rebuilt pair by pair with targets from RDKit and the clean conformer."""
    encoder = tiny_encoder().eval()
    output = encoder(batch, blend_choice=fixed_choice(batch))
    predict = objective()
    result = predict.loss(batch, {"blend": output})
    node, choice = output.extras["node_padded"], output.extras["blend_choice"]

    rows: dict[int, list[tuple[int, int, int, int]]] = {r: [] for r in RELATION_KEYS}
    distances: list[float] = []
    for b, smiles in enumerate(molecule_smiles()):
        # The molecule the sample was featurised from: pretrain_sample reads the features after
        # embedding, and RDKit's MMFF94 set-up re-types some aromatic rings in place.
        mol = embed_conformers(mol_from_smiles(smiles), ConformerOptions(seed=b))
        topological = Chem.GetDistanceMatrix(mol)
        clean = pretrain_sample(smiles, mol_id=b).pos.double()  # the conformer before noise
        for i in range(mol.GetNumAtoms()):
            for j in range(i + 1, mol.GetNumAtoms()):
                hops = topological[i, j]
                spd_class = 4 if hops > 1e6 else min(int(hops), 4) - 1
                bond = mol.GetBondBetweenAtoms(i, j)
                if bond is None:
                    edge_class = NO_BOND_CLASS
                elif bond.GetBondType() in RDKIT_BOND_TYPES:
                    edge_class = RDKIT_BOND_TYPES.index(bond.GetBondType())
                else:
                    edge_class = len(RDKIT_BOND_TYPES)
                distance = (clean[i] - clean[j]).norm().item()
                bin_class = min(int(distance / 0.25), 23)
                targets = {
                    RELATION_SPD: spd_class,
                    RELATION_EDGE: edge_class,
                    RELATION_DISTANCE: bin_class,
                }
                for relation, target in targets.items():
                    if int(choice[b, i, j]) != relation:
                        rows[relation].append((b, i, j, target))
                        if relation == RELATION_DISTANCE:
                            distances.append(distance)

    heads = {
        RELATION_SPD: predict.spd_head,
        RELATION_EDGE: predict.edge_head,
        RELATION_DISTANCE: predict.distance_head,
    }
    for relation, key in RELATION_KEYS.items():
        b, i, j, target = (torch.tensor(column) for column in zip(*rows[relation], strict=True))
        logits = heads[relation](predict.pair_features(node, b, i, j))
        loss = torch.nn.functional.cross_entropy(logits, target)
        assert result.metrics[f"{key}_loss"].item() == pytest.approx(loss.item(), rel=1e-9)
        if relation == RELATION_DISTANCE:
            centres = (torch.arange(24, dtype=torch.float64) + 0.5) * 0.25
            expected = logits.softmax(dim=-1) @ centres
            mae = (expected - torch.tensor(distances)).abs().mean()
            # Targets pass through float32 coordinates (pos - coord_noise): agree to float32.
            assert result.metrics["dist_mae"].item() == pytest.approx(mae.item(), rel=1e-6)
        else:
            accuracy = (logits.argmax(dim=-1) == target).double().mean()
            assert result.metrics[f"{key}_acc"].item() == pytest.approx(accuracy.item())
    # The salt's ions are unreachable from each other: that class is exercised.
    assert any(row[3] == 4 for row in rows[RELATION_SPD])
    denoise = result.metrics["denoise_loss"]
    relations = sum(result.metrics[f"{key}_loss"] for key in RELATION_KEYS.values())
    assert result.loss.item() == pytest.approx((relations + denoise).item(), rel=1e-12)


def test_padded_pairs_never_contribute(batch: Batch) -> None:
    output = tiny_encoder().eval()(batch, blend_choice=fixed_choice(batch))
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
    # leaks, and a leaked finite value moves them by far more than round-off; the poisoned
    # tensor may still take another reduction kernel (its layout differs), which changes the
    # last bits on some CPUs, so equality is up to float64 round-off.
    assert result.loss.item() == pytest.approx(reference.loss.item(), rel=1e-12, abs=0)
    for key, value in reference.metrics.items():
        assert result.metrics[key].item() == pytest.approx(value.item(), rel=1e-12, abs=1e-300)


def test_batched_loss_is_the_count_weighted_mean_of_single_molecules(
    samples: list[Data], batch: Batch
) -> None:
    encoder, predict = tiny_encoder().eval(), objective()
    choice = fixed_choice(batch)
    batched = predict.loss(batch, {"blend": encoder(batch, blend_choice=choice)}).metrics
    sizes = batch.ptr.diff().tolist()
    singles = []
    for b, (sample, size) in enumerate(zip(samples, sizes, strict=True)):
        single = collate([sample])
        own_choice = choice[b : b + 1, :size, :size]
        output = encoder(single, blend_choice=own_choice)
        singles.append(predict.loss(single, {"blend": output}).metrics)
    for key in RELATION_KEYS.values():
        counts = [m[f"{key}_pairs"].item() for m in singles]
        assert sum(counts) == pytest.approx(batched[f"{key}_pairs"].item() * len(samples))
        for metric in (f"{key}_loss", "dist_mae" if key == "dist" else f"{key}_acc"):
            values = [m[metric].item() if c else 0.0 for m, c in zip(singles, counts, strict=True)]
            weighted = sum(v * c for v, c in zip(values, counts, strict=True)) / sum(counts)
            assert batched[metric].item() == pytest.approx(weighted, rel=1e-9, abs=1e-12)
    denoise = sum(m["denoise_loss"].item() * n for m, n in zip(singles, sizes, strict=True))
    assert batched["denoise_loss"].item() == pytest.approx(denoise / sum(sizes), rel=1e-9)


def test_denoise_prediction_is_equivariant(batch: Batch) -> None:
    encoder, predict = tiny_encoder().eval(), objective()
    choice = fixed_choice(batch)
    # Non-trivial pair weights, so that the check does not pass on a near-zero prediction.
    torch.nn.init.normal_(predict.noise_head[-1].weight, std=1.0)
    prediction = predict.predict_noise(batch, encoder(batch, blend_choice=choice))
    assert prediction.shape == (batch.num_nodes, 3) and prediction.abs().max() > 0.1
    rotation = fixed_rotation()
    moved = batch.clone()
    moved.pos = batch.pos @ rotation.T + torch.tensor([3.0, -1.5, 0.25], dtype=torch.float64)
    moved.coord_noise = batch.coord_noise @ rotation.T
    moved_prediction = predict.predict_noise(moved, encoder(moved, blend_choice=choice))
    torch.testing.assert_close(moved_prediction, prediction @ rotation.T, rtol=1e-7, atol=1e-9)
    # And so is the loss, whose target rotates with the conformer.
    before = predict.loss(batch, {"blend": encoder(batch, blend_choice=choice)})
    after = predict.loss(moved, {"blend": encoder(moved, blend_choice=choice)})
    assert after.metrics["denoise_loss"].item() == pytest.approx(
        before.metrics["denoise_loss"].item(), rel=1e-9
    )


def test_loss_is_finite_with_gradients_to_encoder_and_every_head(batch: Batch) -> None:
    encoder, predict = tiny_encoder().train(), objective()
    result = predict.loss(batch, {"blend": encoder(batch)})
    assert result.loss.dim() == 0 and torch.isfinite(result.loss)
    assert result.batch_size == batch.num_graphs
    assert all(torch.isfinite(value) for value in result.metrics.values())
    # Untrained heads guess: near-uniform classifiers and a near-zero noise prediction.
    assert result.metrics["spd_loss"].item() == pytest.approx(math.log(5), rel=0.5)
    assert result.metrics["denoise_loss"].item() == pytest.approx(1.0, rel=0.3)
    result.loss.backward()
    modules = {
        "encoder": encoder,
        "pair_features": predict.pair_features,
        "spd_head": predict.spd_head,
        "edge_head": predict.edge_head,
        "distance_head": predict.distance_head,
        "noise_head": predict.noise_head,
    }
    for name, module in modules.items():
        grads = [p.grad for p in module.parameters() if p.requires_grad and p.grad is not None]
        assert grads, name
        assert all(torch.isfinite(g).all() for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name


def test_state_dict_round_trip_into_a_fresh_objective(batch: Batch) -> None:
    encoder = tiny_encoder().eval()
    output = encoder(batch, blend_choice=fixed_choice(batch))
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
    all_relations = tiny_encoder().train()
    all_relations.relation_mode = "all"
    shown_everything = all_relations(batch)
    with pytest.raises(ValueError, match="hidden_pairs_only"):
        objective().loss(batch, {"blend": shown_everything})
    assert torch.isfinite(
        objective(hidden_pairs_only=False).loss(batch, {"blend": shown_everything}).loss
    )
    for bad in ({"max_spd": 0}, {"num_distance_bins": 1}, {"max_distance": -1.0}):
        with pytest.raises(ValueError):
            BlendPredict(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sigma"):
        BlendPredict(noise_sigma=0.0)


def test_target_classes_and_bin_centres() -> None:
    predict = BlendPredict(max_spd=3, num_distance_bins=4, max_distance=2.0)
    spd = torch.tensor([1, 2, 3, 4, 9, -1])
    assert predict.spd_class(spd).tolist() == [0, 1, 2, 2, 2, 3]
    distance = torch.tensor([0.0, 0.49, 0.5, 1.99, 2.0, 30.0])
    assert predict.distance_class(distance).tolist() == [0, 0, 1, 3, 3, 3]
    centres = predict.bin_centres(torch.device("cpu"), torch.float64)
    np.testing.assert_allclose(centres.numpy(), [0.25, 0.75, 1.25, 1.75])

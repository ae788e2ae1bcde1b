"""CrossModalInfoNCE: parity with a per-molecule reference, retrieval, stop-gradient, scaling."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch_geometric.data import Batch

from molssl.encoders.base import EncoderOutput
from molssl.encoders.et import EquivariantTransformer
from molssl.encoders.graphormer import Graphormer
from molssl.objectives.base import unmasked
from molssl.objectives.infonce import CrossModalInfoNCE, duplicate_pairs, info_nce
from molssl.objectives.views import CoordNoise, TorsionAugment
from tests.conftest import read_nci_smiles
from tests.objectives.samples import collate, pretrain_sample

# NCI molecules with conformers: a quinone, a nitro-thiazoline, a dioxime, a thioether.
INDICES = (0, 3, 8, 18)


def reference_info_nce(
    query: torch.Tensor, keys: torch.Tensor, temperature: float, smiles: list[str] | None = None
) -> float:
    """InfoNCE written out molecule by molecule, in float64."""
    query, keys = query.double(), keys.double()
    losses = []
    for i in range(query.size(0)):
        terms = []
        for j in range(keys.size(0)):
            if j != i and smiles is not None and smiles[j] == smiles[i]:
                continue
            cos = torch.dot(query[i], keys[j]) / (query[i].norm() * keys[j].norm())
            terms.append(cos.item() / temperature)
        if len(terms) == 1:
            continue
        positive = torch.dot(query[i], keys[i]) / (query[i].norm() * keys[i].norm())
        log_sum = math.log(sum(math.exp(t) for t in terms))
        losses.append(log_sum - positive.item() / temperature)
    return sum(losses) / len(losses)


def outputs(graph_3d: torch.Tensor, graph_2d: torch.Tensor) -> dict[str, EncoderOutput]:
    """Encoder outputs that carry only the molecule embeddings this objective reads (an
    unmasked batch: the masked and the unmasked 2D encodings are one)."""
    encoding_2d = EncoderOutput(node=graph_2d.new_zeros(1, 1), graph=graph_2d)
    return {
        "3d": EncoderOutput(node=graph_3d.new_zeros(1, 1), graph=graph_3d),
        "2d": encoding_2d,
        unmasked("2d"): encoding_2d,
    }


def outputs_of(encoding_3d: EncoderOutput, encoding_2d: EncoderOutput) -> dict:
    """Real encoders' outputs on an unmasked batch, under the keys the module gives them."""
    return {"3d": encoding_3d, "2d": encoding_2d, unmasked("2d"): encoding_2d}


def fake_batch(num_graphs: int, smiles: list[str] | None = None) -> Batch:
    batch = Batch()
    batch.smiles = smiles if smiles is not None else [f"C{'C' * i}" for i in range(num_graphs)]
    return batch


@pytest.fixture(scope="module")
def molecules() -> Batch:
    """Real molecules through the UniCorn views (torsion augmentation, coordinate noise)."""
    smiles = read_nci_smiles(max(INDICES) + 1)
    torch.manual_seed(0)
    samples = []
    for index in INDICES:
        data = pretrain_sample(smiles[index], mol_id=index)
        for view in (TorsionAugment(2.0), CoordNoise(0.04)):
            data = view(data)
        samples.append(data)
    return collate(samples)


@pytest.mark.parametrize("temperature", [0.1, 0.5, 2.0])
def test_info_nce_matches_reference(temperature: float) -> None:
    generator = torch.Generator().manual_seed(1)
    query = torch.randn(7, 5, generator=generator)
    keys = torch.randn(7, 5, generator=generator)
    loss, top1, has_negative = info_nce(query, keys, temperature)
    assert loss.item() == pytest.approx(reference_info_nce(query, keys, temperature), rel=1e-5)
    assert has_negative.all()
    sims = torch.nn.functional.cosine_similarity(query.unsqueeze(1), keys.unsqueeze(0), dim=-1)
    expected_top1 = (sims.argmax(dim=1) == torch.arange(7)).double().mean().item()
    assert top1.item() == pytest.approx(expected_top1)


@pytest.mark.parametrize("symmetric", [False, True])
def test_objective_matches_reference_on_its_projections(symmetric: bool) -> None:
    torch.manual_seed(2)
    objective = CrossModalInfoNCE(proj_dim=6, symmetric=symmetric)
    graph_3d, graph_2d = torch.randn(9, 10), torch.randn(9, 14)
    result = objective.loss(fake_batch(9), outputs(graph_3d, graph_2d))
    query, keys = objective.head_3d(graph_3d), objective.head_2d(graph_2d)
    expected = reference_info_nce(query, keys, 0.5)
    if symmetric:
        expected = 0.5 * (expected + reference_info_nce(keys, query, 0.5))
        assert "top1_2d_to_3d" in result.metrics
    else:
        assert "top1_2d_to_3d" not in result.metrics
    assert result.loss.item() == pytest.approx(expected, rel=1e-5)
    assert result.batch_size == 9
    assert result.metrics["negatives"].item() == pytest.approx(8.0)
    assert objective.head_3d.width == 10 and objective.head_2d.width == 14


def test_identical_embeddings_retrieve_themselves() -> None:
    generator = torch.Generator().manual_seed(3)
    embeddings = torch.randn(16, 32, generator=generator)
    loss, top1, _ = info_nce(embeddings, embeddings, temperature=0.5)
    assert top1.item() == 1.0
    assert loss.item() < 0.5 * math.log(16)
    sharp_loss, _, _ = info_nce(embeddings, embeddings, temperature=0.02)
    assert sharp_loss.item() < 1e-3
    # Through the objective: the same heads and the same embeddings on both sides.
    objective = CrossModalInfoNCE(proj_dim=8, in_dim_3d=32, in_dim_2d=32)
    objective.head_2d.load_state_dict(objective.head_3d.state_dict())
    result = objective.loss(fake_batch(16), outputs(embeddings, embeddings.clone()))
    assert result.metrics["top1_3d_to_2d"].item() == 1.0


def test_temperature_scaling() -> None:
    generator = torch.Generator().manual_seed(4)
    query = torch.randn(8, 6, generator=generator)
    keys = query + 0.3 * torch.randn(8, 6, generator=generator)
    sims = torch.nn.functional.cosine_similarity(query.unsqueeze(1), keys.unsqueeze(0), dim=-1)
    assert torch.equal(sims.argmax(dim=1), torch.arange(8))
    losses = [info_nce(query, keys, t)[0].item() for t in (0.05, 0.2, 0.5, 2.0, 10.0)]
    # Every positive is its row's most similar key, so a sharper softmax always helps...
    assert all(a < b for a, b in itertools.pairwise(losses))
    # ... and a very flat one cannot tell the keys apart: log(B).
    assert info_nce(query, keys, 1e4)[0].item() == pytest.approx(math.log(8), abs=1e-3)
    # Cosine similarity ignores the length of the embeddings.
    scaled = info_nce(3.0 * query, 0.1 * keys, 0.5)[0]
    assert scaled.item() == pytest.approx(info_nce(query, keys, 0.5)[0].item(), rel=1e-6)


def test_duplicate_molecules_are_not_negatives() -> None:
    smiles = ["CCO", "c1ccccc1", "CCO", "CN", "CCO"]
    exclude = duplicate_pairs(smiles)
    expected = torch.tensor(
        [[smiles[i] == smiles[j] and i != j for j in range(5)] for i in range(5)]
    )
    assert torch.equal(exclude, expected)
    torch.manual_seed(5)
    objective = CrossModalInfoNCE(proj_dim=4)
    graph_3d, graph_2d = torch.randn(5, 6), torch.randn(5, 6)
    result = objective.loss(fake_batch(5, smiles), outputs(graph_3d, graph_2d))
    query, keys = objective.head_3d(graph_3d), objective.head_2d(graph_2d)
    assert result.loss.item() == pytest.approx(
        reference_info_nce(query, keys, 0.5, smiles), rel=1e-5
    )
    # 5 * 4 ordered pairs, minus the 6 ordered pairs among the three ethanols.
    assert result.metrics["negatives"].item() == pytest.approx((20 - 6) / 5)


def test_batch_of_one_molecule_is_zero_loss_with_a_flag() -> None:
    objective = CrossModalInfoNCE(proj_dim=4, symmetric=True)
    graph_3d = torch.randn(1, 6, requires_grad=True)
    with pytest.warns(UserWarning, match="no in-batch negatives"):
        result = objective.loss(fake_batch(1), outputs(graph_3d, torch.randn(1, 6)))
    assert result.loss.item() == 0.0
    assert result.metrics["negatives"].item() == 0.0
    assert "top1_3d_to_2d" not in result.metrics and "top1_2d_to_3d" not in result.metrics
    result.loss.backward()
    assert graph_3d.grad is not None and torch.count_nonzero(graph_3d.grad) == 0


@pytest.mark.parametrize("stop_grad_2d", [True, False])
def test_stop_grad_2d_on_real_encoders(molecules: Batch, stop_grad_2d: bool) -> None:
    torch.manual_seed(6)
    encoder_3d = EquivariantTransformer(hidden_channels=16, num_layers=1, num_heads=2, num_rbf=8)
    encoder_2d = Graphormer(num_layers=1, num_heads=2, hidden_channels=24, max_spd=6)
    objective = CrossModalInfoNCE(proj_dim=8, stop_grad_2d=stop_grad_2d)
    result = objective.loss(molecules, outputs_of(encoder_3d(molecules), encoder_2d(molecules)))
    assert torch.isfinite(result.loss)
    result.loss.backward()

    def grad_sum(module: torch.nn.Module) -> float:
        return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)

    assert grad_sum(encoder_3d) > 0 and grad_sum(objective.head_3d) > 0
    assert grad_sum(objective.head_2d) > 0
    if stop_grad_2d:
        assert grad_sum(encoder_2d) == 0.0
    else:
        assert grad_sum(encoder_2d) > 0


def test_bad_settings_and_inputs_are_clear_errors() -> None:
    for temperature in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            CrossModalInfoNCE(temperature=temperature)
    with pytest.raises(ValueError, match="proj_dim"):
        CrossModalInfoNCE(proj_dim=0)
    with pytest.raises(ValueError, match="view_2d"):
        CrossModalInfoNCE(view_2d="noisy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2d/unmasked"):
        CrossModalInfoNCE(proj_dim=4).loss(
            fake_batch(3), {"3d": outputs(torch.randn(3, 5), torch.randn(3, 5))["3d"]}
        )
    objective = CrossModalInfoNCE(proj_dim=4)
    with pytest.raises(ValueError, match="same molecules"):
        objective.loss(fake_batch(3), outputs(torch.randn(3, 5), torch.randn(2, 5)))
    assert objective.requires == ("3d", "2d")
    assert objective.name == "cross_modal_info_nce"

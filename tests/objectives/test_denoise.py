"""CoordDenoise with a tiny equivariant transformer on real conformers."""

from __future__ import annotations

import math

import pytest
import torch
from torch_geometric.data import Batch

from molssl.encoders.base import EncoderOutput
from molssl.encoders.et import EquivariantTransformer
from molssl.objectives.denoise import CoordDenoise
from molssl.objectives.views import CoordNoise, TorsionAugment
from tests.conftest import read_nci_smiles
from tests.encoders.molecules_3d import fixed_rotation, rotate_vectors
from tests.objectives.samples import collate, pretrain_sample

# NCI molecules with conformers: a quinone without rotatable bonds (0), a nitro-thiazoline
# (3), a dioxime (8) and a flexible thioether (18).
INDICES = (0, 3, 8, 18)


def tiny_et() -> EquivariantTransformer:
    return EquivariantTransformer(hidden_channels=16, num_layers=1, num_heads=2, num_rbf=8)


def noisy_batch(
    objective: CoordDenoise, seed: int = 0, indices: tuple[int, ...] = INDICES
) -> Batch:
    """Samples through the same views the module would run: torsion augment, then noise."""
    smiles = read_nci_smiles(max(indices) + 1)
    views = sorted([TorsionAugment(2.0), *objective.views()], key=lambda view: view.order)
    torch.manual_seed(seed)
    samples = []
    for index in indices:
        data = pretrain_sample(smiles[index], mol_id=index)
        for view in views:
            data = view(data)
        samples.append(data)
    return collate(samples)


def test_view_is_coordinate_noise_of_its_sigma() -> None:
    objective = CoordDenoise(sigma=0.07)
    assert objective.views() == [CoordNoise(0.07)]
    assert objective.requires == ("3d",)
    assert objective.name == "coord_denoise"


def test_loss_is_finite_and_reaches_head_and_encoder() -> None:
    objective = CoordDenoise()
    batch = noisy_batch(objective)
    torch.manual_seed(0)
    encoder = tiny_et()
    result = objective.loss(batch, {"3d": encoder(batch)})
    assert result.loss.dim() == 0 and torch.isfinite(result.loss)
    assert result.batch_size == batch.num_nodes
    result.loss.backward()
    for module in (objective.head, encoder):
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)


def test_loss_and_rmse_match_their_definitions() -> None:
    objective = CoordDenoise(sigma=0.05)
    batch = noisy_batch(objective, seed=1)
    torch.manual_seed(1)
    output = tiny_et()(batch)
    result = objective.loss(batch, {"3d": output})
    prediction = objective.head(output, batch)
    target = batch.coord_noise / 0.05
    per_component = ((prediction - target) ** 2).sum() / (3 * batch.num_nodes)
    assert result.loss.item() == pytest.approx(per_component.item(), rel=1e-5)
    per_atom_error = (prediction * 0.05 - batch.coord_noise).norm(dim=-1)
    rmse = per_atom_error.square().mean().sqrt()
    assert result.metrics["rmse_angstrom"].item() == pytest.approx(rmse.item(), rel=1e-5)


def test_zero_prediction_scores_one_and_sqrt3_sigma() -> None:
    # With normalised targets a predictor of zero has loss ~ 1: the scale is right.
    objective = CoordDenoise(sigma=0.04)
    batch = noisy_batch(objective, seed=2, indices=(16, 17, 18))
    width = 8
    output = EncoderOutput(
        node=torch.zeros(batch.num_nodes, width),
        graph=torch.zeros(batch.num_graphs, width),
        vec=torch.zeros(batch.num_nodes, 3, width),
    )
    result = objective.loss(batch, {"3d": output})
    assert result.loss.item() == pytest.approx(1.0, abs=0.15)
    assert result.metrics["rmse_angstrom"].item() == pytest.approx(math.sqrt(3) * 0.04, rel=0.1)


def test_loss_decreases_when_trained_on_a_fixed_batch() -> None:
    objective = CoordDenoise()
    batch = noisy_batch(objective, seed=3)
    torch.manual_seed(3)
    encoder = tiny_et()
    objective.loss(batch, {"3d": encoder(batch)})  # builds the lazy head
    optimizer = torch.optim.Adam([*encoder.parameters(), *objective.parameters()], lr=1e-2)
    losses = []
    for _ in range(30):
        loss = objective.loss(batch, {"3d": encoder(batch)}).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # From ~1 (the zero predictor's score) to ~0.7 in 30 steps; a head cut off from the
    # encoder's vectors, or a wrong target scale, stays at ~1 or above.
    assert min(losses[-5:]) < 0.85 * losses[0]


def test_predicted_noise_rotates_with_the_molecule() -> None:
    objective = CoordDenoise().double()
    batch = noisy_batch(objective, seed=4)
    batch.pos, batch.coord_noise = batch.pos.double(), batch.coord_noise.double()
    torch.manual_seed(4)
    encoder = tiny_et().double()
    rotation = fixed_rotation(torch.float64)
    rotated = batch.clone()
    rotated.pos = rotate_vectors(batch.pos, rotation) + torch.tensor([1.0, -2.0, 0.5])
    rotated.coord_noise = rotate_vectors(batch.coord_noise, rotation)

    prediction = objective.head(encoder(batch), batch)
    rotated_prediction = objective.head(encoder(rotated), rotated)
    assert prediction.abs().max() > 1e-3
    assert torch.allclose(rotated_prediction, rotate_vectors(prediction, rotation), atol=1e-9)
    loss = objective.loss(batch, {"3d": encoder(batch)}).loss
    rotated_loss = objective.loss(rotated, {"3d": encoder(rotated)}).loss
    assert rotated_loss.item() == pytest.approx(loss.item(), rel=1e-9)


def test_rigid_molecule_is_plain_coordinate_denoising() -> None:
    objective = CoordDenoise()
    smiles = read_nci_smiles(1)[0]
    data = pretrain_sample(smiles, mol_id=0)
    assert data.torsion_atoms.shape[0] == 0
    batch = noisy_batch(objective, seed=5, indices=(0,))
    # The torsion view left the conformer as it was: the target is the noise alone.
    assert torch.allclose(batch.pos - batch.coord_noise, data.pos, atol=1e-6)
    result = objective.loss(batch, {"3d": tiny_et()(batch)})
    assert torch.isfinite(result.loss)


def test_running_std_is_a_saved_buffer_updated_only_in_training() -> None:
    objective = CoordDenoise(sigma=0.04, target_norm="running", momentum=0.1)
    assert "running_std" in dict(objective.named_buffers())
    encoder = tiny_et()
    batch = noisy_batch(objective, seed=6)
    # Pretend the noise is twice as large: the running estimate must follow it.
    batch.coord_noise = batch.coord_noise * 2.0
    assert objective.running_std.item() == pytest.approx(0.04)
    objective.eval()
    objective.loss(batch, {"3d": encoder(batch)})
    assert objective.running_std.item() == pytest.approx(0.04)
    objective.train()
    for _ in range(3):
        objective.loss(batch, {"3d": encoder(batch)})
    empirical = batch.coord_noise.square().mean().sqrt().item()
    # The first batch replaces the prior, so after any update the estimate is the batch's.
    assert objective.running_std.item() == pytest.approx(empirical, rel=1e-4)
    assert int(objective.num_updates) == 3

    state = objective.state_dict()
    assert state["running_std"].item() == pytest.approx(empirical, rel=1e-4)
    restored = CoordDenoise(sigma=0.04, target_norm="running")
    restored.load_state_dict(state)
    assert restored.running_std.item() == pytest.approx(empirical, rel=1e-4)
    restored.eval()
    output = encoder(batch)
    expected = objective.eval().loss(batch, {"3d": output}).loss
    assert restored.loss(batch, {"3d": output}).loss.item() == pytest.approx(expected.item())


def test_running_estimate_warms_up_then_moves_slowly() -> None:
    objective = CoordDenoise(sigma=0.04, target_norm="running", momentum=0.5)
    objective.update_running_std(torch.full((10, 3), 0.1))
    assert objective.running_std.item() == pytest.approx(0.1)
    objective.update_running_std(torch.full((10, 3), 0.3))
    # Second update: rate max(0.5, 1/2) = 0.5 on the variance.
    assert objective.running_std.item() == pytest.approx(math.sqrt(0.5 * 0.01 + 0.5 * 0.09))


def test_missing_noise_and_missing_vectors_are_clear_errors() -> None:
    objective = CoordDenoise()
    clean = collate([pretrain_sample(read_nci_smiles(4)[3], mol_id=3)])
    output = tiny_et()(clean)
    with pytest.raises(ValueError, match="did not run"):
        objective.loss(clean, {"3d": output})
    batch = noisy_batch(objective, indices=(3,))
    flat = EncoderOutput(node=output.node, graph=output.graph, vec=None)
    with pytest.raises(ValueError, match="vector features"):
        objective.loss(batch, {"3d": flat})


@pytest.mark.parametrize(
    "kwargs",
    [{"sigma": 0.0}, {"sigma": -0.1}, {"target_norm": "batch"}, {"momentum": 0.0}],
)
def test_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        CoordDenoise(**kwargs)

"""UniCorn's contrastive key is the 2D encoding of the whole graph, not of the masked one.

The fragment mask hides atoms from the 2D encoder for masked fragment modelling; the 2D->3D
distillation must read the 2D encoder's view of the unmasked molecule (paper Section 4.4), so
``PretrainModule`` runs the 2D encoder a second time without ``atom_mask``. ``view_2d="masked"``
gives back the single masked pass (ablation). Real molecules (the tests' NCI cache), tiny
encoders, dropout off.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Batch

from molssl.encoders.base import EncoderOutput
from molssl.modules import PretrainModule
from molssl.modules.pretrain import without_masks
from molssl.objectives import CoordDenoise, CrossModalInfoNCE, FragmentMask, Objective
from molssl.objectives.base import ObjectiveResult, unmasked
from tests.modules.pretrain_fixtures import (
    CountingEncoder,
    prepare_small_cache,
    small_datamodule,
    tiny_et,
    tiny_graphormer,
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_small_cache(tmp_path_factory.getbasetemp() / "molssl_cache")


def unicorn(view_2d: str = "unmasked") -> PretrainModule:
    """UniCorn's three objectives on tiny encoders, the 2D one counting its passes."""
    torch.manual_seed(0)
    module = PretrainModule(
        objectives=[FragmentMask(), CoordDenoise(), CrossModalInfoNCE(proj_dim=8, view_2d=view_2d)],
        encoder_3d=tiny_et(),
        encoder_2d=CountingEncoder(tiny_graphormer()),
    )
    return module.eval()


def first_batch(cache_dir: Path, module: PretrainModule) -> Batch:
    data = small_datamodule(cache_dir)
    data.set_views(module.pipeline_views())
    data.setup("fit")
    return next(iter(data.train_dataloader()))


def with_mask(batch: Batch, mask: torch.Tensor) -> Batch:
    changed = copy.copy(batch)
    changed.atom_mask = mask
    return changed


def key_and_loss(module: PretrainModule, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The projected 2D keys and the InfoNCE loss of one forward pass."""
    objective = module.objectives[2]
    outputs = module(batch)
    return objective.project(outputs)[1], objective.loss(batch, outputs).loss


@torch.no_grad()
def test_key_does_not_change_with_the_fragment_mask(cache_dir: Path) -> None:
    module = unicorn()
    batch = first_batch(cache_dir, module)
    mask = batch.atom_mask
    assert mask.any() and not mask.all()
    other = with_mask(batch, ~mask)
    key, loss = key_and_loss(module, batch)
    other_key, other_loss = key_and_loss(module, other)
    torch.testing.assert_close(other_key, key)
    torch.testing.assert_close(other_loss, loss)
    # ... and it is the key of the batch that never had a mask.
    plain_key, _ = key_and_loss(module, without_masks(batch))
    torch.testing.assert_close(plain_key, key)
    # The masked encoding, which fragment masking reads, does follow the mask.
    masked, masked_other = module(batch)["2d"].graph, module(other)["2d"].graph
    assert (masked - masked_other).abs().max() > 1e-3
    # Two 2D passes per masked batch (masked + unmasked), the batch keeps its mask.
    module.encoder_2d.calls = 0
    module(batch)
    assert module.encoder_2d.calls == 2
    assert batch.atom_mask is mask


@torch.no_grad()
def test_masked_view_restores_the_single_masked_pass(cache_dir: Path) -> None:
    module = unicorn(view_2d="masked")
    batch = first_batch(cache_dir, module)
    module.encoder_2d.calls = 0
    key, loss = key_and_loss(module, batch)
    assert module.encoder_2d.calls == 1
    assert unmasked("2d") not in module(batch)
    # The loss as molssl computed it before: one pass of each encoder on the masked batch.
    objective = module.objectives[2]
    old = {"3d": module.encoder_3d(batch), "2d": module.encoder_2d(batch)}
    torch.testing.assert_close(objective.loss(batch, old).loss, loss)
    # And the key moves with the mask.
    other_key, _ = key_and_loss(module, with_mask(batch, ~batch.atom_mask))
    assert (other_key - key).abs().max() > 1e-3


@torch.no_grad()
def test_without_a_mask_one_pass_serves_both_keys(cache_dir: Path) -> None:
    torch.manual_seed(0)
    module = PretrainModule(
        objectives=[CoordDenoise(), CrossModalInfoNCE(proj_dim=8)],
        encoder_3d=tiny_et(),
        encoder_2d=CountingEncoder(tiny_graphormer()),
    ).eval()
    batch = first_batch(cache_dir, module)
    assert getattr(batch, "atom_mask", None) is None
    outputs = module(batch)
    assert module.encoder_2d.calls == 1
    assert outputs[unmasked("2d")] is outputs["2d"]
    # A mask that no objective reads masked: only the unmasked pass runs.
    masked = with_mask(batch, torch.ones(batch.num_nodes, dtype=torch.bool))
    outputs = module(masked)
    assert module.encoder_2d.calls == 2 and "2d" not in outputs
    torch.testing.assert_close(outputs[unmasked("2d")].graph, module(batch)["2d"].graph)


class ReadsUnrequired(Objective):
    """Claims an unmasked encoding of an encoder it does not require."""

    requires = ("3d",)

    def unmasked_roles(self) -> tuple[str, ...]:
        return ("2d",)

    def loss(self, batch: Batch, outputs: Mapping[str, EncoderOutput]) -> ObjectiveResult:
        return ObjectiveResult(loss=outputs["3d"].node.sum())


def test_an_unmasked_role_must_be_required() -> None:
    with pytest.raises(ValueError, match="does not require the '2d' encoder"):
        PretrainModule(objectives=[ReadsUnrequired()], encoder_3d=tiny_et())


def test_a_step_trains_the_2d_encoder_through_both_passes(cache_dir: Path) -> None:
    module = unicorn().train()
    batch = first_batch(cache_dir, module)
    objectives = module.objectives
    for index in (0, 2):  # fragment masking alone, then the distillation alone
        module.zero_grad()
        outputs = module(batch)
        objectives[index].loss(batch, outputs).loss.backward()
        graphormer = module.encoder_2d.inner
        assert next(graphormer.atom_embedding.parameters()).grad.abs().sum() > 0
        mask_grad = graphormer.mask_embedding.grad
        # Only the masked pass sees the mask embedding.
        assert (mask_grad is not None and mask_grad.abs().sum() > 0) == (index == 0)


def test_a_stop_gradient_key_skips_autograd_in_the_second_pass(cache_dir: Path) -> None:
    torch.manual_seed(0)
    module = PretrainModule(
        objectives=[FragmentMask(), CrossModalInfoNCE(proj_dim=8, stop_grad_2d=True)],
        encoder_3d=tiny_et(),
        encoder_2d=tiny_graphormer(),
    ).train()
    batch = first_batch(cache_dir, module)
    outputs = module(batch)
    assert outputs["2d"].graph.requires_grad
    assert not outputs[unmasked("2d")].graph.requires_grad
    # With the gradient on (the default), both passes are differentiable.
    default = unicorn().train()
    outputs = default(batch)
    assert outputs["2d"].graph.requires_grad and outputs[unmasked("2d")].graph.requires_grad

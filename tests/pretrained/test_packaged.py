"""The checkpoints that ship inside molssl: present, small, documented, and fine-tunable by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from molssl import pretrained
from molssl.encoders import EquivariantTransformer
from molssl.modules.finetune import FinetuneModule
from molssl.modules.init_from import read_state_dict
from tests.modules import pretrain_fixtures
from tests.modules.finetune_fixtures import DescriptorData

MAX_BYTES = 5 * 1024 * 1024


class EncoderAtFitStart(Callback):
    """Keeps a copy of the encoder's weights when fitting starts (after ``init_from``)."""

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.state = {k: v.clone() for k, v in pl_module.encoder.state_dict().items()}


@pytest.mark.parametrize("name", pretrained.available())
def test_a_packaged_checkpoint_is_small_has_a_card_and_its_encoder_sizes(name: str) -> None:
    entry = pretrained.PACKAGED[name]
    assert entry.path.is_file() and entry.path.stat().st_size <= MAX_BYTES
    card = (entry.path.parent / entry.card).read_text()
    for section in ("Data", "Pre-training", "Results", "Licence", "Use"):
        assert f"## {section}" in card, section
    assert name in card
    encoder = EquivariantTransformer(**entry.encoder)
    state = read_state_dict(name)
    # Every encoder tensor is in the file with its shape: init_from will fit.
    for key, value in encoder.state_dict().items():
        assert state[f"encoder_3d.{key}"].shape == value.shape, key
    # The registry's arguments are the ones the file was trained with (compile_layers is a
    # speed switch, not part of the model).
    trained = torch.load(entry.path, map_location="cpu", weights_only=True)["encoder_init_args"]
    trained.pop("compile_layers", None)
    assert trained == entry.encoder


@pytest.mark.parametrize("name", pretrained.available())
def test_fine_tuning_starts_from_the_packaged_weights_by_name(name: str, tmp_path: Path) -> None:
    entry = pretrained.PACKAGED[name]
    module = FinetuneModule(EquivariantTransformer(**entry.encoder), num_tasks=2, init_from=name)
    snapshot = EncoderAtFitStart()
    trainer = pretrain_fixtures.quiet_trainer(
        tmp_path, max_steps=2, callbacks=[snapshot], limit_val_batches=0, num_sanity_val_steps=0
    )
    trainer.fit(module, DescriptorData(batch_size=8))
    packaged = read_state_dict(entry.path)
    for key, value in snapshot.state.items():
        # init_from copies the packaged tensors into the encoder: bit-identity is the promise.
        assert torch.equal(value, packaged[f"encoder_3d.{key}"]), key
    report = module.init_report
    assert report is not None and report.new == [] and (report.step or 0) > 0
    # Two optimiser steps moved the weights away from the packaged ones: it did fine-tune.
    moved = module.encoder.state_dict()
    assert any(
        not torch.allclose(moved[k], snapshot.state[k], rtol=0, atol=1e-6) for k in snapshot.state
    )

"""init_from: encoder weights from a real (tiny) PretrainModule checkpoint, and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from molssl import pretrained
from molssl.encoders import EquivariantTransformer
from molssl.modules import PretrainModule
from molssl.modules.finetune import FinetuneModule
from molssl.modules.init_from import InitFromError, load_encoder_weights, read_state_dict
from molssl.objectives import CoordDenoise, FragmentMask
from tests.modules import pretrain_fixtures
from tests.modules.finetune_fixtures import TINY_ET_ARGS, DescriptorData
from tests.modules.pretrain_fixtures import (
    prepare_small_cache,
    small_datamodule,
    tiny_et,
    tiny_graphormer,
)


def quiet_trainer(root: Path, **kwargs: object) -> Trainer:
    return pretrain_fixtures.quiet_trainer(root, **{"num_sanity_val_steps": 0, **kwargs})


@pytest.fixture(scope="module")
def pretrain_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A UniCorn-like PretrainModule (3D + 2D encoders) fitted 3 steps and saved by Lightning."""
    root = tmp_path_factory.mktemp("pretrain")
    cache = prepare_small_cache(tmp_path_factory.getbasetemp() / "molssl_cache")
    module = PretrainModule(
        objectives=[FragmentMask(), CoordDenoise()],
        encoder_3d=tiny_et(),
        encoder_2d=tiny_graphormer(),
        lr=1e-2,
        warmup_steps=1,
    )
    trainer = quiet_trainer(root, max_steps=3, limit_val_batches=0)
    trainer.fit(module, small_datamodule(cache))
    path = root / "pretrain.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_loads_every_encoder_tensor_and_reports_the_rest(pretrain_ckpt: Path) -> None:
    state = read_state_dict(pretrain_ckpt)
    encoder = EquivariantTransformer(**TINY_ET_ARGS)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    report = load_encoder_weights(encoder, pretrain_ckpt)
    assert sorted(report.loaded) == sorted(before)
    assert report.new == []
    for name, value in encoder.state_dict().items():
        assert torch.equal(value, state[f"encoder_3d.{name}"]), name
    # Fitting moved the weights, so the load changed the encoder (not a vacuous equality).
    assert any(not torch.equal(before[n], encoder.state_dict()[n]) for n in before)
    assert set(report.unused) == {n for n in state if not n.startswith("encoder_3d.")}
    assert any(n.startswith("encoder_2d.") for n in report.unused)
    assert any(n.startswith("objectives.") for n in report.unused)
    summary = report.summary(head_tensors=["head.mlp.net.0.weight"])
    assert f"loaded {len(before)} encoder tensors" in summary
    assert "new head tensors: 1: head.mlp.* (1)" in summary
    assert "encoder_2d." in summary and "objectives." in summary


def test_the_2d_encoder_loads_under_its_own_prefix(pretrain_ckpt: Path) -> None:
    encoder = tiny_graphormer()
    report = load_encoder_weights(encoder, pretrain_ckpt, prefix="encoder_2d.")
    assert sorted(report.loaded) == sorted(encoder.state_dict())


def test_a_larger_encoder_is_a_shape_error_naming_tensors_and_shapes(pretrain_ckpt: Path) -> None:
    encoder = EquivariantTransformer(**{**TINY_ET_ARGS, "hidden_channels": 24})
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    with pytest.raises(InitFromError) as info:
        load_encoder_weights(encoder, pretrain_ckpt)
    assert info.value.reason == "shape_mismatch"
    message = str(info.value)
    assert "encoder_3d.embedding.weight: checkpoint (100, 16) vs encoder (100, 24)" in message
    # Nothing was half-loaded.
    for name, value in encoder.state_dict().items():
        assert torch.equal(value, before[name])


def test_no_encoder_tensor_lists_the_prefixes_present(pretrain_ckpt: Path) -> None:
    with pytest.raises(InitFromError) as info:
        load_encoder_weights(EquivariantTransformer(**TINY_ET_ARGS), pretrain_ckpt, "model.")
    assert info.value.reason == "no_encoder_tensors"
    for prefix in ("'encoder_2d.'", "'encoder_3d.'", "'objectives.'"):
        assert prefix in str(info.value)


def test_a_plain_state_dict_file_loads_with_an_empty_prefix(tmp_path: Path) -> None:
    source = EquivariantTransformer(**TINY_ET_ARGS)
    path = tmp_path / "encoder.pt"
    torch.save(source.state_dict(), path)
    target = EquivariantTransformer(**TINY_ET_ARGS)
    report = load_encoder_weights(target, path, prefix="")
    assert report.unused == [] and report.new == []
    for name, value in target.state_dict().items():
        assert torch.equal(value, source.state_dict()[name])


def test_missing_and_unreadable_files_are_clear_errors(tmp_path: Path) -> None:
    encoder = EquivariantTransformer(**TINY_ET_ARGS)
    with pytest.raises(InitFromError, match="not found") as info:
        load_encoder_weights(encoder, tmp_path / "none.ckpt")
    assert info.value.reason == "checkpoint_not_found"
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(InitFromError, match="cannot read") as info:
        load_encoder_weights(encoder, garbage)
    assert info.value.reason == "checkpoint_unreadable"
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(InitFromError, match=r"empty\.ckpt is empty \(0 bytes\)") as info:
        load_encoder_weights(encoder, empty)
    assert info.value.reason == "checkpoint_unreadable"


class EncoderAtFitStart(Callback):
    """Keeps a copy of the encoder's weights when fitting starts (after setup)."""

    state: dict[str, torch.Tensor] = {}

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.state = {k: v.clone() for k, v in pl_module.encoder.state_dict().items()}


def test_finetune_module_loads_init_from_when_fitting_starts(
    pretrain_ckpt: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    module = FinetuneModule(
        EquivariantTransformer(**TINY_ET_ARGS), num_tasks=2, init_from=str(pretrain_ckpt)
    )
    snapshot = EncoderAtFitStart()
    trainer = quiet_trainer(tmp_path, max_steps=1, callbacks=[snapshot], limit_val_batches=0)
    with caplog.at_level("INFO"):
        trainer.fit(module, DescriptorData(batch_size=8))
    state = read_state_dict(pretrain_ckpt)
    for name, value in snapshot.state.items():
        assert torch.equal(value, state[f"encoder_3d.{name}"]), name
    assert module.init_report is not None and module.init_report.new == []
    assert "new head tensors" in caplog.text and "unused checkpoint tensors" in caplog.text


def test_finetune_module_reports_a_shape_mismatch_at_fit(
    pretrain_ckpt: Path, tmp_path: Path
) -> None:
    module = FinetuneModule(
        EquivariantTransformer(**{**TINY_ET_ARGS, "num_rbf": 4}),
        num_tasks=2,
        init_from=str(pretrain_ckpt),
    )
    with pytest.raises(InitFromError, match=r"distance_expansion.*\(8,\) vs encoder \(4,\)"):
        quiet_trainer(tmp_path, max_steps=1).fit(module, DescriptorData(batch_size=8))


def test_a_whitened_pretrained_encoder_initialises_an_unwhitened_one(tmp_path: Path) -> None:
    """The MD17/MD22 configs drop layernorm_on_vec (as Frad's force fine-tuning does) while
    pre-training keeps it: every other tensor loads, the whitening's weight is reported unused."""
    module = PretrainModule(
        objectives=[CoordDenoise()], encoder_3d=tiny_et(layernorm_on_vec="whitened")
    )
    path = tmp_path / "whitened.ckpt"
    torch.save({"state_dict": module.state_dict()}, path)
    encoder = tiny_et(layernorm_on_vec=None)
    report = load_encoder_weights(encoder, path)
    assert sorted(report.loaded) == sorted(encoder.state_dict())
    assert report.new == []
    assert "encoder_3d.out_norm_vec.weight" in report.unused


def test_a_packaged_name_resolves_offline_and_the_report_names_the_step(
    pretrain_ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = pretrained.PackagedCheckpoint(
        file=pretrain_ckpt.name, card="card.md", summary="test", encoder=TINY_ET_ARGS
    )
    monkeypatch.setattr(pretrained, "_FOLDER", pretrain_ckpt.parent)
    monkeypatch.setitem(pretrained.PACKAGED, "tiny-test", entry)
    assert pretrained.resolve("tiny-test") == pretrain_ckpt
    assert "tiny-test" in pretrained.available()
    report = load_encoder_weights(EquivariantTransformer(**TINY_ET_ARGS), "tiny-test")
    assert report.path == str(pretrain_ckpt) and report.step == 3
    assert "(step 3)" in report.summary()
    # A file always wins over a name, and a bare unknown name lists the packaged ones.
    assert pretrained.resolve(pretrain_ckpt) == pretrain_ckpt
    with pytest.raises(pretrained.PretrainedNameError, match="tiny-test"):
        load_encoder_weights(EquivariantTransformer(**TINY_ET_ARGS), "no-such-model")
    with pytest.raises(InitFromError, match="not found"):
        load_encoder_weights(EquivariantTransformer(**TINY_ET_ARGS), "missing/file.ckpt")

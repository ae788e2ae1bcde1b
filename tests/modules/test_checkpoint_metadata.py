"""checkpoint["molssl"]: written by PretrainModule, checked before any weight is loaded.

One real checkpoint (two training steps of a tiny 3D + 2D module on NCI molecules) is written
per test module; the mismatches are made by building a different module, or by editing the
saved dict and saving it again.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Trainer

import molssl
from molssl.checkpoints import CheckpointError
from molssl.encoders import EquivariantTransformer
from molssl.modules import PretrainModule
from molssl.modules.checkpoint_metadata import (
    CHECKPOINT_FORMAT_VERSION,
    CheckpointVersionWarning,
    check_checkpoint_metadata,
)
from molssl.objectives import CoordDenoise, FragmentMask
from tests.modules.pretrain_fixtures import (
    TINY_ENCODER_ARGS,
    prepare_small_cache,
    small_datamodule,
    tiny_et,
    tiny_graphormer,
)


class MyTransformer(EquivariantTransformer):
    """A user's encoder subclass: same weights' layout, another class."""


def build(objectives: list | None = None, encoder_3d: Any = None) -> PretrainModule:
    return PretrainModule(
        objectives=objectives or [FragmentMask(), CoordDenoise()],
        encoder_3d=encoder_3d or tiny_et(),
        encoder_2d=tiny_graphormer(),
        warmup_steps=1,
    )


def quiet_trainer(root: Path, **kwargs: Any) -> Trainer:
    return Trainer(
        accelerator="cpu",
        default_root_dir=str(root),
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        limit_val_batches=0,
        **kwargs,
    )


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_small_cache(tmp_path_factory.getbasetemp() / "molssl_cache")


@pytest.fixture(scope="module")
def checkpoint_path(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    module = build()
    module.nonfinite_guard.skipped = 7  # as if seven batches had been skipped
    trainer = quiet_trainer(root, max_steps=2, enable_checkpointing=False)
    trainer.fit(module, small_datamodule(cache_dir))
    path = root / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


def edited(path: Path, tmp_path: Path, **changes: Any) -> Path:
    """A copy of the checkpoint with its molssl entry changed (``None`` removes a key)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for key, value in changes.items():
        if value is None:
            checkpoint["molssl"].pop(key)
        else:
            checkpoint["molssl"][key] = value
    out = tmp_path / "edited.ckpt"
    torch.save(checkpoint, out)
    return out


def load(path: Path, **overrides: Any) -> PretrainModule:
    parts = {
        "objectives": [FragmentMask(), CoordDenoise()],
        "encoder_3d": tiny_et(),
        "encoder_2d": tiny_graphormer(),
    }
    parts.update(overrides)
    return PretrainModule.load_from_checkpoint(path, **parts)


def test_the_entry_is_plain_and_loads_with_weights_only(checkpoint_path: Path) -> None:
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    assert checkpoint["molssl"] == {
        "format": CHECKPOINT_FORMAT_VERSION,
        "version": molssl.__version__,
        "module": "molssl.modules.pretrain.PretrainModule",
        "objectives": ["fragment_mask", "coord_denoise"],
        "encoders": {
            "3d": "molssl.encoders.et.EquivariantTransformer",
            "2d": "molssl.encoders.graphormer.Graphormer",
        },
        "objective_classes": [
            "molssl.objectives.fragment_mask.FragmentMask",
            "molssl.objectives.denoise.CoordDenoise",
        ],
        "nonfinite": {"skipped": 7, "gradients_skipped": 0},
    }


def test_the_same_module_loads_silently_with_its_counters(checkpoint_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointVersionWarning)
        restored = load(checkpoint_path)
    assert restored.nonfinite_guard.skipped == 7


def test_another_objective_list_is_a_clear_error(checkpoint_path: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        load(checkpoint_path, objectives=[CoordDenoise(), FragmentMask()])
    assert info.value.reason == "objectives_mismatch"
    message = str(info.value)
    assert "[fragment_mask, coord_denoise]" in message
    assert "[coord_denoise, fragment_mask]" in message
    assert isinstance(info.value, ValueError)


def test_a_missing_objective_is_reported_before_any_state_dict_diff(checkpoint_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"has objectives \[coord_denoise\]") as info:
        load(checkpoint_path, objectives=[CoordDenoise()], encoder_2d=None)
    assert "Missing key" not in str(info.value)


def test_another_encoder_class_is_a_clear_error(checkpoint_path: Path) -> None:
    tiny = TINY_ENCODER_ARGS["molssl.encoders.EquivariantTransformer"]
    with pytest.raises(CheckpointError, match="MyTransformer") as info:
        load(checkpoint_path, encoder_3d=MyTransformer(**tiny))
    assert info.value.reason == "encoders_mismatch"
    assert "3d: molssl.encoders.et.EquivariantTransformer" in str(info.value)


def test_resuming_fit_checks_too(cache_dir: Path, checkpoint_path: Path, tmp_path: Path) -> None:
    module = build(objectives=[CoordDenoise(), FragmentMask()])
    trainer = quiet_trainer(tmp_path, max_steps=4, enable_checkpointing=False)
    with pytest.raises(CheckpointError) as info:
        trainer.fit(module, small_datamodule(cache_dir), ckpt_path=checkpoint_path)
    assert info.value.reason == "objectives_mismatch"


def test_other_encoder_sizes_are_one_line_not_a_dump_of_every_tensor(
    checkpoint_path: Path,
) -> None:
    wider = EquivariantTransformer(
        **{**TINY_ENCODER_ARGS["molssl.encoders.EquivariantTransformer"], "hidden_channels": 32}
    )
    with pytest.raises(CheckpointError) as info:
        load(checkpoint_path, encoder_3d=wider)
    assert info.value.reason == "shape_mismatch"
    message = str(info.value)
    assert "\n" not in message and "size mismatch" not in message
    assert re.search(r"\d+ tensor\(s\) differ in shape, first encoder_3d\.\S+: checkpoint", message)
    assert "(16,)" in message or ", 16)" in message
    deeper = EquivariantTransformer(
        **{**TINY_ENCODER_ARGS["molssl.encoders.EquivariantTransformer"], "num_layers": 2}
    )
    with pytest.raises(
        CheckpointError, match=r"tensor\(s\) the model has but the checkpoint lacks"
    ):
        load(checkpoint_path, encoder_3d=deeper)


def test_another_molssl_version_warns_and_loads(checkpoint_path: Path, tmp_path: Path) -> None:
    path = edited(checkpoint_path, tmp_path, version="0.0.1")
    with pytest.warns(CheckpointVersionWarning, match=r"molssl 0\.0\.1"):
        restored = load(path)
    assert restored.nonfinite_guard.skipped == 7


def test_a_newer_format_is_an_error(checkpoint_path: Path, tmp_path: Path) -> None:
    path = edited(checkpoint_path, tmp_path, format=CHECKPOINT_FORMAT_VERSION + 1, version="9.0")
    with pytest.raises(CheckpointError, match="upgrade molssl") as info:
        load(path)
    assert info.value.reason == "incompatible_format"


def test_a_checkpoint_of_another_kind_of_module_is_an_error(
    checkpoint_path: Path, tmp_path: Path
) -> None:
    path = edited(
        checkpoint_path, tmp_path, objectives=None, module="molssl.modules.FinetuneModule"
    )
    with pytest.raises(CheckpointError, match="FinetuneModule, which records no 'objectives'") as e:
        load(path)
    assert e.value.reason == "wrong_module"


def test_a_checkpoint_without_the_entry_loads_with_a_warning(
    checkpoint_path: Path, tmp_path: Path
) -> None:
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    del checkpoint["molssl"]
    path = tmp_path / "old.ckpt"
    torch.save(checkpoint, path)
    with pytest.warns(CheckpointVersionWarning, match="without checking"):
        restored = load(path)
    assert restored.nonfinite_guard.skipped == 0


@pytest.mark.parametrize("entry", ["not a dict", {"format": "1"}, {"version": "0.1"}])
def test_a_malformed_entry_is_an_error(entry: object) -> None:
    with pytest.raises(CheckpointError) as info:
        check_checkpoint_metadata({"molssl": entry}, object(), {"objectives": []})
    assert info.value.reason == "invalid_metadata"


def test_tuples_compare_equal_to_saved_lists() -> None:
    entry = {"format": 1, "version": molssl.__version__, "objectives": ["a", "b"]}
    assert check_checkpoint_metadata({"molssl": entry}, object(), {"objectives": ("a", "b")})

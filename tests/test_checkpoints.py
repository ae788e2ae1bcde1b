"""Recovering a run's configuration from its checkpoint (molssl.checkpoints)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from molssl.checkpoints import (
    CheckpointError,
    checkpoint_run_config,
    find_run_config,
    load_checkpoint_hparams,
)

MODEL_HPARAMS = {
    "_class_path": "tests.toy_modules.ToyRegressor",
    "num_features": 3,
    "lr": 0.05,
    "_instantiator": "lightning.pytorch.cli.instantiate_module",
}
DATA_HPARAMS = {
    "_class_path": "tests.toy_modules.ToyRegressionData",
    "num_samples": 100,
    "_instantiator": "lightning.pytorch.cli.instantiate_module",
}


def save_checkpoint(path: Path, **content: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"linear.weight": torch.zeros(1, 3)}, **content}, path)
    return path


@pytest.mark.parametrize("config_dir", ["run/checkpoints", "run", "."])
def test_find_run_config_looks_up_to_two_folders_above(tmp_path: Path, config_dir: str) -> None:
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    (tmp_path / config_dir / "config.yaml").write_text("model: {}\n")
    assert find_run_config(ckpt) == (tmp_path / config_dir / "config.yaml").resolve()


def test_find_run_config_stops_after_two_levels(tmp_path: Path) -> None:
    ckpt = tmp_path / "a" / "b" / "c" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    (tmp_path / "config.yaml").write_text("model: {}\n")
    assert find_run_config(ckpt) is None
    assert find_run_config(ckpt, levels_up=3) == (tmp_path / "config.yaml").resolve()


def test_find_run_config_prefers_the_nearest(tmp_path: Path) -> None:
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    (tmp_path / "config.yaml").write_text("model: {}\n")
    (tmp_path / "run" / "config.yaml").write_text("model: {}\n")
    assert find_run_config(ckpt) == (tmp_path / "run" / "config.yaml").resolve()


def test_hparams_become_class_path_sections(tmp_path: Path) -> None:
    ckpt = save_checkpoint(
        tmp_path / "m.ckpt",
        hyper_parameters=dict(MODEL_HPARAMS),
        datamodule_hyper_parameters=dict(DATA_HPARAMS),
    )
    assert checkpoint_run_config(ckpt) == {
        "model": {
            "class_path": "tests.toy_modules.ToyRegressor",
            "init_args": {"num_features": 3, "lr": 0.05},
        },
        "data": {
            "class_path": "tests.toy_modules.ToyRegressionData",
            "init_args": {"num_samples": 100},
        },
    }


def test_datamodule_without_class_is_left_out(tmp_path: Path) -> None:
    ckpt = save_checkpoint(
        tmp_path / "m.ckpt",
        hyper_parameters=dict(MODEL_HPARAMS),
        datamodule_hyper_parameters={"num_samples": 100},
    )
    assert load_checkpoint_hparams(ckpt)["data"] == {"num_samples": 100}
    assert set(checkpoint_run_config(ckpt)) == {"model"}


@pytest.mark.parametrize("hparams", [None, {"num_features": 3}])
def test_model_without_class_is_an_error(tmp_path: Path, hparams: dict | None) -> None:
    content = {} if hparams is None else {"hyper_parameters": hparams}
    ckpt = save_checkpoint(tmp_path / "m.ckpt", **content)
    with pytest.raises(CheckpointError, match="do not name the model class") as info:
        checkpoint_run_config(ckpt)
    assert info.value.reason == "no_run_config"


def test_missing_checkpoint_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found") as info:
        load_checkpoint_hparams(tmp_path / "missing.ckpt")
    assert info.value.reason == "checkpoint_not_found"


def test_directory_is_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_hparams(tmp_path)
    assert info.value.reason == "checkpoint_not_found"


@pytest.mark.parametrize("kind", ["garbage", "truncated", "tensor"])
def test_unreadable_checkpoint_is_an_error(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "bad.ckpt"
    if kind == "garbage":
        path.write_bytes(b"\x00not a torch file")
    elif kind == "truncated":
        save_checkpoint(path, hyper_parameters=dict(MODEL_HPARAMS))
        path.write_bytes(path.read_bytes()[:100])
    else:
        torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match=r"bad\.ckpt") as info:
        load_checkpoint_hparams(path)
    assert info.value.reason == "checkpoint_unreadable"
    assert isinstance(info.value, ValueError)


class RunsCodeWhenUnpickled:
    """A pickled object whose unpickling creates ``marker``: what a hostile checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def hostile_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "code_ran"
    path = save_checkpoint(
        tmp_path / "hostile.ckpt",
        hyper_parameters=dict(MODEL_HPARAMS),
        payload=RunsCodeWhenUnpickled(marker),
    )
    assert not marker.exists()
    return path, marker


def test_a_hostile_checkpoint_runs_no_code_when_read_for_its_config(tmp_path: Path) -> None:
    path, marker = hostile_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="Weights only load failed") as info:
        load_checkpoint_hparams(path)
    assert info.value.reason == "checkpoint_unreadable"
    assert not marker.exists()


def test_a_hostile_checkpoint_runs_no_code_when_resuming_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``molssl fit --ckpt_path`` goes through Lightning's loader, which leaves
    ``weights_only`` to torch: its default (True since torch 2.6) must hold."""
    import sys

    from molssl.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    path, marker = hostile_checkpoint(tmp_path)
    with pytest.raises(Exception, match="Weights only load failed"):
        main(
            [
                "fit",
                "--model=tests.toy_modules.ToyRegressor",
                "--data=tests.toy_modules.ToyRegressionData",
                "--trainer.max_epochs=1",
                "--trainer.enable_progress_bar=false",
                "--ckpt_path",
                str(path),
            ]
        )
    assert not marker.exists()

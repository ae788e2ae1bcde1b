"""load_checkpoint_encoder: a UniCorn checkpoint from ``molssl fit``, rewritten variants, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from molssl.analysis.encoder_checkpoint import load_checkpoint_encoder
from molssl.checkpoints import CheckpointError
from molssl.encoders import EquivariantTransformer, Graphormer
from tests.analysis.embed_fixtures import fit_tiny_unicorn


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fit_tiny_unicorn(
        tmp_path_factory.mktemp("unicorn"), tmp_path_factory.getbasetemp() / "molssl_cache"
    )


def state(ckpt: Path) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=True)


def assert_loaded(encoder: torch.nn.Module, tensors: dict, prefix: str) -> None:
    own = encoder.state_dict()
    assert own, "an encoder without tensors proves nothing"
    for name, value in own.items():
        assert torch.equal(value, tensors[prefix + name]), name


def test_the_default_is_the_3d_encoder_with_every_tensor(ckpt: Path) -> None:
    loaded = load_checkpoint_encoder(ckpt)
    assert isinstance(loaded.encoder, EquivariantTransformer)
    assert not loaded.encoder.training
    assert loaded.name == "encoder_3d"
    assert loaded.architecture_from == "checkpoint"
    assert loaded.module_class == "molssl.modules.PretrainModule"
    assert loaded.init_args["hidden_channels"] == 16
    tensors = state(ckpt)["state_dict"]
    assert_loaded(loaded.encoder, tensors, "encoder_3d.")
    assert loaded.num_tensors == len(loaded.encoder.state_dict())


def test_the_2d_encoder(ckpt: Path) -> None:
    loaded = load_checkpoint_encoder(ckpt, "encoder_2d")
    assert isinstance(loaded.encoder, Graphormer)
    assert_loaded(loaded.encoder, state(ckpt)["state_dict"], "encoder_2d.")


def test_random_init_is_seeded_and_not_the_checkpoint(ckpt: Path) -> None:
    trained = load_checkpoint_encoder(ckpt).encoder.state_dict()
    rng_before = torch.get_rng_state()
    first = load_checkpoint_encoder(ckpt, random_init=True, seed=3)
    assert torch.equal(torch.get_rng_state(), rng_before), "the caller's RNG was touched"
    again = load_checkpoint_encoder(ckpt, random_init=True, seed=3).encoder.state_dict()
    other = load_checkpoint_encoder(ckpt, random_init=True, seed=4).encoder.state_dict()
    assert first.weights == "random_init" and first.num_tensors == 0
    random = first.encoder.state_dict()
    assert set(random) == set(trained)
    assert all(torch.equal(random[k], again[k]) for k in random)
    assert any(not torch.equal(random[k], other[k]) for k in random)
    assert any(not torch.equal(random[k], trained[k]) for k in random)


def without_encoder_specs(ckpt: Path, folder: Path) -> Path:
    """The checkpoint as a module built in Python saves it: no encoder entries."""
    folder.mkdir(parents=True)
    checkpoint = state(ckpt)
    for key in ("encoder_3d", "encoder_2d", "encoder_blend"):
        checkpoint["hyper_parameters"].pop(key, None)
    path = folder / "bare.ckpt"
    torch.save(checkpoint, path)
    return path


def test_the_runs_config_yaml_gives_the_architecture(ckpt: Path, tmp_path: Path) -> None:
    bare = without_encoder_specs(ckpt, tmp_path / "run" / "checkpoints")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint_encoder(bare)
    assert error.value.reason == "no_encoder_architecture"
    assert "config.yaml" in str(error.value)
    # molssl fit writes config.yaml in the log dir, one folder above checkpoints/.
    shutil.copy(ckpt.parent.parent / "config.yaml", tmp_path / "run" / "config.yaml")
    loaded = load_checkpoint_encoder(bare)
    assert loaded.architecture_from == str(tmp_path / "run" / "config.yaml")
    assert_loaded(loaded.encoder, state(ckpt)["state_dict"], "encoder_3d.")


def test_a_finetuning_checkpoint_gives_its_encoder(ckpt: Path, tmp_path: Path) -> None:
    pretrain = state(ckpt)
    spec = pretrain["hyper_parameters"]["encoder_3d"]
    tensors = {
        "encoder." + k[len("encoder_3d.") :]: v
        for k, v in pretrain["state_dict"].items()
        if k.startswith("encoder_3d.")
    }
    tensors["head.weight"] = torch.zeros(1, 16)
    path = tmp_path / "finetune.ckpt"
    hparams = {"_class_path": "molssl.modules.FinetuneModule", "encoder": spec, "task": "x"}
    torch.save({"state_dict": tensors, "hyper_parameters": hparams}, path)
    loaded = load_checkpoint_encoder(path)
    assert loaded.name == "encoder"
    assert_loaded(loaded.encoder, tensors, "encoder.")


def test_errors(ckpt: Path, tmp_path: Path) -> None:
    def reason_of(path: Path, name: str | None = None) -> str:
        with pytest.raises(CheckpointError) as error:
            load_checkpoint_encoder(path, name)
        return error.value.reason

    assert reason_of(tmp_path / "nope.ckpt") == "checkpoint_not_found"
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    assert reason_of(garbage) == "checkpoint_unreadable"
    assert reason_of(ckpt, "encoder_blend") == "no_such_encoder"

    checkpoint = state(ckpt)
    checkpoint["hyper_parameters"]["encoder_3d"]["init_args"]["hidden_channels"] = 32
    wider = tmp_path / "wider.ckpt"
    torch.save(checkpoint, wider)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint_encoder(wider)
    assert error.value.reason == "encoder_weights_mismatch"
    assert "shape" in str(error.value)

    checkpoint = state(ckpt)
    checkpoint["state_dict"] = {
        k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("encoder_3d.")
    }
    no_weights = tmp_path / "no_weights.ckpt"
    torch.save(checkpoint, no_weights)
    assert reason_of(no_weights) == "no_encoder_tensors"

    checkpoint = state(ckpt)
    checkpoint["hyper_parameters"]["encoder_3d"]["init_args"]["no_such_argument"] = 1
    bad_spec = tmp_path / "bad_spec.ckpt"
    torch.save(checkpoint, bad_spec)
    assert reason_of(bad_spec) == "invalid_encoder_spec"

"""New molecules go through what the model's training samples went through: a MoleBLEND model
sees heavy-atom graphs in ``molssl.load(...).predict`` and ``molssl embed`` as in training; a
model trained with hydrogens keeps them; training augmentations are never applied."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch_geometric.data import Data

import molssl
from molssl.analysis.encoder_checkpoint import load_checkpoint_encoder
from molssl.inference_transforms import inference_transforms
from molssl.objectives import CoordNoise, RemoveHydrogens
from tests.inference.finetuned import fit_tiny_finetune

pytestmark = pytest.mark.usefixtures("isolated_cli")

REMOVE_H = {"class_path": "molssl.objectives.RemoveHydrogens"}


def test_only_views_that_say_what_a_sample_is_are_kept() -> None:
    model = {
        "class_path": "molssl.modules.PretrainModule",
        "init_args": {
            "views": [
                {"class_path": "molssl.objectives.CoordNoise", "init_args": {"sigma": 0.04}},
                REMOVE_H,
            ]
        },
    }
    (kept,) = inference_transforms(model, {}, "a test")
    assert isinstance(kept, RemoveHydrogens) and not CoordNoise(0.04).at_inference
    data = {"init_args": {"transform": REMOVE_H}}
    assert [type(t) for t in inference_transforms({}, data, "a test")] == [RemoveHydrogens]
    # A function given as the transform cannot be rebuilt from a config: nothing to apply.
    assert inference_transforms(None, {"transform": "<function f>"}, "a test") == []


def spy_on_inputs(module: torch.nn.Module) -> list[Data]:
    """The batches the module's encoder is called with, recorded."""
    seen: list[Data] = []
    encoder = module.encoder
    original = encoder.forward

    def recording(batch: Data, *args: object, **kwargs: object) -> object:
        seen.append(batch)
        return original(batch, *args, **kwargs)

    encoder.forward = recording  # type: ignore[method-assign]
    return seen


@pytest.mark.parametrize(
    ("config", "hydrogens"), [("moleblend_bbbp.yaml", False), ("freesolv.yaml", True)]
)
def test_new_molecules_get_the_training_transform(
    config: str, hydrogens: bool, tmp_path: Path
) -> None:
    ckpt, _ = fit_tiny_finetune(tmp_path, config, n=24)
    model = molssl.load(ckpt)
    seen = spy_on_inputs(model.module)
    result = model.predict(["CCO", "c1ccccc1O"])
    assert result.errors == [None, None]
    z = torch.cat([batch.z for batch in seen])
    assert bool((z == 1).any()) is hydrogens
    # Ethanol and phenol: 3 + 7 heavy atoms, 6 + 6 hydrogens.
    assert z.numel() == (22 if hydrogens else 10)
    encoder = load_checkpoint_encoder(ckpt)
    assert [type(t) for t in encoder.transforms] == ([] if hydrogens else [RemoveHydrogens])

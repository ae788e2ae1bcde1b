"""A trained molssl module rebuilt from its checkpoint file alone, ready for new molecules.

The module's class and constructor arguments come from the checkpoint's hyper-parameters (what
``molssl fit`` records), or else from the run's ``config.yaml`` beside it, as ``molssl test
--ckpt`` finds them (:mod:`molssl.checkpoints`); nested classes (the encoder) are built by
jsonargparse. Then the module checks that the checkpoint was written for it
(``on_load_checkpoint``: task, number of tasks, encoder class; task names restored) and takes
every tensor of its ``state_dict``. The datamodule's saved arguments tell how the training
molecules were featurised (conformer seed, force-field relaxation, heavy-atom limit), so that
new molecules get the same treatment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule

from molssl.checkpoints import (
    CheckpointError,
    hparams_sections,
    instantiate_spec,
    load_checkpoint_file,
    load_run_config,
)
from molssl.inference_transforms import SampleTransforms, inference_transforms

__all__ = ["LoadedCheckpoint", "load_module"]


@dataclass
class LoadedCheckpoint:
    """A module rebuilt from a checkpoint.

    Attributes:
        module: The LightningModule, weights loaded, in eval mode on the CPU.
        path: The checkpoint file.
        data_args: The training datamodule's constructor arguments (``{}`` if not recorded).
        architecture_from: ``"checkpoint"`` or the path of the ``config.yaml`` read.
        transforms: What the training samples went through that new molecules need too
            (:func:`~molssl.inference_transforms.inference_transforms`).
    """

    module: LightningModule
    path: Path
    data_args: dict[str, Any] = field(default_factory=dict)
    architecture_from: str = "checkpoint"
    transforms: SampleTransforms = field(default_factory=list)


def load_module(path: str | Path) -> LoadedCheckpoint:
    """Rebuilds the module of a ``molssl fit`` checkpoint (see the module docstring).

    Raises:
        CheckpointError: The file is missing or unreadable, does not say how its module was
            built, does not build, or holds weights that do not fit.
    """
    path = Path(path)
    checkpoint = load_checkpoint_file(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise CheckpointError(
            "checkpoint_unreadable", f"{path} is not a Lightning checkpoint (no state_dict)"
        )
    sections = hparams_sections(checkpoint)
    architecture_from = "checkpoint"
    if "class_path" not in sections.get("model", {}):
        sections, architecture_from = _run_config_sections(path)
    module = instantiate_spec(sections["model"], LightningModule, f"the model of {path}")
    try:
        module.on_load_checkpoint(checkpoint)
        module.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            "checkpoint_mismatch",
            f"the weights of {path} do not fit the {type(module).__name__} its hyper-parameters "
            f"build: {str(exc).splitlines()[0]}",
        ) from exc
    module.eval()
    data = sections.get("data") or {}
    data_args = dict(data.get("init_args", data)) if isinstance(data, Mapping) else {}
    transforms = inference_transforms(sections.get("model"), data, str(path))
    return LoadedCheckpoint(module, path, data_args, architecture_from, transforms)


def _run_config_sections(path: Path) -> tuple[dict[str, Any], str]:
    config, config_path = load_run_config(path, "no_run_config")
    model = config.get("model") if isinstance(config, Mapping) else None
    if not isinstance(model, Mapping) or "class_path" not in model:
        raise CheckpointError(
            "no_run_config",
            f"{path} does not say which model it holds: its hyper-parameters name no class (it "
            "was not written by `molssl fit`) and no config.yaml of the run was found beside it "
            "or up to two folders above; put the run's config.yaml next to the checkpoint",
        )
    return {"model": dict(model), "data": dict(config.get("data") or {})}, str(config_path)

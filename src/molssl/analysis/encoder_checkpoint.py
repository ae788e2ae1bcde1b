"""One encoder of a molssl checkpoint, rebuilt from its saved architecture (or freshly initialised).

A :class:`~molssl.modules.PretrainModule` checkpoint holds up to three encoders, under the
constructor arguments (and ``state_dict`` prefixes) ``encoder_3d``, ``encoder_2d`` and
``encoder_blend``; a :class:`~molssl.modules.FinetuneModule` checkpoint holds one, ``encoder``.
The architecture of each is its ``class_path``/``init_args`` entry, found

1. in the checkpoint's hyper-parameters (what ``molssl fit`` records), else
2. in the run's ``config.yaml`` beside the checkpoint or up to two folders above it (as
   ``molssl test --ckpt`` looks for it, :func:`molssl.checkpoints.find_run_config`).

The encoder is built from that entry by jsonargparse (nested ``class_path`` arguments
included), and its tensors are the checkpoint's under ``<name>.``, every one of them required:
an encoder half loaded would give embeddings that describe neither the pre-trained model nor a
random one. With ``random_init`` the same architecture keeps its seeded initialisation, the
baseline the paper's representation plots compare against.

The file is read once, with ``torch.load(weights_only=True)``: a checkpoint from elsewhere
cannot run code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from molssl.checkpoints import (
    CheckpointError,
    hparams_sections,
    instantiate_spec,
    is_spec,
    load_checkpoint_file,
    load_run_config,
)
from molssl.inference_transforms import SampleTransforms, inference_transforms

__all__ = ["ENCODER_NAMES", "CheckpointEncoder", "load_checkpoint_encoder"]

#: Encoder arguments of molssl's modules, in the order the default is picked from.
ENCODER_NAMES = ("encoder_3d", "encoder", "encoder_blend", "encoder_2d")


@dataclass
class CheckpointEncoder:
    """An encoder taken out of a checkpoint, in eval mode on the CPU.

    Attributes:
        encoder: The module.
        name: Its constructor argument and ``state_dict`` prefix (``encoder_3d``, ...).
        class_path: Its class.
        init_args: Its constructor arguments as saved.
        module_class: The class of the module that saved it (``None`` if not recorded).
        architecture_from: ``"checkpoint"`` or the path of the ``config.yaml`` read.
        weights: ``"checkpoint"`` or ``"random_init"``.
        num_tensors: Tensors loaded from the checkpoint (0 for a random initialisation).
        transforms: What the training samples went through that new molecules need too (the
            heavy-atom graph of a MoleBLEND model;
            :func:`~molssl.inference_transforms.inference_transforms`).
    """

    encoder: nn.Module
    name: str
    class_path: str
    init_args: dict[str, Any]
    module_class: str | None
    architecture_from: str
    weights: str
    num_tensors: int
    transforms: SampleTransforms = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """Plain values for ``metrics.json``."""
        return {
            "name": self.name,
            "class_path": self.class_path,
            "init_args": self.init_args,
            "module_class": self.module_class,
            "architecture_from": self.architecture_from,
            "weights": self.weights,
            "num_tensors": self.num_tensors,
            "transforms": [type(transform).__name__ for transform in self.transforms],
            "out_dim": getattr(self.encoder, "out_dim", None),
        }


def load_checkpoint_encoder(
    ckpt_path: str | Path,
    name: str | None = None,
    random_init: bool = False,
    seed: int = 0,
) -> CheckpointEncoder:
    """Rebuilds one encoder of a molssl checkpoint.

    Args:
        ckpt_path: A Lightning checkpoint written by ``molssl fit`` (pre-training or
            fine-tuning).
        name: Which encoder (``encoder_3d``, ``encoder_2d``, ``encoder_blend`` or ``encoder``);
            ``None`` takes the first of :data:`ENCODER_NAMES` the checkpoint has.
        random_init: Keep a fresh initialisation (seeded by ``seed``) instead of the
            checkpoint's weights.
        seed: Seed of that initialisation.

    Returns:
        The encoder in eval mode, with where its architecture and weights came from.

    Raises:
        CheckpointError: ``checkpoint_not_found``, ``checkpoint_unreadable``,
            ``no_encoder_architecture`` (neither the hyper-parameters nor a ``config.yaml``
            describe any encoder), ``no_such_encoder`` (the checkpoint has other encoders; the
            message lists them), ``invalid_encoder_spec`` (the saved entry does not build),
            ``no_encoder_tensors`` / ``encoder_weights_mismatch`` (the weights are missing or
            do not fit).
    """
    path = Path(ckpt_path)
    checkpoint = _read_checkpoint(path)
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    module_class = hparams.get("_class_path")
    specs, architecture_from = _encoder_specs(path, hparams)
    if not specs:
        raise CheckpointError(
            "no_encoder_architecture",
            f"{path} does not say how its encoders were built: its hyper-parameters name no "
            "encoder class (the module was built in Python, not by `molssl fit`) and no "
            "config.yaml of the run was found beside it or up to two folders above; put the "
            "run's config.yaml next to the checkpoint",
        )
    chosen = name or next(n for n in ENCODER_NAMES + tuple(specs) if n in specs)
    if chosen not in specs:
        raise CheckpointError(
            "no_such_encoder",
            f"{path} has no {chosen!r}; its encoders are {', '.join(sorted(specs))}",
        )
    spec = specs[chosen]
    # A private generator state: the seeded initialisation leaves the caller's RNG alone.
    with torch.random.fork_rng(devices=[]):
        if random_init:
            torch.manual_seed(seed)
        encoder = _build(spec, chosen, path)
    num_tensors = 0
    if not random_init:
        num_tensors = _load_weights(encoder, checkpoint, chosen, path)
    encoder.eval()
    return CheckpointEncoder(
        encoder=encoder,
        name=chosen,
        class_path=str(spec["class_path"]),
        init_args=dict(spec.get("init_args") or {}),
        module_class=None if module_class is None else str(module_class),
        architecture_from=architecture_from,
        weights="random_init" if random_init else "checkpoint",
        num_tensors=num_tensors,
        transforms=_transforms(path, checkpoint, architecture_from),
    )


def _transforms(
    path: Path, checkpoint: Mapping[str, Any], architecture_from: str
) -> SampleTransforms:
    """The inference transforms of the run, from where its architecture was read."""
    if architecture_from == "checkpoint":
        sections = hparams_sections(dict(checkpoint))
        return inference_transforms(sections.get("model"), sections.get("data"), str(path))
    config, _ = load_run_config(path, "no_encoder_architecture")
    if not isinstance(config, Mapping):
        return []
    return inference_transforms(config.get("model"), config.get("data"), str(path))


def _read_checkpoint(path: Path) -> dict[str, Any]:
    checkpoint = load_checkpoint_file(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise CheckpointError(
            "checkpoint_unreadable", f"{path} is not a Lightning checkpoint (no state_dict)"
        )
    return checkpoint


def _specs_in(arguments: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        key: dict(value)
        for key, value in arguments.items()
        if key.startswith("encoder") and is_spec(value)
    }


def _encoder_specs(path: Path, hparams: Mapping[str, Any]) -> tuple[dict[str, dict[str, Any]], str]:
    specs = _specs_in(hparams)
    if specs:
        return specs, "checkpoint"
    config, config_path = load_run_config(path, "no_encoder_architecture")
    if config_path is None:
        return {}, ""
    model = config.get("model") if isinstance(config, Mapping) else None
    if not isinstance(model, Mapping):
        return {}, str(config_path)
    arguments = model.get("init_args", model)
    return (_specs_in(arguments) if isinstance(arguments, Mapping) else {}), str(config_path)


def _build(spec: Mapping[str, Any], name: str, path: Path) -> nn.Module:
    try:
        return instantiate_spec(spec, nn.Module, f"the {name} entry of {path}")
    except CheckpointError as exc:
        raise CheckpointError("invalid_encoder_spec", str(exc)) from exc.__cause__


def _load_weights(encoder: nn.Module, checkpoint: Mapping[str, Any], name: str, path: Path) -> int:
    prefix = f"{name}."
    state: Mapping[str, Any] = checkpoint["state_dict"]
    tensors = {
        key[len(prefix) :]: value
        for key, value in state.items()
        if key.startswith(prefix) and isinstance(value, Tensor)
    }
    if not tensors:
        raise CheckpointError(
            "no_encoder_tensors",
            f"{path} describes {name} but holds none of its tensors (no state_dict key starts "
            f"with {prefix!r})",
        )
    own = encoder.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = sorted(k for k in set(own) & set(tensors) if own[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        problems = [
            f"{label}: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''} ({len(keys)})"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong))
            if keys
        ]
        raise CheckpointError(
            "encoder_weights_mismatch",
            f"the {name} tensors of {path} do not fit the encoder its architecture builds; "
            + "; ".join(problems),
        )
    encoder.load_state_dict(tensors, strict=True)
    return len(tensors)

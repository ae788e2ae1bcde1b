"""Recover the configuration of a training run from one of its checkpoints.

``molssl test --ckpt PATH`` must work without the original YAML. Lightning lays a run out as
``<log_dir>/config.yaml`` (written by LightningCLI's ``SaveConfigCallback``) beside
``<log_dir>/checkpoints/*.ckpt``, so the saved config is looked for next to the checkpoint and up
to two folders above it. When it is gone, the model and datamodule are rebuilt from the
hyper-parameters stored in the checkpoint: LightningCLI records each one's class under
``_class_path`` next to its ``__init__`` arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from molssl.errors import UserError

RUN_CONFIG_NAME = "config.yaml"

# The keys of a Lightning checkpoint that hold the hyper-parameters of each CLI section.
_HPARAM_KEYS = {"model": "hyper_parameters", "data": "datamodule_hyper_parameters"}
# Bookkeeping that LightningCLI adds to saved hyper-parameters; not an ``__init__`` argument.
_INSTANTIATOR_KEY = "_instantiator"
_CLASS_PATH_KEY = "_class_path"


class CheckpointError(UserError):
    """A checkpoint that cannot be used: missing, unreadable, or not describing its model.

    Attributes:
        reason: Short snake_case code (``checkpoint_not_found``, ``checkpoint_unreadable``,
            ``no_run_config``).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def find_run_config(ckpt_path: str | Path, levels_up: int = 2) -> Path | None:
    """The run's saved ``config.yaml`` for a checkpoint, or ``None`` if there is none.

    Args:
        ckpt_path: Path to a ``.ckpt`` file.
        levels_up: How many folders above the checkpoint's own folder to search as well.

    Returns:
        The nearest ``config.yaml``, searching the checkpoint's folder first.
    """
    folder = Path(ckpt_path).resolve().parent
    for candidate in [folder, *folder.parents][: levels_up + 1]:
        config = candidate / RUN_CONFIG_NAME
        if config.is_file():
            return config
    return None


def load_run_config(ckpt_path: str | Path, reason: str) -> tuple[Any, Path | None]:
    """The run's ``config.yaml`` of a checkpoint, parsed, and its path (``(None, None)``: none).

    Raises:
        CheckpointError: ``reason``, when the file is there but cannot be read as YAML.
    """
    config_path = find_run_config(ckpt_path)
    if config_path is None:
        return None, None
    try:
        return yaml.safe_load(config_path.read_text()), config_path
    except (OSError, yaml.YAMLError) as exc:
        raise CheckpointError(reason, f"cannot read the run's config {config_path}: {exc}") from exc


def load_checkpoint_file(
    path: str | Path,
    error: Callable[[str, str], Exception] = CheckpointError,
    label: str = "checkpoint",
) -> Any:
    """The object stored in a checkpoint file, loaded on the CPU without running its code.

    Args:
        path: A ``.ckpt`` or state-dict file.
        error: Builds the exception raised, from a reason code and a message (each caller
            keeps its own error type, e.g. :class:`CheckpointError`).
        label: What the file is called in the messages (``"checkpoint"``,
            ``"init_from checkpoint"``).

    Raises:
        Exception: ``error("checkpoint_not_found", ...)`` for a missing file,
            ``error("checkpoint_unreadable", ...)`` for one torch cannot read safely.
    """
    path = Path(path)
    if not path.is_file():
        raise error("checkpoint_not_found", f"{label} not found: {path}")
    try:
        # weights_only: a checkpoint from elsewhere must not be able to run code on load; the
        # hyper-parameters LightningCLI saves are plain YAML values, which this allows.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many unrelated types for a bad file
        # torch's first line is enough to tell a truncated file from a foreign one.
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise error(
            "checkpoint_unreadable",
            f"cannot read {label} {path} ({type(exc).__name__}: {detail})",
        ) from exc


def load_checkpoint_hparams(ckpt_path: str | Path) -> dict[str, Any]:
    """Model and datamodule hyper-parameters stored in a checkpoint, as config sections.

    Args:
        ckpt_path: Path to a ``.ckpt`` file written by Lightning.

    Returns:
        ``{"model": {...}, "data": {...}}`` where each section present in the checkpoint is
        ``{"class_path": ..., "init_args": {...}}`` if LightningCLI recorded its class, else the
        bare ``__init__`` arguments. Sections the checkpoint lacks are left out.

    Raises:
        CheckpointError: If the file is missing or is not a readable checkpoint.
    """
    path = Path(ckpt_path)
    checkpoint = load_checkpoint_file(path)
    if not isinstance(checkpoint, dict):
        raise CheckpointError("checkpoint_unreadable", f"{path} is not a Lightning checkpoint")
    return hparams_sections(checkpoint)


def hparams_sections(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The ``model``/``data`` config sections of a loaded checkpoint's hyper-parameters.

    See :func:`load_checkpoint_hparams`, which reads the file first.
    """
    sections: dict[str, Any] = {}
    for section, key in _HPARAM_KEYS.items():
        hparams = checkpoint.get(key)
        if hparams:
            sections[section] = _as_config_section(dict(hparams))
    return sections


def is_spec(value: object) -> bool:
    """Whether ``value`` is a ``{"class_path": ..., ...}`` entry :func:`instantiate_spec` builds."""
    return isinstance(value, Mapping) and isinstance(value.get("class_path"), str)


def instantiate_spec(spec: Mapping[str, Any], base: type, label: str) -> Any:
    """An object built from a ``{"class_path": ..., "init_args": {...}}`` entry by jsonargparse.

    Nested ``class_path`` arguments (an encoder inside a module) are built too, as
    LightningCLI builds them.

    Args:
        spec: The entry, as a config or a checkpoint's hyper-parameters hold it.
        base: The class the result must be (a subclass of).
        label: What the entry is, for the error message.

    Raises:
        CheckpointError: ``invalid_spec``: the class does not import, or the arguments do not
            fit it.
    """
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--built", type=base)
    try:
        return parser.instantiate(parser.parse_object({"built": dict(spec)})).built
    except Exception as exc:  # jsonargparse reports import and argument problems alike
        raise CheckpointError(
            "invalid_spec", f"{label} ({spec.get('class_path')}) does not build: {exc}"
        ) from exc


def checkpoint_run_config(ckpt_path: str | Path) -> dict[str, Any]:
    """Config sections rebuilt from a checkpoint, for runs whose ``config.yaml`` is gone.

    Args:
        ckpt_path: Path to a ``.ckpt`` file written by ``molssl fit``.

    Returns:
        ``{"model": {"class_path": ..., "init_args": ...}}`` plus a ``"data"`` section when the
        datamodule's hyper-parameters were saved with its class.

    Raises:
        CheckpointError: If the checkpoint is unusable or does not name its model's class.
    """
    sections = load_checkpoint_hparams(ckpt_path)
    if "class_path" not in sections.get("model", {}):
        raise CheckpointError(
            "no_run_config",
            f"no {RUN_CONFIG_NAME} found beside {ckpt_path} (nor up to two folders above), and "
            "the checkpoint's hyper-parameters do not name the model class (it was not trained "
            "with `molssl fit`, or the module did not call save_hyperparameters()); "
            "pass --config with the model and data",
        )
    if "class_path" not in sections.get("data", {}):
        # Bare datamodule arguments cannot be placed without knowing the class.
        sections.pop("data", None)
    return sections


def _as_config_section(hparams: dict[str, Any]) -> dict[str, Any]:
    hparams.pop(_INSTANTIATOR_KEY, None)
    class_path = hparams.pop(_CLASS_PATH_KEY, None)
    if class_path is None:
        return hparams
    return {"class_path": class_path, "init_args": hparams}

"""What a molssl checkpoint says about itself, and the check that it fits the module loading it.

Every molssl module writes ``checkpoint["molssl"]`` in ``on_save_checkpoint``::

    {"format": 1, "version": "0.1.0", "module": "molssl.modules.PretrainModule",
     "objectives": ["fragment_mask", "coord_denoise", ...],       # pre-training
     "encoders": {"3d": "molssl.encoders.EquivariantTransformer", ...}}

and checks it in ``on_load_checkpoint``, which Lightning calls before the state dict is loaded
(``load_from_checkpoint`` and ``trainer.fit(ckpt_path=...)`` alike). So a checkpoint trained
with other objectives or other encoder classes fails with a :class:`CheckpointError` saying
which, instead of a ``KeyError`` or a dump of missing and unexpected state-dict keys. Only
plain values are stored, so the checkpoint still loads with ``torch.load(weights_only=True)``.

A checkpoint from another molssl version loads with a warning; one whose ``format`` is newer
than this molssl understands is an error. A checkpoint without the entry (written by molssl
before it existed, or by another program) loads with a warning that nothing was checked.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, MutableMapping
from typing import Any

from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

import molssl
from molssl.checkpoints import CheckpointError

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "METADATA_KEY",
    "CheckpointVersionWarning",
    "check_checkpoint_metadata",
    "check_state_dict_fits",
    "class_path",
    "write_checkpoint_metadata",
]

#: Key of molssl's entry in a Lightning checkpoint.
METADATA_KEY = "molssl"
#: Layout of what molssl puts in a checkpoint; bumped when an older molssl could not read it.
CHECKPOINT_FORMAT_VERSION = 1


class CheckpointVersionWarning(UserWarning):
    """A checkpoint written by another molssl version (or without molssl's metadata)."""


def class_path(obj: object) -> str:
    """``module.QualName`` of an object's class (of a class itself when given one)."""
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def write_checkpoint_metadata(
    checkpoint: MutableMapping[str, Any], module: object, **fields: Any
) -> dict[str, Any]:
    """Stores molssl's entry in ``checkpoint`` and returns it.

    Args:
        checkpoint: The dict Lightning hands to ``on_save_checkpoint``.
        module: The module being saved (its class path is recorded).
        **fields: What the module's ``on_load_checkpoint`` will compare (plain values only:
            strings, numbers, lists, dicts), e.g. ``objectives=[...]``, ``encoders={...}``.
    """
    entry = {
        "format": CHECKPOINT_FORMAT_VERSION,
        "version": molssl.__version__,
        "module": class_path(module),
        **fields,
    }
    checkpoint[METADATA_KEY] = entry
    return entry


def check_checkpoint_metadata(
    checkpoint: Mapping[str, Any], module: object, expected: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Checks that a checkpoint was written for a module like ``module``, sizes included.

    The fields first (:func:`_checked_entry`), then the tensors
    (:func:`check_state_dict_fits`): a module built with other sizes gets one line saying so,
    not a ``RuntimeError`` listing every mismatched tensor.
    """
    entry = _checked_entry(checkpoint, module, expected)
    check_state_dict_fits(checkpoint, module)
    return entry


def check_state_dict_fits(checkpoint: Mapping[str, Any], module: object) -> None:
    """Checks that the checkpoint's ``state_dict`` has the tensors of ``module``, same shapes.

    Tensors not built yet (lazy heads, sized by their first batch) are left out.

    Raises:
        CheckpointError: ``shape_mismatch`` naming how many tensors differ and the first one
            with both shapes; ``missing_tensors`` / ``unexpected_tensors`` when the names differ
            (another number of layers, say) and the module loads strictly.
    """
    saved = checkpoint.get("state_dict")
    own_state = getattr(module, "state_dict", None)
    if not isinstance(saved, Mapping) or not callable(own_state):
        return
    own = {
        name: value
        for name, value in own_state().items()
        if not isinstance(value, UninitializedParameter | UninitializedBuffer)
    }
    loader = class_path(module).rsplit(".", 1)[-1]
    advice = (
        "was it built with other sizes? Build it as the run that wrote the checkpoint did (its "
        "config.yaml)"
    )
    differ = [
        name
        for name, value in own.items()
        if name in saved and hasattr(saved[name], "shape") and saved[name].shape != value.shape
    ]
    if differ:
        first = differ[0]
        raise CheckpointError(
            "shape_mismatch",
            f"the checkpoint's weights do not fit this {loader}: {len(differ)} tensor(s) differ "
            f"in shape, first {first}: checkpoint {tuple(saved[first].shape)} vs model "
            f"{tuple(own[first].shape)}; {advice}",
        )
    if not getattr(module, "strict_loading", True):
        return
    lazy = set(own_state()) - set(own)
    missing = [name for name in own if name not in saved]
    unexpected = [name for name in saved if name not in own and name not in lazy]
    for reason, names, where in (
        ("missing_tensors", missing, "the model has but the checkpoint lacks"),
        ("unexpected_tensors", unexpected, "the checkpoint has but the model lacks"),
    ):
        if names:
            raise CheckpointError(
                reason,
                f"{len(names)} tensor(s) {where}, first {names[0]}: the checkpoint does not fit "
                f"this {loader}; {advice}",
            )


def _checked_entry(
    checkpoint: Mapping[str, Any], module: object, expected: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Checks that a checkpoint was written for a module like ``module``.

    Args:
        checkpoint: The dict Lightning hands to ``on_load_checkpoint``.
        module: The module loading it (named in messages).
        expected: The fields that must equal the checkpoint's, e.g. the module's objective
            names and encoder classes.

    Returns:
        The checkpoint's molssl entry, or ``None`` when it has none (a warning is issued).

    Raises:
        CheckpointError: ``incompatible_format`` for a format newer than this molssl reads,
            ``invalid_metadata`` for a malformed entry, ``wrong_module`` when the checkpoint
            records none of a field (another kind of module wrote it), and
            ``<field>_mismatch`` (e.g. ``objectives_mismatch``, ``encoders_mismatch``) when a
            field differs.
    """
    loader = class_path(module)
    entry = checkpoint.get(METADATA_KEY)
    if entry is None:
        warnings.warn(
            f"this checkpoint has no {METADATA_KEY!r} entry (written before molssl recorded one, "
            f"or not by molssl): {loader} loads it without checking its objectives or encoders",
            CheckpointVersionWarning,
            stacklevel=2,
        )
        return None
    if not isinstance(entry, Mapping) or not isinstance(entry.get("format"), int):
        raise CheckpointError(
            "invalid_metadata",
            f"the checkpoint's {METADATA_KEY!r} entry is malformed ({entry!r:.200}); it was not "
            "written by molssl",
        )
    written_by = entry.get("module", "an unknown module")
    version = entry.get("version", "an unknown version")
    if entry["format"] > CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            "incompatible_format",
            f"the checkpoint was written by molssl {version} in checkpoint format "
            f"{entry['format']}; this molssl ({molssl.__version__}) reads formats up to "
            f"{CHECKPOINT_FORMAT_VERSION}: upgrade molssl to load it",
        )
    if version != molssl.__version__:
        warnings.warn(
            f"the checkpoint was written by molssl {version}, this is molssl "
            f"{molssl.__version__}: its layout is compatible (format {entry['format']}), but "
            "results may differ where the code changed",
            CheckpointVersionWarning,
            stacklevel=2,
        )
    for field, wanted in expected.items():
        if field not in entry:
            raise CheckpointError(
                "wrong_module",
                f"the checkpoint was written by {written_by}, which records no {field!r}; "
                f"{loader} cannot load it (a fine-tuning checkpoint given to pre-training, or "
                "the reverse?)",
            )
        found = entry[field]
        if _plain(found) != _plain(wanted):
            raise CheckpointError(
                f"{field}_mismatch",
                f"the checkpoint was trained with {field} {_describe(found)}, but this "
                f"{loader.rsplit('.', 1)[-1]} has {field} {_describe(wanted)}: build the module "
                "as the run that wrote the checkpoint did (its config.yaml), or load only the "
                "weights you need from checkpoint['state_dict']",
            )
    return dict(entry)


def _plain(value: Any) -> Any:
    """Tuples as lists and mappings as dicts, so that a saved value compares to a built one."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{key}: {item}" for key, item in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(str(item) for item in value) + "]"
    return repr(value)

"""Initialise a fine-tuning encoder from a pre-training checkpoint (``init_from: PATH``).

A :class:`~molssl.modules.PretrainModule` checkpoint holds every encoder and every objective's
heads in one ``state_dict``, under prefixes such as ``encoder_3d.``, ``encoder_2d.`` and
``objectives.``. Fine-tuning keeps one encoder: its tensors are the ones under the prefix (by
default ``encoder_3d.``, UniCorn's conformer encoder), with the prefix removed. Everything else
in the checkpoint (the 2D encoder, pre-training heads) is reported as unused, and whatever the
encoder has that the checkpoint lacks is reported as new and keeps its fresh initialisation.

A checkpoint is read with ``weights_only=True``: a file from elsewhere cannot run code. Plain
``state_dict`` files (``torch.save(encoder.state_dict(), path)``) work with ``prefix=""``.
``init_from`` may also name a checkpoint packaged with molssl (``init_from: <name>``, see
:mod:`molssl.pretrained`); the report names the file and the training step it holds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor, nn

from molssl.checkpoints import load_checkpoint_file
from molssl.errors import UserError
from molssl.pretrained import resolve

__all__ = [
    "InitFromError",
    "InitReport",
    "check_init_from",
    "load_encoder_weights",
    "read_state_dict",
]

#: Prefix of the 3D encoder in a PretrainModule checkpoint.
DEFAULT_PREFIX = "encoder_3d."
_MAX_LISTED = 12


class InitFromError(UserError):
    """A pre-training checkpoint that cannot initialise the encoder.

    Attributes:
        reason: ``checkpoint_not_found``, ``checkpoint_unreadable``, ``no_encoder_tensors`` or
            ``shape_mismatch``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class InitReport:
    """What :func:`load_encoder_weights` did.

    Attributes:
        path: The checkpoint read.
        prefix: The prefix the encoder's tensors were taken from.
        loaded: Encoder tensor names given checkpoint values.
        new: Encoder tensor names the checkpoint lacks (fresh initialisation kept).
        unused: Checkpoint tensor names (full, with prefix) that went nowhere.
        step: The checkpoint's ``global_step`` (``None`` for a plain state dict).
    """

    path: str
    prefix: str
    loaded: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    step: int | None = None

    def summary(self, head_tensors: list[str] | None = None) -> str:
        """A few lines for the log: counts, with the names of new and unused tensors grouped.

        Args:
            head_tensors: Names of the task head's tensors, always new, listed for completeness.
        """
        at_step = "" if self.step is None else f" (step {self.step})"
        lines = [
            f"init_from {self.path}{at_step}: loaded {len(self.loaded)} encoder tensors from "
            f"'{self.prefix}*'",
            f"  new encoder tensors (fresh initialisation): {_grouped(self.new)}",
        ]
        if head_tensors is not None:
            lines.append(f"  new head tensors: {_grouped(head_tensors)}")
        lines.append(f"  unused checkpoint tensors: {_grouped(self.unused)}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, object]:
        """Counts and names as plain values, for checkpoint metadata."""
        return {
            "path": self.path,
            "prefix": self.prefix,
            "loaded": len(self.loaded),
            "new": list(self.new),
            "unused": len(self.unused),
            "step": self.step,
        }


def _grouped(names: list[str]) -> str:
    """``"none"``, or the count and names grouped by their first two dotted parts."""
    if not names:
        return "none"
    groups = Counter(".".join(name.split(".")[:2]) for name in names)
    listed = ", ".join(f"{group}.* ({count})" for group, count in sorted(groups.items()))
    return f"{len(names)}: {listed}"


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a Lightning checkpoint (its ``state_dict``) or of a plain state-dict file.

    ``path`` may be a packaged checkpoint's name (:func:`molssl.pretrained.resolve`).

    Raises:
        InitFromError: Missing file, a file torch cannot read safely, or one holding no tensors.
        PretrainedNameError: A bare name that is neither a file nor packaged.
    """
    return _read_checkpoint(path)[0]


def check_init_from(path: str | Path) -> None:
    """Fails now, in one line, where fitting would fail at its start: ``path`` is neither an
    existing file nor a packaged name. ``molssl fit`` calls it before any data is prepared.

    Raises:
        InitFromError: ``checkpoint_not_found``.
        PretrainedNameError: A bare name that is neither a file nor packaged.
    """
    resolved = resolve(path)
    if not resolved.is_file():
        raise InitFromError("checkpoint_not_found", f"init_from checkpoint not found: {resolved}")


def _read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], int | None]:
    """The tensors of a checkpoint and its ``global_step`` (``None`` when it has none)."""
    path = resolve(path)
    if path.is_file() and path.stat().st_size == 0:
        raise InitFromError(
            "checkpoint_unreadable",
            f"init_from checkpoint {path} is empty (0 bytes): an interrupted copy or save?",
        )
    checkpoint = load_checkpoint_file(path, InitFromError, "init_from checkpoint")
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, Mapping):
        raise InitFromError(
            "checkpoint_unreadable", f"{path} is neither a Lightning checkpoint nor a state_dict"
        )
    tensors = {str(k): v for k, v in state.items() if isinstance(v, Tensor)}
    if not tensors:
        raise InitFromError("checkpoint_unreadable", f"{path} holds no tensors")
    step = checkpoint.get("global_step") if isinstance(checkpoint, dict) else None
    return tensors, step if isinstance(step, int) else None


def _prefixes(names: list[str]) -> list[str]:
    return sorted({name.split(".", 1)[0] + "." for name in names if "." in name})


def load_encoder_weights(
    encoder: nn.Module, path: str | Path, prefix: str = DEFAULT_PREFIX
) -> InitReport:
    """Copies the checkpoint's tensors under ``prefix`` into ``encoder``.

    Args:
        encoder: The fine-tuning encoder (parameters and buffers are both loaded).
        path: A pre-training checkpoint or a plain ``state_dict`` file.
        prefix: Where the encoder's tensors sit in the checkpoint (``""``: at the top level).

    Returns:
        What was loaded, new and unused.

    Raises:
        InitFromError: Unreadable checkpoint; no tensor under ``prefix`` that the encoder knows
            (the message lists the prefixes present); tensors whose shapes differ (all of them
            are named, with both shapes). Nothing is loaded when an error is raised.
    """
    checkpoint, step = _read_checkpoint(path)
    path = resolve(path)
    own = encoder.state_dict()
    candidates = {name[len(prefix) :]: name for name in checkpoint if name.startswith(prefix)}
    matched = [name for name in own if name in candidates]
    if not matched:
        present = ", ".join(repr(p) for p in _prefixes(list(checkpoint))) or "none"
        raise InitFromError(
            "no_encoder_tensors",
            f"no tensor of the {type(encoder).__name__} encoder found under prefix {prefix!r} in "
            f"{path}; prefixes present: {present}. Set init_from_prefix to the one holding "
            "this encoder (a PretrainModule keeps its 3D encoder under 'encoder_3d.', its 2D "
            "encoder under 'encoder_2d.')",
        )
    mismatched = [
        f"{candidates[name]}: checkpoint {tuple(checkpoint[candidates[name]].shape)} vs encoder "
        f"{tuple(own[name].shape)}"
        for name in matched
        if checkpoint[candidates[name]].shape != own[name].shape
    ]
    if mismatched:
        more = len(mismatched) - _MAX_LISTED
        listed = "; ".join(mismatched[:_MAX_LISTED]) + (f"; and {more} more" if more > 0 else "")
        raise InitFromError(
            "shape_mismatch",
            f"{len(mismatched)} tensors of {path} do not fit the {type(encoder).__name__} "
            f"encoder (were the encoder's sizes changed from pre-training?): {listed}",
        )
    encoder.load_state_dict({name: checkpoint[candidates[name]] for name in matched}, strict=False)
    used = {candidates[name] for name in matched}
    return InitReport(
        path=str(path),
        prefix=prefix,
        loaded=matched,
        new=[name for name in own if name not in candidates],
        unused=[name for name in checkpoint if name not in used],
        step=step,
    )

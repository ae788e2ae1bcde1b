"""The error of ``molssl embed`` for inputs and settings it cannot use."""

from __future__ import annotations

from molssl.errors import UserError

__all__ = ["EmbedError"]


class EmbedError(UserError):
    """An embedding run that cannot go on.

    Attributes:
        reason: Short snake_case code: ``empty_input`` (the input holds no entry),
            ``no_molecules`` (every entry failed), ``no_label_column``, ``labels_unsupported``
            (a label column asked of a SMILES file), ``invalid_setting``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

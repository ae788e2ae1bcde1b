"""Typed errors for molecules that cannot be used, each with a short ``reason`` code.

Data pipelines count failures by ``reason`` (``invalid_smiles``, ``embedding_failed``, ...), so
every way a molecule can fail maps to one stable code, and the human message says which
molecule failed and why.
"""

from __future__ import annotations

__all__ = [
    "EmbeddingError",
    "InvalidSmilesError",
    "MoleculeError",
    "MoleculeTooLargeError",
    "NoHeavyAtomError",
    "UnsupportedElementError",
]


class MoleculeError(ValueError):
    """A molecule that cannot be featurized or embedded.

    Args:
        message: Human-readable explanation naming the molecule.
        reason: Stable snake_case code used to count failures.
    """

    default_reason = "invalid_molecule"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or self.default_reason

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Keep ``reason`` when the error crosses a multiprocessing boundary.
        return (type(self), (str(self), self.reason))


class InvalidSmilesError(MoleculeError):
    """The SMILES does not parse or does not sanitise (``invalid_smiles``, ``empty_input``)."""

    default_reason = "invalid_smiles"


class UnsupportedElementError(MoleculeError):
    """An element the pipeline cannot handle (``unsupported_element``)."""

    default_reason = "unsupported_element"


class NoHeavyAtomError(MoleculeError):
    """A molecule made of hydrogens only (``no_heavy_atom``)."""

    default_reason = "no_heavy_atom"


class MoleculeTooLargeError(MoleculeError):
    """More heavy atoms than the configured limit (``too_many_atoms``)."""

    default_reason = "too_many_atoms"


class EmbeddingError(MoleculeError):
    """No 3D conformer could be generated.

    Reasons: ``embedding_failed``, ``embedding_timeout``, ``force_field_failed``,
    ``degenerate_conformer``.
    """

    default_reason = "embedding_failed"

"""Bad input gives a typed error with a reason code: no bare RDKit message, no hang."""

from __future__ import annotations

import pickle

import pytest

from molssl.chem.conformers import ConformerOptions, embed_conformers
from molssl.chem.errors import (
    EmbeddingError,
    InvalidSmilesError,
    MoleculeError,
    MoleculeTooLargeError,
    NoHeavyAtomError,
    UnsupportedElementError,
)
from molssl.chem.features import mol_from_smiles

LONG_CHAIN = "C" * 200


@pytest.mark.parametrize(
    ("smiles", "error", "reason"),
    [
        ("C1CC", InvalidSmilesError, "invalid_smiles"),  # unclosed ring
        ("c1cccc1", InvalidSmilesError, "invalid_smiles"),  # cannot kekulize
        ("C(C)(C)(C)(C)C", InvalidSmilesError, "invalid_smiles"),  # pentavalent carbon
        ("not a smiles", InvalidSmilesError, "invalid_smiles"),
        ("", InvalidSmilesError, "empty_input"),
        ("   ", InvalidSmilesError, "empty_input"),
        ("[H][H]", NoHeavyAtomError, "no_heavy_atom"),
        ("*CC", UnsupportedElementError, "unsupported_element"),
        (LONG_CHAIN, MoleculeTooLargeError, "too_many_atoms"),
    ],
)
def test_parse_errors_are_typed(smiles: str, error: type, reason: str, capfd) -> None:
    with pytest.raises(error) as info:
        mol_from_smiles(smiles)
    assert isinstance(info.value, MoleculeError)
    assert info.value.reason == reason
    assert str(info.value)  # a message for people, naming the input
    # RDKit's own C++ log lines are silenced; the error carries the explanation.
    assert "SMILES Parse Error" not in capfd.readouterr().err


def test_sanitisation_error_carries_rdkit_explanation() -> None:
    with pytest.raises(InvalidSmilesError, match=r"(?i)valence"):
        mol_from_smiles("C(C)(C)(C)(C)C")


def test_element_without_force_field_cannot_be_embedded() -> None:
    with pytest.raises(UnsupportedElementError) as info:
        embed_conformers(mol_from_smiles("[Og]"))
    assert info.value.reason == "unsupported_element"


def test_200_heavy_atoms_is_bounded_in_time() -> None:
    """With the size limit lifted, embedding either works or fails typed within its limits."""
    mol = mol_from_smiles(LONG_CHAIN, max_heavy_atoms=None)
    options = ConformerOptions(timeout_s=2, max_attempts=1, max_optimize_iters=50)
    try:
        result = embed_conformers(mol, options)
    except EmbeddingError as error:
        assert error.reason in {"embedding_timeout", "embedding_failed"}
    else:
        assert result.GetNumConformers() == 1


def test_errors_survive_pickling_with_their_reason() -> None:
    error = EmbeddingError("no conformer for 'X'", reason="embedding_timeout")
    restored = pickle.loads(pickle.dumps(error))
    assert type(restored) is EmbeddingError
    assert restored.reason == "embedding_timeout" and str(restored) == str(error)

"""Bad input gives a typed error with a reason code: no bare RDKit message, no hang."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from molssl.chem.conformers import ConformerOptions, conformer_positions, embed_conformers
from molssl.chem.errors import (
    EmbeddingError,
    InvalidSmilesError,
    MoleculeError,
    MoleculeTooLargeError,
    NoHeavyAtomError,
    UnsupportedElementError,
)
from molssl.chem.features import featurize_smiles, mol_from_smiles

LONG_CHAIN = "C" * 200
# Real coordination compounds whose metal UFF can type but ETKDG cannot place, even from random
# starting coordinates: iron pentacarbonyl and hexaamminecobalt(III).
ETKDG_REFUSES = [
    "[Fe](C#[O+])(C#[O+])(C#[O+])(C#[O+])C#[O+]",
    "[NH3]->[Co+3](<-[NH3])(<-[NH3])(<-[NH3])(<-[NH3])<-[NH3]",
]

BAD_INPUTS = [
    ("C1CC", InvalidSmilesError, "invalid_smiles"),  # unclosed ring
    ("c1cccc1", InvalidSmilesError, "invalid_smiles"),  # cannot kekulize
    ("C(C)(C)(C)(C)C", InvalidSmilesError, "invalid_smiles"),  # pentavalent carbon
    ("not a smiles", InvalidSmilesError, "invalid_smiles"),
    ("", InvalidSmilesError, "empty_input"),
    ("   ", InvalidSmilesError, "empty_input"),
    ("[H][H]", NoHeavyAtomError, "no_heavy_atom"),
    ("*CC", UnsupportedElementError, "unsupported_element"),
    (LONG_CHAIN, MoleculeTooLargeError, "too_many_atoms"),
    (None, InvalidSmilesError, "empty_input"),
    (float("nan"), InvalidSmilesError, "empty_input"),  # a missing value in a CSV column
    (42, InvalidSmilesError, "invalid_smiles"),
]


@pytest.mark.parametrize(("smiles", "error", "reason"), BAD_INPUTS)
def test_parse_errors_are_typed(
    smiles: object, error: type, reason: str, capfd: pytest.CaptureFixture
) -> None:
    with pytest.raises(error) as info:
        mol_from_smiles(smiles)
    assert isinstance(info.value, MoleculeError)
    assert info.value.reason == reason
    assert str(info.value)  # a message for people, naming the input
    # RDKit's own C++ log lines are silenced; the error carries the explanation.
    assert "SMILES Parse Error" not in capfd.readouterr().err


def test_errors_carry_rdkit_explanation() -> None:
    with pytest.raises(InvalidSmilesError, match=r"(?i)valence"):
        mol_from_smiles("C(C)(C)(C)(C)C")
    with pytest.raises(InvalidSmilesError, match="unclosed ring") as info:
        mol_from_smiles("C1CC")
    assert "[" not in str(info.value).split("RDKit:")[1]  # no log timestamps


@pytest.mark.parametrize("smiles", ["[Og]", "[Rn]", "F[Xe]F"])
def test_element_without_force_field_cannot_be_embedded(smiles: str) -> None:
    with pytest.raises(UnsupportedElementError) as info:
        embed_conformers(mol_from_smiles(smiles))
    assert info.value.reason == "unsupported_element"


@pytest.mark.parametrize("smiles", ETKDG_REFUSES)
def test_metal_complex_etkdg_refuses_is_a_typed_error(
    smiles: str, capfd: pytest.CaptureFixture
) -> None:
    with pytest.raises(EmbeddingError, match="INITIAL_COORDS") as info:
        # A generous budget: the refusal (~2.5 s idle) must not turn into a timeout under load.
        embed_conformers(mol_from_smiles(smiles), ConformerOptions(timeout_s=120))
    assert info.value.reason == "embedding_failed"
    assert not capfd.readouterr().err


@pytest.mark.parametrize(
    ("smiles", "error", "reason"),
    [*BAD_INPUTS, *[(s, EmbeddingError, "embedding_failed") for s in ETKDG_REFUSES]],
)
def test_featurize_smiles_raises_only_typed_errors(
    smiles: object, error: type, reason: str
) -> None:
    with pytest.raises(MoleculeError) as info:
        featurize_smiles(smiles, ConformerOptions(timeout_s=120))
    assert type(info.value) is error and info.value.reason == reason


def test_200_heavy_atoms_is_bounded_in_time() -> None:
    """With the size limit lifted, embedding either works or fails typed within its limits."""
    mol = mol_from_smiles(LONG_CHAIN, max_heavy_atoms=None)
    assert mol.GetNumHeavyAtoms() == 200
    options = ConformerOptions(timeout_s=2, max_attempts=2, max_optimize_iters=50)
    try:
        result = embed_conformers(mol, options)
    except EmbeddingError as error:
        assert error.reason in {"embedding_timeout", "embedding_failed"}
        assert LONG_CHAIN[:20] in str(error)  # names the molecule
    else:
        assert result.GetNumConformers() == 1
        assert np.isfinite(conformer_positions(result)).all()


def test_errors_survive_pickling_with_their_reason() -> None:
    error = EmbeddingError("no conformer for 'X'", reason="embedding_timeout")
    restored = pickle.loads(pickle.dumps(error))
    assert type(restored) is EmbeddingError
    assert restored.reason == "embedding_timeout" and str(restored) == str(error)

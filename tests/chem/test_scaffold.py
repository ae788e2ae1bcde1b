"""Bemis-Murcko scaffolds: parity with RDKit's MurckoScaffold on real molecules."""

from __future__ import annotations

import pytest
from rdkit import Chem
from rdkit.Chem.Scaffolds import MurckoScaffold

from molssl.chem.errors import InvalidSmilesError
from molssl.chem.scaffold import murcko_scaffold


def test_parity_with_rdkit_on_nci(nci_smiles: list[str]) -> None:
    acyclic = 0
    for smiles in nci_smiles:
        expected = MurckoScaffold.MurckoScaffoldSmiles(smiles=smiles, includeChirality=False)
        assert murcko_scaffold(smiles) == expected
        acyclic += expected == ""
    assert 0 < acyclic < len(nci_smiles)


def test_known_scaffolds() -> None:
    assert murcko_scaffold("CCOC(=O)c1ccccc1") == "c1ccccc1"
    assert murcko_scaffold("CC(=O)Nc1ccc(OCc2ccccc2)cc1") == "c1ccc(COc2ccccc2)cc1"
    assert murcko_scaffold("CCCCO") == ""


def test_explicit_hydrogens_and_mol_input_do_not_change_the_scaffold(
    nci_smiles: list[str],
) -> None:
    for smiles in nci_smiles[:50]:
        mol_h = Chem.AddHs(Chem.MolFromSmiles(smiles))
        assert murcko_scaffold(mol_h) == murcko_scaffold(smiles)


def test_chirality_dropped_by_default() -> None:
    trans_decalin = "C[C@H]1CC[C@H]2CCCC[C@@H]2C1"
    with_stereo = murcko_scaffold(trans_decalin, include_chirality=True)
    assert "@" in with_stereo
    assert murcko_scaffold(trans_decalin) == "C1CCC2CCCCC2C1"
    assert Chem.CanonSmiles(with_stereo.replace("@", "")) == murcko_scaffold(trans_decalin)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("C1CC", "invalid_smiles"),
        ("c1cccc1", "invalid_smiles"),
        ("", "empty_input"),
        (None, "empty_input"),
        (float("nan"), "empty_input"),
        (42, "invalid_smiles"),
    ],
)
def test_invalid_input_is_a_typed_error(bad: object, reason: str) -> None:
    with pytest.raises(InvalidSmilesError) as info:
        murcko_scaffold(bad)  # type: ignore[arg-type]
    assert info.value.reason == reason

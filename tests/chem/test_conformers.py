"""Conformer generation: seeded, bounded, typed failures, never degenerate."""

from __future__ import annotations

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import rdMolTransforms

from molssl.chem.conformers import ConformerOptions, conformer_positions, embed_conformers
from molssl.chem.errors import EmbeddingError, UnsupportedElementError
from molssl.chem.features import mol_from_smiles
from tests.conftest import read_nci_smiles


def test_same_seed_gives_identical_coordinates() -> None:
    mol = mol_from_smiles("CC(=O)Oc1ccccc1C(=O)O")
    options = ConformerOptions(num_conformers=3, seed=11)
    first = conformer_positions(embed_conformers(mol, options))
    second = conformer_positions(embed_conformers(mol, options))
    assert first.shape == (3, mol.GetNumAtoms(), 3)
    np.testing.assert_array_equal(first, second)
    other = conformer_positions(embed_conformers(mol, ConformerOptions(num_conformers=3, seed=12)))
    assert not np.array_equal(first, other)


def test_real_molecules_get_sound_mmff_conformers() -> None:
    options = ConformerOptions(num_conformers=2)
    embedded = 0
    for smiles in read_nci_smiles(25):
        mol = mol_from_smiles(smiles)
        try:
            result = embed_conformers(mol, options)
        except (EmbeddingError, UnsupportedElementError) as error:
            assert error.reason  # typed failure with a reason code, never a bare RDKit error
            continue
        embedded += 1
        assert result.GetNumAtoms() == mol.GetNumAtoms()
        assert 1 <= result.GetNumConformers() <= 2
        assert result.GetProp("molssl_force_field") in {"MMFF94", "UFF"}
        positions = conformer_positions(result)
        assert np.isfinite(positions).all()
        for conf in positions:
            dist = np.linalg.norm(conf[:, None] - conf[None], axis=-1)
            np.fill_diagonal(dist, np.inf)
            assert dist.min() > 0.5  # no coincident atoms, never all zeros
        # Bond lengths are chemical after MMFF: every bond 0.9-2.0 Å.
        conformer = result.GetConformer(0)
        for bond in result.GetBonds():
            length = rdMolTransforms.GetBondLength(
                conformer, bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
            )
            assert 0.85 < length < 2.2
    assert embedded >= 20


def test_input_molecule_is_not_modified() -> None:
    mol = mol_from_smiles("CCN")
    embed_conformers(mol)
    assert mol.GetNumConformers() == 0


def test_salt_fragments_are_kept_apart() -> None:
    positions = conformer_positions(embed_conformers(mol_from_smiles("[Na+].[Cl-]")))
    assert np.linalg.norm(positions[0, 0] - positions[0, 1]) > 1.0


def test_untyped_element_is_a_typed_error() -> None:
    with pytest.raises(UnsupportedElementError, match="Xe") as info:
        embed_conformers(mol_from_smiles("F[Xe]F"))
    assert info.value.reason == "unsupported_element"
    # Allowed explicitly: distance geometry only, recorded as such.
    result = embed_conformers(
        mol_from_smiles("F[Xe]F"), ConformerOptions(require_force_field=False)
    )
    assert result.GetProp("molssl_force_field") == "none"


def test_uff_fallback_when_mmff_lacks_parameters() -> None:
    result = embed_conformers(mol_from_smiles("C[Hg]C"))
    assert result.GetProp("molssl_force_field") == "UFF"


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="num_conformers"):
        ConformerOptions(num_conformers=0)
    with pytest.raises(ValueError, match="timeout_s"):
        ConformerOptions(timeout_s=0)


def test_conformer_positions_needs_a_conformer() -> None:
    with pytest.raises(ValueError, match="no conformer"):
        conformer_positions(Chem.MolFromSmiles("C"))

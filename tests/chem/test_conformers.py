"""Conformer generation: seeded, bounded, typed failures, never degenerate."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import rdDistGeom, rdForceFieldHelpers, rdMolTransforms

from molssl.chem.conformers import (
    ConformerOptions,
    conformer_positions,
    embed_conformers,
    etkdg_parameters,
)
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
    assert not np.array_equal(first[0], first[1])  # three conformers, not one copied
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


def test_random_coordinates_rescue_what_eigen_embedding_refuses() -> None:
    """XeF4 (square planar) defeats ETKDG's eigen-embedding; random starting points work."""
    mol = mol_from_smiles("F[Xe](F)(F)F")
    no_fallback = ConformerOptions(require_force_field=False, random_coords_fallback=False)
    with pytest.raises(EmbeddingError, match="INITIAL_COORDS") as info:
        embed_conformers(mol, no_fallback)
    assert info.value.reason == "embedding_failed"
    result = embed_conformers(mol, ConformerOptions(require_force_field=False))
    assert result.GetProp("molssl_force_field") == "none"  # recorded: geometry not relaxed
    positions = conformer_positions(result)[0]
    assert np.isfinite(positions).all()
    xenon_fluorine = np.linalg.norm(positions[1:] - positions[0], axis=-1)
    assert (xenon_fluorine > 1.0).all()


def test_budget_exhausted_is_a_timeout() -> None:
    # The eigen-embedding of a 200-carbon chain fails for many seconds before giving up.
    mol = mol_from_smiles("C" * 200, max_heavy_atoms=None)
    with pytest.raises(EmbeddingError, match="EXCEEDED_TIMEOUT") as info:
        embed_conformers(mol, ConformerOptions(timeout_s=1, max_attempts=1))
    assert info.value.reason == "embedding_timeout"


def test_degenerate_conformers_are_dropped_or_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    mol = mol_from_smiles("OCCN")
    real = conformer_positions(embed_conformers(mol, ConformerOptions(optimize=False)))[0]
    bad_blocks = [np.zeros_like(real), np.full_like(real, np.nan)]

    def embed_with(blocks: list[np.ndarray]) -> Callable[..., list[int]]:
        def fake_embed(target: Chem.Mol, num_confs: int, params: object) -> list[int]:
            ids = []
            for block in blocks:
                conformer = Chem.Conformer(target.GetNumAtoms())
                for i, xyz in enumerate(block):
                    conformer.SetAtomPosition(i, xyz.tolist())
                ids.append(target.AddConformer(conformer, assignId=True))
            return ids

        return fake_embed

    options = ConformerOptions(num_conformers=3, optimize=False)
    monkeypatch.setattr(rdDistGeom, "EmbedMultipleConfs", embed_with([*bad_blocks, real]))
    kept = embed_conformers(mol, options)
    assert [c.GetId() for c in kept.GetConformers()] == [0]
    np.testing.assert_array_equal(conformer_positions(kept)[0], real)

    monkeypatch.setattr(rdDistGeom, "EmbedMultipleConfs", embed_with(bad_blocks))
    with pytest.raises(EmbeddingError) as info:
        embed_conformers(mol, options)
    assert info.value.reason == "degenerate_conformer"


def test_force_field_crash_is_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Invariant Violation")

    monkeypatch.setattr(rdForceFieldHelpers, "OptimizeMoleculeConfs", broken)
    with pytest.raises(EmbeddingError, match="Invariant Violation") as info:
        embed_conformers(mol_from_smiles("CCO"))
    assert info.value.reason == "force_field_failed"
    monkeypatch.setattr(rdForceFieldHelpers, "UFFOptimizeMoleculeConfs", broken)
    with pytest.raises(EmbeddingError, match="UFF optimisation failed") as info:
        embed_conformers(mol_from_smiles("C[Hg]C"))
    assert info.value.reason == "force_field_failed"


def _rdkit_reference(mol: Chem.Mol, options: ConformerOptions) -> np.ndarray | None:
    """RDKit's own calls for the same chemistry: ETKDGv3 attempts with embed_conformers'
    parameters, then MMFFOptimizeMoleculeConfs (else UFF) on a fresh copy."""
    work = Chem.Mol(mol)
    for attempt in range(options.max_attempts):
        params = etkdg_parameters(options, attempt, options.timeout_s)
        rdDistGeom.EmbedMultipleConfs(work, options.num_conformers, params)
        if work.GetNumConformers():  # a failed attempt returns [] or [-1]
            break
    if not work.GetNumConformers():
        return None
    relaxed = Chem.Mol(work)
    if rdForceFieldHelpers.MMFFHasAllMoleculeParams(Chem.Mol(mol)):
        rdForceFieldHelpers.MMFFOptimizeMoleculeConfs(
            relaxed, numThreads=1, maxIters=options.max_optimize_iters
        )
    elif rdForceFieldHelpers.UFFHasAllMoleculeParams(Chem.Mol(mol)):
        rdForceFieldHelpers.UFFOptimizeMoleculeConfs(
            relaxed, numThreads=1, maxIters=options.max_optimize_iters
        )
    else:
        return None
    return conformer_positions(relaxed)


def test_coordinates_equal_rdkit_etkdg_then_mmff_optimize_molecule_confs() -> None:
    """One MMFF94 typing reused for the minimisation gives RDKit's coordinates bit for bit."""
    options = ConformerOptions(num_conformers=2, seed=5)
    smiles = [*read_nci_smiles(40), "C[Hg]C", "[Na+].[Cl-]", "CC(=O)[O-].[NH4+]"]
    compared = 0
    for text in smiles:
        mol = mol_from_smiles(text)
        expected = _rdkit_reference(mol, options)
        try:
            result = embed_conformers(mol, options)
        except (EmbeddingError, UnsupportedElementError):
            assert expected is None, text
            continue
        assert expected is not None, text
        np.testing.assert_array_equal(conformer_positions(result), expected, err_msg=text)
        compared += 1
    assert compared >= 35


def test_rdkit_log_is_silent_and_explanation_is_in_the_error(capfd: pytest.CaptureFixture) -> None:
    with pytest.raises(UnsupportedElementError) as info:
        embed_conformers(mol_from_smiles("F[Xe]F"))
    assert "UFFTYPER" not in capfd.readouterr().err
    assert "Xe5+4" in str(info.value)  # the atom type UFF does not know, from RDKit's log


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="num_conformers"):
        ConformerOptions(num_conformers=0)
    with pytest.raises(ValueError, match="timeout_s"):
        ConformerOptions(timeout_s=0)


def test_conformer_positions_needs_a_conformer() -> None:
    with pytest.raises(ValueError, match="no conformer"):
        conformer_positions(Chem.MolFromSmiles("C"))


def test_force_field_does_not_change_the_molecule_it_returns() -> None:
    """MMFF94 re-perceives aromaticity; the features read after embedding must not change."""
    from molssl.chem.features import mol_to_data

    smiles = "[O-][N+](=O)C1=CNC(=N)S1"  # NCI molecule whose ring MMFF94 re-types
    mol = mol_from_smiles(smiles)
    before = mol_to_data(mol)
    after = mol_to_data(embed_conformers(mol), conf_id=0)
    assert after.smiles == before.smiles
    assert torch.equal(after.x, before.x) and torch.equal(after.edge_attr, before.edge_attr)


def test_seed_zero_gives_distinct_conformers() -> None:
    positions = conformer_positions(
        embed_conformers(mol_from_smiles("CCCCOCCCC"), ConformerOptions(num_conformers=3, seed=0))
    )
    assert not np.allclose(positions[0], positions[1])
    with pytest.raises(ValueError, match="seed"):
        ConformerOptions(seed=-1)

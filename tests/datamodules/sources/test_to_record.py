"""entry_to_record: parity with records.record_from_smiles / RDKit's own SDF reading."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem

from molssl.chem.conformers import ConformerOptions
from molssl.chem.errors import MoleculeError
from molssl.datamodules.records import record_from_mol, record_from_smiles
from molssl.datamodules.sources import SourceEntry, entry_to_record, iter_source
from tests.datamodules.sources.helpers import (
    embedded_nci,
    pubchemqc_document,
    write_json,
    write_sdf,
)

ARRAYS = ("z", "x", "edge_index", "edge_attr", "conformers", "fragment", "torsion_atoms")

FAST = ConformerOptions(num_conformers=2, seed=3, max_optimize_iters=50)


def test_smiles_entry_is_record_from_smiles(nci_smiles: list[str]) -> None:
    for i, smiles in enumerate(nci_smiles[:8]):
        entry = SourceEntry("a.smi", i, i + 1, f"id{i}", smiles=smiles)
        record = entry_to_record(entry, mol_id=100 + i, options=FAST)
        expected = record_from_smiles(smiles, 100 + i, FAST)
        assert record.source_id == f"id{i}"
        assert record.mol_id == 100 + i and record.smiles == expected.smiles
        assert record.num_conformers == 2
        for key in ARRAYS:
            np.testing.assert_array_equal(getattr(record, key), getattr(expected, key))


def test_sdf_with_hydrogens_matches_rdkit_reading_and_keeps_coordinates(tmp_path: Path) -> None:
    mols = embedded_nci(40)
    path = write_sdf(tmp_path / "h.sdf", mols)
    references = Chem.SDMolSupplier(str(path), removeHs=False)  # sanitised, stereo from 3D
    for i, (entry, reference) in enumerate(zip(iter_source(path), references, strict=True)):
        record = entry_to_record(entry, mol_id=i, options=FAST)
        expected = record_from_mol(reference, i)
        assert record.source_id == entry.source_id == reference.GetProp("_Name")
        assert record.to_data().source_id == entry.source_id  # carried into the samples
        assert record.smiles == expected.smiles
        for key in ARRAYS:
            np.testing.assert_array_equal(getattr(record, key), getattr(expected, key), key)
        # One conformer, exactly the file's: no ETKDG, no force field.
        assert record.num_conformers == 1
        np.testing.assert_array_equal(
            record.conformers[0],
            entry.mol.GetConformer().GetPositions().astype(np.float32),
        )


def test_heavy_atom_sdf_gets_hydrogens_with_coordinates(tmp_path: Path) -> None:
    with_h = embedded_nci(30)
    heavy = [Chem.RemoveHs(mol) for mol in with_h]
    path = write_sdf(tmp_path / "heavy.sdf", heavy)
    rdkit_read = Chem.SDMolSupplier(str(path))  # stereo assigned from the 3D geometry
    triples = zip(iter_source(path), with_h, rdkit_read, strict=True)
    for i, (entry, full, reference) in enumerate(triples):
        record = entry_to_record(entry, mol_id=i)
        n_heavy = entry.mol.GetNumAtoms()
        # The file's heavy atoms first, coordinates untouched; the hydrogens after them.
        np.testing.assert_array_equal(
            record.conformers[0, :n_heavy],
            entry.mol.GetConformer().GetPositions().astype(np.float32),
        )
        np.testing.assert_array_equal(record.z, [a.GetAtomicNum() for a in full.GetAtoms()])
        assert Chem.MolToSmiles(reference) == record.smiles
        # Hydrogens sit at bonding distance from their heavy atom, not at the origin.
        src, dst = record.edge_index
        is_h_bond = (record.z[src] == 1) & (record.z[dst] > 1)
        lengths = np.linalg.norm(
            record.conformers[0, src[is_h_bond]] - record.conformers[0, dst[is_h_bond]], axis=1
        )
        assert lengths.size and np.all((lengths > 0.9) & (lengths < 1.2))


def _sdf_entry(tmp_path: Path, mol: Chem.Mol, name: str = "m") -> SourceEntry:
    mol = Chem.Mol(mol)
    mol.SetProp("_Name", name)
    return next(iter_source(write_sdf(tmp_path / f"{name}.sdf", [mol])))


def _with_coordinates(smiles: str) -> Chem.Mol:
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=1) == 0
    return mol


def test_3d_molecule_limits_are_typed_errors(tmp_path: Path) -> None:
    big = _sdf_entry(tmp_path, _with_coordinates("C" * 12), "dodecane")
    with pytest.raises(MoleculeError) as info:
        entry_to_record(big, 0, max_heavy_atoms=10)
    assert info.value.reason == "too_many_atoms"

    hydrogen = Chem.RWMol()
    for _ in range(2):
        hydrogen.AddAtom(Chem.Atom(1))
    hydrogen.AddBond(0, 1, Chem.BondType.SINGLE)
    conformer = Chem.Conformer(2)
    conformer.SetAtomPosition(1, (0.0, 0.0, 0.74))
    hydrogen.AddConformer(conformer)
    with pytest.raises(MoleculeError) as info:
        entry_to_record(_sdf_entry(tmp_path, hydrogen.GetMol(), "h2"), 0)
    assert info.value.reason == "no_heavy_atom"


def test_unsanitisable_structure_is_invalid_structure(tmp_path: Path) -> None:
    mol = Chem.RWMol(_with_coordinates("CC"))
    # Five bonds on carbon 0: a hydrogen of carbon 1 bonded to it as well.
    h_of_c1 = next(
        n.GetIdx() for n in mol.GetAtomWithIdx(1).GetNeighbors() if n.GetAtomicNum() == 1
    )
    mol.AddBond(0, h_of_c1, Chem.BondType.SINGLE)
    entry = _sdf_entry(tmp_path, mol.GetMol(), "pentavalent")
    assert entry.mol is not None
    with pytest.raises(MoleculeError) as info:
        entry_to_record(entry, 0)
    assert info.value.reason == "invalid_structure"
    assert "valence" in str(info.value).lower()


def test_read_failure_is_raised_as_is() -> None:
    failure = MoleculeError("a.smi:3: blank line", reason="empty_input")
    entry = SourceEntry("a.smi", 2, 3, "a.smi:2", failure=failure)
    with pytest.raises(MoleculeError) as info:
        entry_to_record(entry, 0)
    assert info.value is failure


def test_entries_survive_pickling_for_worker_processes(tmp_path: Path) -> None:
    # prepare hands entries to worker processes: molecules, coordinates and failures must
    # cross a pickle unchanged.
    mols = embedded_nci(10)[:3]
    write_sdf(tmp_path / "a.sdf", [Chem.RemoveHs(m) for m in mols])
    for cid, mol in enumerate(mols):
        write_json(tmp_path / f"{cid}.json", pubchemqc_document(mol, cid))
    (tmp_path / "b.smi").write_text("CCO x\n\n")
    entries = list(iter_source(tmp_path))
    assert [e.failure is None for e in entries] == [True] * 7 + [False]
    for mol_id, entry in enumerate(entries):
        copy = pickle.loads(pickle.dumps(entry))
        assert (copy.source, copy.index, copy.line, copy.source_id, copy.smiles) == (
            entry.source,
            entry.index,
            entry.line,
            entry.source_id,
            entry.smiles,
        )
        if entry.failure is not None:
            assert type(copy.failure) is type(entry.failure)
            assert copy.failure.reason == entry.failure.reason == "empty_input"
            continue
        original, restored = entry_to_record(entry, mol_id), entry_to_record(copy, mol_id)
        assert restored.smiles == original.smiles
        for key in ARRAYS:
            np.testing.assert_array_equal(getattr(restored, key), getattr(original, key))

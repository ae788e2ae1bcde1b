"""Helpers shared by the source tests: writing real molecules to files, cutting gzip streams."""

from __future__ import annotations

import functools
import gzip
import io
import json
from collections.abc import Iterable
from pathlib import Path

from rdkit import Chem
from rdkit.Chem import AllChem

from molssl.chem.rdkit_log import quiet_rdkit
from molssl.datamodules.sources.entry import SourceEntry
from tests.conftest import read_nci_smiles


def write_gzip(path: Path, text: str) -> Path:
    """Write ``text`` gzipped at ``path``."""
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(text)
    return path


def truncate_gzip(source: Path, target: Path, keep_fraction: float) -> Path:
    """Copy the first ``keep_fraction`` of ``source``'s compressed bytes to ``target``."""
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep_fraction)])
    return target


def reasons(entries: Iterable[SourceEntry]) -> list[str | None]:
    """Failure reason of each entry (None when it was read)."""
    return [entry.failure.reason if entry.failure is not None else None for entry in entries]


def assert_accounted(entries: list[SourceEntry]) -> None:
    """Every entry of one file is numbered 0..n-1 in order, lines strictly increasing."""
    assert [entry.index for entry in entries] == list(range(len(entries)))
    lines = [entry.line for entry in entries]
    assert lines == sorted(lines) and len(set(lines)) == len(lines)


@functools.lru_cache(maxsize=4)
def embedded_nci(n: int) -> tuple[Chem.Mol, ...]:
    """Up to ``n`` NCI molecules with explicit hydrogens and one ETKDG conformer (seeded).

    Molecules RDKit cannot embed, or whose elements MMFF94 does not know (the metal complexes
    of the set), are left out; the rest are real, diverse drug-like molecules.
    """
    out: list[Chem.Mol] = []
    params = AllChem.ETKDGv3()
    params.randomSeed = 0
    with quiet_rdkit():
        for i, smiles in enumerate(read_nci_smiles(n)):
            mol = Chem.MolFromSmiles(smiles)
            if mol is None or any(a.GetAtomicNum() in (29, 80) for a in mol.GetAtoms()):
                continue
            mol = Chem.AddHs(mol)
            if AllChem.EmbedMolecule(mol, params) != 0:
                continue
            mol.SetProp("_Name", f"NCI-{i}")
            out.append(mol)
    return tuple(out)


def write_sdf(path: Path, mols: Iterable[Chem.Mol], gz: bool = False) -> Path:
    """Write molecules (their first conformer, title from ``_Name``) to an SDF file."""
    buffer = io.StringIO()
    writer = Chem.SDWriter(buffer)
    for mol in mols:
        writer.write(mol)
    writer.close()
    if gz:
        return write_gzip(path, buffer.getvalue())
    path.write_text(buffer.getvalue())
    return path


def pubchemqc_document(mol: Chem.Mol, cid: int) -> dict:
    """A PubChemQC B3LYP@PM6 JSON document of ``mol`` (explicit H, one conformer), Kekulé orders."""
    kekule = Chem.Mol(mol)
    Chem.Kekulize(kekule, clearAromaticFlags=True)
    return {
        "pubchem": {
            "cid": cid,
            "charge": Chem.GetFormalCharge(kekule),
            "multiplicity": 1,
            "B3LYP@PM6": {
                "atoms": {
                    "elements": {"number": [a.GetAtomicNum() for a in kekule.GetAtoms()]},
                    "coords": {"3d": kekule.GetConformer().GetPositions().ravel().tolist()},
                },
                "bonds": {
                    "connections": {
                        "index": [
                            k
                            for b in kekule.GetBonds()
                            for k in (b.GetBeginAtomIdx() + 1, b.GetEndAtomIdx() + 1)
                        ]
                    },
                    "order": [int(b.GetBondTypeAsDouble()) for b in kekule.GetBonds()],
                },
                "properties": {"energy": {"alpha": {"homo": -0.2, "lumo": 0.0, "gap": 0.2}}},
            },
        }
    }


def write_json(path: Path, document: dict, gz: bool = False) -> Path:
    """Write one JSON document, gzipped when ``gz``."""
    text = json.dumps(document)
    if gz:
        return write_gzip(path, text)
    path.write_text(text)
    return path

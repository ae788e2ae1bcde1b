"""Small QM9 files in qm9pack's layout, from real molecules (RDKit's NCI set).

``write_qm9pack(directory, n)`` writes ``qm9_part1.csv`` … as the ``qm9pack`` package ships
them: the 25 columns in its order and quoting (``"['C','H']"``, ``"[[x,y,z],...]"`` with
numbers like ``0.``), ETKDG coordinates with explicit hydrogens, and the atoms of each row in
a shuffled order, so only a graph mapped atom by atom puts the SMILES's bonds on the right
coordinates. GDB indices are not contiguous (gaps, like the 3,054 uncharacterized ones) and a
row's labels are known functions of its index and atoms, so a test can check that labels
stayed with their molecule and were converted to the paper's units.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rdkit import Chem
from rdkit.Chem import AllChem

from tests.datamodules.qm9_files import qm9_smiles

__all__ = ["QM9PACK_HEADER", "QM9PackFiles", "qm9pack_labels", "qm9pack_row", "write_qm9pack"]

QM9PACK_HEADER = (
    "XYZ_file", "Index", "SMILES", "InChi", "N_atoms", "Stoichiometry", "Elements", "XYZ_Ang",
    "Mulliken_pop", "Harmonic_Freq_cmi", "RotA_GHz", "RotB_GHz", "RotC_GHz", "Dipole_debye",
    "Polarizability_bohr3", "HOMO_au", "LUMO_au", "HOMO_LUMO_gap_au", "R2_bohr2", "ZPVE_au",
    "InternalEnergy_0K_au", "InternalEnergy_298K_au", "Enthalphy_298K_au",
    "GibbsFreeEnergy_298K_au", "Heatcapacity_Cv_cal_mol_K",
)  # fmt: skip


def qm9pack_labels(k: int, z: list[int]) -> dict[str, float]:
    """The label columns of GDB index ``k`` with atoms ``z`` (energies in Hartree)."""
    heavy = sum(1 for a in z if a > 1)
    return {
        "Dipole_debye": 0.1 * k,
        "Polarizability_bohr3": 5.0 + 3.0 * heavy,
        "HOMO_au": -0.25 - 0.001 * k,
        "LUMO_au": 0.01 + 0.001 * k,
        "HOMO_LUMO_gap_au": 0.26 + 0.002 * k,
        "R2_bohr2": 100.0 + 10.0 * k,
        "ZPVE_au": 0.01 * len(z),
        "InternalEnergy_0K_au": -40.0 * heavy - 0.5 * (len(z) - heavy) - 1e-4 * k,
        "InternalEnergy_298K_au": -40.0 * heavy + 0.001,
        "Enthalphy_298K_au": -40.0 * heavy + 0.002,
        "GibbsFreeEnergy_298K_au": -40.0 * heavy - 0.003,
        "Heatcapacity_Cv_cal_mol_K": 6.0 + 0.5 * len(z),
    }


def _number(value: float) -> str:
    # qm9pack writes "0." for zero and trims trailing zeros; keep both habits.
    return f"{value:.10f}".rstrip("0")


def qm9pack_row(k: int, smiles: str, mol: Chem.Mol, order: list[int]) -> list[object]:
    """One row: the molecule's atoms written in ``order`` (a permutation of its atoms)."""
    positions = mol.GetConformer().GetPositions()
    atoms = [mol.GetAtomWithIdx(i) for i in order]
    elements = "[" + ",".join(f"'{atom.GetSymbol()}'" for atom in atoms) + "]"
    xyz = (
        "[" + ",".join("[" + ",".join(_number(c) for c in positions[i]) + "]" for i in order) + "]"
    )
    z = [atom.GetAtomicNum() for atom in atoms]
    labels = qm9pack_labels(k, z)
    return [
        f"dsgdb9nsd_{k:06d}.xyz", k, smiles, "InChI=1S/x", len(z), "[1,2,0,0,0]", elements, xyz,
        "[" + ",".join("0.1" for _ in z) + "]", "[100.5,200.25]", 1.5, 1.25, 1.0,
        *labels.values(),
    ]  # fmt: skip


@dataclass
class QM9PackFiles:
    """What was written, for the tests to compare against.

    Attributes:
        root: The folder.
        files: The CSVs, in reading order.
        smiles: GDB index -> SMILES written.
        elements: GDB index -> atomic numbers in the written (shuffled) order.
        positions: GDB index -> ``(N, 3)`` coordinates in the written order.
    """

    root: Path
    files: list[Path]
    smiles: dict[int, str] = field(default_factory=dict)
    elements: dict[int, list[int]] = field(default_factory=dict)
    positions: dict[int, np.ndarray] = field(default_factory=dict)


def write_qm9pack(
    directory: str | Path, n: int = 18, parts: int = 3, seed: int = 0
) -> QM9PackFiles:
    """Write ``n`` molecules over ``parts`` files ``qm9_part<i>.csv`` in ``directory``.

    GDB indices are ``1, 2, 4, 5, 7, ...`` (every third index left out).
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = QM9PackFiles(root, [root / f"qm9_part{i + 1}.csv" for i in range(parts)])
    indices = [k for k in range(1, 3 * n) if k % 3 != 0][:n]
    chunks = np.array_split(np.arange(n), parts)
    all_smiles = qm9_smiles(n)
    for path, chunk in zip(written.files, chunks, strict=True):
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle, quoting=csv.QUOTE_NONNUMERIC)
            writer.writerow(QM9PACK_HEADER)
            for i in chunk:
                k = indices[int(i)]
                smiles = all_smiles[int(i)]
                mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
                params = AllChem.ETKDGv3()
                params.randomSeed = seed + k
                if AllChem.EmbedMolecule(mol, params) != 0:
                    raise RuntimeError(f"ETKDG failed on {smiles!r}")
                order = [int(j) for j in rng.permutation(mol.GetNumAtoms())]
                writer.writerow(qm9pack_row(k, smiles, mol, order))
                written.smiles[k] = smiles
                written.elements[k] = [mol.GetAtomWithIdx(j).GetAtomicNum() for j in order]
                written.positions[k] = mol.GetConformer().GetPositions()[order]
    return written

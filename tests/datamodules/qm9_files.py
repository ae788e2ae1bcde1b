"""Small QM9 raw files in the true layout, from real molecules (RDKit's NCI set).

``write_qm9_raw(directory, n)`` writes ``gdb9.sdf`` (ETKDG coordinates, explicit hydrogens,
titles ``gdb_1`` … ``gdb_n`` as in the real file), ``gdb9.sdf.csv`` (the 20 DeepChem columns,
rows shuffled so that only a join by ``mol_id`` gets them right) and ``uncharacterized.txt``
(free-text header, ``=====`` rules, one row per excluded index). One molecule can be the
glycine zwitterion written without its charges, the way gdb9.sdf stores such species, so
RDKit's strict sanitisation fails on it. Labels are known functions of the molecule, so a
test can check the units conversion and the alignment; ``u0`` and friends are exact sums of
per-element references (:data:`REFERENCE_HA`) plus a small per-molecule term.

Other test modules (configs, fine-tuning) reuse this writer.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rdkit import Chem
from rdkit.Chem import AllChem

from tests.conftest import read_nci_smiles

__all__ = ["CSV_COLUMNS", "REFERENCE_HA", "QM9RawFiles", "qm9_smiles", "write_qm9_raw"]

CSV_COLUMNS = (
    "mol_id", "A", "B", "C", "mu", "alpha", "homo", "lumo", "gap", "r2", "zpve",
    "u0", "u298", "h298", "g298", "cv", "u0_atom", "u298_atom", "h298_atom", "g298_atom",
)  # fmt: skip
#: Per-element energies (Ha) from which the test labels u0/u298/h298/g298 are built.
REFERENCE_HA = {1: -0.5, 6: -37.8, 7: -54.6, 8: -75.1, 9: -99.7}
GLYCINE_ZWITTERION = "[NH3+]CC([O-])=O"
_ALLOWED = frozenset(REFERENCE_HA)
_MAX_HEAVY = 10


def qm9_smiles(n: int) -> list[str]:
    """``n`` small NCI molecules made of H, C, N, O, F only (up to 10 heavy atoms)."""
    out: list[str] = []
    for smiles in read_nci_smiles(5000):
        mol = Chem.MolFromSmiles(smiles)
        if mol is None or mol.GetNumAtoms() > _MAX_HEAVY or "." in smiles:
            continue
        if all(atom.GetAtomicNum() in _ALLOWED for atom in mol.GetAtoms()):
            out.append(Chem.MolToSmiles(mol))
        if len(out) == n:
            return out
    raise ValueError(f"only {len(out)} suitable NCI molecules, {n} asked for")


@dataclass
class QM9RawFiles:
    """Paths of the written files and the truth a test compares against.

    Attributes:
        root: Directory holding the three files.
        smiles: Canonical SMILES of molecule ``gdb_{k}`` at ``smiles[k - 1]``.
        labels: ``gdb_k`` → ``{csv column: value}`` as written (Hartree etc.).
        atoms: ``gdb_k`` → atomic numbers in file order.
        positions: ``gdb_k`` → ``(N, 3)`` coordinates written.
        uncharacterized: The 1-based indices listed as uncharacterized.
        unsanitizable: Index ``k`` of the charge-less zwitterion, or ``None``.
    """

    root: Path
    smiles: list[str]
    labels: dict[str, dict[str, float]] = field(default_factory=dict)
    atoms: dict[str, list[int]] = field(default_factory=dict)
    positions: dict[str, np.ndarray] = field(default_factory=dict)
    uncharacterized: tuple[int, ...] = ()
    unsanitizable: int | None = None

    @property
    def sdf(self) -> Path:
        return self.root / "gdb9.sdf"

    @property
    def csv(self) -> Path:
        return self.root / "gdb9.sdf.csv"

    @property
    def uncharacterized_txt(self) -> Path:
        return self.root / "uncharacterized.txt"


def _embedded(smiles: str, seed: int) -> Chem.Mol:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise RuntimeError(f"ETKDG failed on {smiles!r}")
    return mol


def _without_charges(mol: Chem.Mol) -> str:
    # gdb9.sdf stores zwitterions with neutral atoms: drop the charge lines and atom fields.
    block = Chem.MolToMolBlock(mol)
    lines = [line for line in block.splitlines() if not line.startswith("M  CHG")]
    counts = lines[3]
    num_atoms = int(counts[:3])
    for i in range(4, 4 + num_atoms):
        lines[i] = lines[i][:36] + "  0" + lines[i][39:]
    return "\n".join(lines) + "\n"


def _labels(k: int, z: list[int], rng: np.random.Generator) -> dict[str, float]:
    reference = float(sum(REFERENCE_HA[a] for a in z))
    heavy = sum(1 for a in z if a > 1)
    u0 = reference + float(rng.normal(0.0, 0.01))
    return {
        "A": 10.0 + k,
        "B": 2.0 + 0.1 * k,
        "C": 1.0 + 0.05 * k,
        "mu": 0.1 * k,
        "alpha": 5.0 + 3.0 * heavy,
        "homo": -0.25 - 0.001 * k,
        "lumo": 0.01 + 0.001 * k,
        "gap": 0.26 + 0.002 * k,
        "r2": 100.0 + 10.0 * k,
        "zpve": 0.01 * len(z),
        "u0": u0,
        "u298": u0 + 0.001,
        "h298": u0 + 0.002,
        "g298": u0 - 0.003,
        "cv": 6.0 + 0.5 * len(z),
        "u0_atom": -0.1 * heavy,
        "u298_atom": -0.1 * heavy,
        "h298_atom": -0.1 * heavy,
        "g298_atom": -0.1 * heavy,
    }


def _write_uncharacterized(path: Path, indices: tuple[int, ...], smiles: list[str]) -> None:
    rule = "=" * 150
    with open(path, "w") as handle:
        handle.write("\n\n\n\nList of molecules among the 133885 GDB9 molecules for which the ")
        handle.write("Corina generated Cartesian coordinates and the B3LYP/6-31G(2df,p)\n")
        handle.write("equilibrium geometry lead to different SMILES and InChI strings.\n\n")
        handle.write(f"{rule}\n#   Index        GDB17 SMILES        SMILES for B3LYP XYZ")
        handle.write(f"        SMILES for Corina generated XYZ        D_IJ\n{rule}\n")
        for index in indices:
            text = smiles[index - 1]
            handle.write(f"{index:8d}{text:>40s}{text:>40s}{text:>40s}{1.234567:16.6f}\n")
        handle.write(f"{rule}\n")


def write_qm9_raw(
    directory: str | Path,
    n: int = 24,
    uncharacterized: tuple[int, ...] = (3,),
    unsanitizable: int | None = 5,
    seed: int = 0,
) -> QM9RawFiles:
    """Write ``n`` molecules as QM9 raw files into ``directory`` (created if needed).

    Args:
        n: Molecules in ``gdb9.sdf`` (titles ``gdb_1`` … ``gdb_n``).
        uncharacterized: 1-based indices listed in ``uncharacterized.txt``.
        unsanitizable: Index ``k`` whose molecule is the charge-less glycine zwitterion
            (``None``: none).
        seed: Seed of the ETKDG embedding and of the label noise.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    smiles = qm9_smiles(n)
    if unsanitizable is not None:
        smiles[unsanitizable - 1] = GLYCINE_ZWITTERION
    files = QM9RawFiles(root, smiles, uncharacterized=tuple(uncharacterized))
    files.unsanitizable = unsanitizable
    rng = np.random.default_rng(seed)
    rows: list[list[object]] = []
    with open(files.sdf, "w") as handle:
        for k, text in enumerate(smiles, start=1):
            mol = _embedded(text, seed + k)
            name = f"gdb_{k}"
            mol.SetProp("_Name", name)
            block = _without_charges(mol) if k == unsanitizable else Chem.MolToMolBlock(mol)
            handle.write(block + "$$$$\n")
            z = [atom.GetAtomicNum() for atom in mol.GetAtoms()]
            files.atoms[name] = z
            files.positions[name] = mol.GetConformer().GetPositions()
            files.labels[name] = _labels(k, z, rng)
            rows.append([name, *(files.labels[name][c] for c in CSV_COLUMNS[1:])])
    order = rng.permutation(len(rows))
    with open(files.csv, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows[i] for i in order)
    _write_uncharacterized(files.uncharacterized_txt, files.uncharacterized, smiles)
    return files

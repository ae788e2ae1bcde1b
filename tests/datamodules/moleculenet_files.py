"""Small MoleculeNet CSVs in the standard files' true layouts, for tests.

Molecules are RDKit's bundled NCI molecules; labels are computed from them (Crippen logP
for regression, alternating 0/1 patterns per task for classification), so a test can
recompute the label of any molecule. Each file has the real header order of its standard
file (see :mod:`molssl.datamodules.moleculenet_presets`), the extra columns included, and
quoted fields where the real ones have commas (FreeSolv names, SIDER headers). ToxCast
keeps three of its 617 assay columns.

Usage (other tests reuse it)::

    written = write_moleculenet_csv(tmp_path / "SAMPL.csv", "freesolv", n=40)
    MoleculeNetDataModule(str(written.path), preset="freesolv", ...)
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rdkit import Chem
from rdkit.Chem import Crippen

from molssl.datamodules.moleculenet_presets import MUV_TASKS, SIDER_TASKS, TOX21_TASKS
from tests.conftest import read_nci_smiles

__all__ = [
    "STANDARD_HEADERS",
    "TASK_COLUMNS",
    "WrittenCsv",
    "canonical",
    "write_moleculenet_csv",
]

_TOXCAST_ASSAYS = (
    "ACEA_T47D_80hr_Negative",
    "APR_HepG2_CellCycleArrest_24h_dn",
    "TOX21_AR_BLA_Agonist_ratio",
)

#: Label columns of each preset, in task order.
TASK_COLUMNS: dict[str, tuple[str, ...]] = {
    "bbbp": ("p_np",),
    "tox21": TOX21_TASKS,
    "toxcast": _TOXCAST_ASSAYS,
    "sider": SIDER_TASKS,
    "clintox": ("FDA_APPROVED", "CT_TOX"),
    "hiv": ("HIV_active",),
    "muv": MUV_TASKS,
    "bace": ("Class",),
    "bace_regression": ("pIC50",),
    "esol": ("measured log solubility in mols per litre",),
    "freesolv": ("expt",),
    "lipophilicity": ("exp",),
}

_BACE = ("mol", "CID", "Class", "Model", "pIC50", "MW")
#: Header of each standard file, in its true column order.
STANDARD_HEADERS: dict[str, tuple[str, ...]] = {
    "bbbp": ("num", "name", "p_np", "smiles"),
    "tox21": (*TOX21_TASKS, "mol_id", "smiles"),
    "toxcast": ("smiles", *_TOXCAST_ASSAYS),
    "sider": ("smiles", *SIDER_TASKS),
    "clintox": ("smiles", "FDA_APPROVED", "CT_TOX"),
    "hiv": ("smiles", "activity", "HIV_active"),
    "muv": (*MUV_TASKS, "mol_id", "smiles"),
    "bace": _BACE,
    "bace_regression": _BACE,
    "esol": (
        "Compound ID",
        "ESOL predicted log solubility in mols per litre",
        "Minimum Degree",
        "Molecular Weight",
        "Number of H-Bond Donors",
        "Number of Rings",
        "Number of Rotatable Bonds",
        "Polar Surface Area",
        "measured log solubility in mols per litre",
        "smiles",
    ),
    "freesolv": ("iupac", "smiles", "expt", "calc"),
    "lipophilicity": ("CMPD_CHEMBLID", "exp", "smiles"),
}

_REGRESSION = {"bace_regression", "esol", "freesolv", "lipophilicity"}


@dataclass
class WrittenCsv:
    """What was written.

    Attributes:
        path: The file.
        preset: Preset name.
        smiles: SMILES cell of every entry (``""`` for a blank line).
        labels: ``(entries, T)`` labels as written, NaN for a blank cell or a blank line.
        lines: 1-based file line of every entry.
        invalid: Entries whose SMILES was replaced by an invalid one.
        blank: Entries written as blank lines.
    """

    path: Path
    preset: str
    smiles: list[str]
    labels: np.ndarray
    lines: list[int]
    invalid: list[int] = field(default_factory=list)
    blank: list[int] = field(default_factory=list)

    @property
    def task_names(self) -> list[str]:
        """Label columns in task order."""
        return list(TASK_COLUMNS[self.preset])


def canonical(smiles: str) -> str:
    """RDKit canonical SMILES (what the data module's ``Data.smiles`` holds)."""
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"not a valid SMILES: {smiles!r}")
    return Chem.MolToSmiles(mol)


def _label(preset: str, smiles: str, entry: int, task: int) -> float:
    if preset in _REGRESSION:
        return round(Crippen.MolLogP(Chem.MolFromSmiles(smiles)) + 0.1 * task, 3)
    # Alternating patterns shifted per task: every task has both classes in any split.
    return float((entry + task) % 3 == 0)


def _cell(value: float) -> str:
    if math.isnan(value):
        return ""
    return f"{int(value)}" if value in (0.0, 1.0) else f"{value:.3f}"


def _extra(column: str, entry: int, smiles: str) -> str:
    fillers = {
        "num": str(entry + 1),
        "name": f"NCI-{entry}",
        "mol_id": f"TOX{3000 + entry}",
        "CID": f"BACE_{entry + 1}",
        "Model": "Train",
        "MW": "300.1",
        "activity": "CI",
        "iupac": f"compound {entry}, NCI sample",  # a comma, as real FreeSolv names have
        "calc": "-1.5",
        "CMPD_CHEMBLID": f"CHEMBL{100000 + entry}",
        "Compound ID": f"NCI {entry}",
    }
    return fillers.get(column, "1.0")


def write_moleculenet_csv(
    path: str | Path,
    preset: str,
    n: int = 40,
    invalid: Mapping[int, str] | None = None,
    blank: Sequence[int] = (),
    missing_every: int = 0,
    first: int = 0,
) -> WrittenCsv:
    """Write ``n`` entries of ``preset``'s standard layout (gzipped if the name ends .gz).

    Args:
        path: Output file.
        preset: A key of :data:`STANDARD_HEADERS`.
        n: Entries (data rows), blank lines included.
        invalid: ``{entry: text}``: entries (0-based) whose SMILES cell gets ``text``
            (their labels are written all the same).
        blank: Entries written as empty lines.
        missing_every: Leave every k-th label cell blank (shifted per task); 0: none.
        first: Skip this many NCI molecules first (for distinct files).
    """
    invalid = dict(invalid or {})
    molecules = iter(read_nci_smiles(first + n + 10)[first:])
    header = STANDARD_HEADERS[preset]
    tasks = TASK_COLUMNS[preset]
    smiles_column = "mol" if preset.startswith("bace") else "smiles"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    smiles_cells: list[str] = []
    labels = np.full((n, len(tasks)), np.nan)
    for entry in range(n):
        if entry in blank:
            buffer.write("\n")
            smiles_cells.append("")
            continue
        molecule = next(molecules)
        for t in range(len(tasks)):
            if not (missing_every and (entry + t) % missing_every == 0):
                labels[entry, t] = _label(preset, molecule, entry, t)
        text = invalid.get(entry, molecule)
        smiles_cells.append(text)
        row = []
        for column in header:
            if column == smiles_column:
                row.append(text)
            elif column in tasks:
                row.append(_cell(labels[entry, tasks.index(column)]))
            else:
                row.append(_extra(column, entry, molecule))
        writer.writerow(row)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix == ".gz":
        with gzip.open(target, "wt", encoding="utf-8", newline="") as handle:
            handle.write(buffer.getvalue())
    else:
        target.write_text(buffer.getvalue(), encoding="utf-8")
    return WrittenCsv(
        path=target,
        preset=preset,
        smiles=smiles_cells,
        labels=labels,
        lines=[entry + 2 for entry in range(n)],
        invalid=sorted(invalid),
        blank=sorted(blank),
    )

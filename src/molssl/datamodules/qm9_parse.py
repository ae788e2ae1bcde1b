"""QM9 molecules: SDF block → RDKit molecule → feature arrays, and the whole-file parse.

Sanitisation policy. A few hundred gdb9.sdf molecules do not pass RDKit's sanitisation:
the file stores zwitterions and similar species without their formal charges, so a nitrogen
with four bonds fails the valence check. They are real molecules with DFT geometries and
labels, and the paper's split (110,000 / 10,000 / 10,831) counts all 130,831 characterized
molecules, so by default (``on_sanitize_error="relax"``) they are KEPT: sanitised again
without the valence check (rings, aromaticity, conjugation and hybridisation still
computed) and reported in ``relaxed`` with the reason. ``on_sanitize_error="drop"`` drops
them instead, each recorded as a failure ``sanitization_failed``.

Hydrogens: gdb9.sdf lists every hydrogen as an atom, so no atom gets implicit hydrogens (an
oxygen of an uncharged carboxylate stays an oxygen with one bond): the molecular graph is
exactly the atoms whose coordinates and labels the file gives.

Label join. Labels join the SDF by the ``gdb_k`` name, in both directions accounted for:

* an SDF molecule without a row in the label CSV is a recorded failure ``missing_label`` (it
  was read, so it must be counted: ``ok + failed == read``; with no target it can neither be
  trained on nor evaluated, and a NaN row would hide a damaged or mismatched label file);
* a label row whose molecule is not in the SDF is no SDF entry, so it is not a failure (it is
  not part of ``read``); it is counted in :attr:`QM9Parsed.label_rows_without_molecule`
  with the first few ids and CSV lines, and reported by the data module.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rdkit import Chem

from molssl.chem.features import mol_to_data
from molssl.chem.rdkit_log import quiet_rdkit
from molssl.datamodules.embedded import Failure
from molssl.datamodules.qm9_raw import (
    QM9_TARGETS,
    QM9FormatError,
    QM9Labels,
    SDFBlock,
    gdb_index,
    iter_sdf_blocks,
    read_qm9_labels,
    read_uncharacterized,
)
from molssl.datamodules.workers import WorkerPool
from molssl.errors import UserError

__all__ = [
    "EXAMPLES_KEPT",
    "SANITIZE_POLICIES",
    "ParsedMolecule",
    "QM9Parsed",
    "pack_molecules",
    "parse_qm9",
    "parse_qm9_block",
]

SANITIZE_POLICIES = ("relax", "drop")
_RELAXED_SANITIZE = Chem.SanitizeFlags.SANITIZE_ALL ^ Chem.SanitizeFlags.SANITIZE_PROPERTIES
#: How many example ids of an unmatched label row / unlabelled molecule are kept for reports.
EXAMPLES_KEPT = 5


@dataclass
class ParsedMolecule:
    """One molecule's arrays (hydrogens explicit, atoms in file order).

    Attributes:
        z: ``(N,)`` atomic numbers.
        x: ``(N, 7)`` categorical atom features (:mod:`molssl.chem.features`).
        pos: ``(N, 3)`` float32 coordinates in Å, as in the file.
        edge_index: ``(2, E)`` both directions of every bond.
        edge_attr: ``(E, 4)`` categorical bond features.
        smiles: Canonical heavy-atom SMILES.
        relaxed: ``""`` when strictly sanitised, else why the strict pass failed
            (``valence``, ``kekulize``, ``sanitization``).
        message: RDKit's explanation of the strict failure (``""`` if none).
    """

    z: np.ndarray
    x: np.ndarray
    pos: np.ndarray
    edge_index: np.ndarray
    edge_attr: np.ndarray
    smiles: str
    relaxed: str = ""
    message: str = ""


def _sanitize_reason(error: Exception) -> str:
    if isinstance(error, Chem.AtomValenceException):
        return "valence"
    if isinstance(error, (Chem.KekulizeException, Chem.AtomKekulizeException)):
        return "kekulize"
    return "sanitization"


def parse_qm9_block(text: str, on_sanitize_error: str = "relax") -> ParsedMolecule | Failure:
    """Parse one SDF block (a molfile with 3D coordinates and explicit hydrogens).

    Returns:
        The molecule's arrays, or a :class:`Failure` (``mol_id``/``line`` left at -1 for
        the caller to fill) with reason ``invalid_record``, ``empty_input``,
        ``no_conformer``, ``invalid_coordinates`` or ``sanitization_failed``.
    """
    if on_sanitize_error not in SANITIZE_POLICIES:
        raise UserError(f"on_sanitize_error must be one of {SANITIZE_POLICIES}")

    def failure(reason: str, message: str) -> Failure:
        return Failure(mol_id=-1, line=-1, smiles="", reason=reason, message=message)

    with quiet_rdkit() as log:
        mol = Chem.MolFromMolBlock(text, sanitize=False, removeHs=False)
        if mol is None:
            return failure("invalid_record", log.summary() or "RDKit cannot read the molfile")
        if mol.GetNumAtoms() == 0:
            return failure("empty_input", "the molfile has no atom")
        if mol.GetNumConformers() == 0:
            return failure("no_conformer", "the molfile has no coordinates")
        positions = np.asarray(mol.GetConformer().GetPositions(), dtype=np.float64)
        if not np.isfinite(positions).all():
            return failure("invalid_coordinates", "non-finite coordinates")
        for atom in mol.GetAtoms():
            atom.SetNoImplicit(True)
        relaxed, message = "", ""
        strict = Chem.Mol(mol)
        try:
            Chem.SanitizeMol(strict)
            mol = strict
        except (ValueError, RuntimeError) as error:
            relaxed, message = _sanitize_reason(error), str(error).strip()
            if on_sanitize_error == "drop":
                return failure("sanitization_failed", f"{relaxed}: {message}")
            flags = Chem.SanitizeMol(mol, _RELAXED_SANITIZE, catchErrors=True)
            if flags != Chem.SanitizeFlags.SANITIZE_NONE:
                return failure(
                    "sanitization_failed",
                    f"{relaxed}: {message}; relaxed sanitisation failed too at {flags}",
                )
            mol.UpdatePropertyCache(strict=False)
        data = mol_to_data(mol)
    return ParsedMolecule(
        z=data.z.numpy(),
        x=data.x.numpy(),
        pos=positions.astype(np.float32),
        edge_index=data.edge_index.numpy(),
        edge_attr=data.edge_attr.numpy(),
        smiles=data.smiles,
        relaxed=relaxed,
        message=message,
    )


def _parse_task(task: tuple[str, str]) -> ParsedMolecule | Failure:
    return parse_qm9_block(*task)


@dataclass
class QM9Parsed:
    """Every usable QM9 molecule as packed arrays, plus what was dropped and relaxed.

    Attributes:
        arrays: ``z`` (uint8), ``x`` (uint8), ``pos`` (float32), ``edge_index`` (int32,
            local atom indices), ``edge_attr`` (uint8), offsets ``atom_ptr`` / ``edge_ptr``
            (int64, ``M + 1``), ``mol_id`` (int64: ``k - 1`` for title ``gdb_k``, the 0-based
            index in the full gdb9.sdf), ``y`` ``(M, 12)`` float64 in the paper's units,
            ``smiles`` and ``relaxed`` (unicode).
        failures: Entries dropped (``ok + failed == read``), uncharacterized ones included.
        relaxed: Entries kept with relaxed sanitisation (reason ``relaxed_<why>``).
        read: SDF blocks read.
        label_rows_without_molecule: Label CSV rows whose ``mol_id`` names no SDF molecule
            (not failures: they are no SDF entry; see the module docstring).
        label_rows_without_molecule_examples: The first :data:`EXAMPLES_KEPT` of them, in
            CSV order, as ``{"id": "gdb_k", "line": CSV line}``.
    """

    arrays: dict[str, np.ndarray]
    failures: list[Failure] = field(default_factory=list)
    relaxed: list[Failure] = field(default_factory=list)
    read: int = 0
    label_rows_without_molecule: int = 0
    label_rows_without_molecule_examples: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.arrays["mol_id"])


_UINT8_MAX = 255


def pack_molecules(
    molecules: Iterable[tuple[int, ParsedMolecule, np.ndarray]],
) -> dict[str, np.ndarray]:
    """Concatenate ``(mol_id, molecule, y)`` triples into the arrays of :class:`QM9Parsed`."""
    items = list(molecules)
    for key in ("x", "edge_attr"):
        if any(m.__dict__[key].size and m.__dict__[key].max() > _UINT8_MAX for _, m, _ in items):
            raise ValueError(f"{key} has a category above {_UINT8_MAX}; it cannot be packed")

    def cat(key: str, axis: int, empty: tuple[int, ...], dtype: type) -> np.ndarray:
        parts = [np.asarray(getattr(m, key), dtype=dtype) for _, m, _ in items]
        return np.concatenate(parts, axis=axis) if parts else np.zeros(empty, dtype=dtype)

    atom_counts = [len(m.z) for _, m, _ in items]
    edge_counts = [m.edge_index.shape[1] for _, m, _ in items]
    return {
        "z": cat("z", 0, (0,), np.uint8),
        "x": cat("x", 0, (0, 7), np.uint8),
        "pos": cat("pos", 0, (0, 3), np.float32),
        "edge_index": cat("edge_index", 1, (2, 0), np.int32),
        "edge_attr": cat("edge_attr", 0, (0, 4), np.uint8),
        "atom_ptr": np.concatenate([[0], np.cumsum(atom_counts, dtype=np.int64)]),
        "edge_ptr": np.concatenate([[0], np.cumsum(edge_counts, dtype=np.int64)]),
        "mol_id": np.asarray([mol_id for mol_id, _, _ in items], dtype=np.int64),
        "y": np.asarray([y for _, _, y in items], dtype=np.float64).reshape(-1, len(QM9_TARGETS)),
        "smiles": np.asarray([m.smiles for _, m, _ in items], dtype=str),
        "relaxed": np.asarray([m.relaxed for _, m, _ in items], dtype=str),
    }


def _parse_all(tasks: list[tuple[str, str]], workers: int) -> Iterator[ParsedMolecule | Failure]:
    if workers <= 1 or len(tasks) < 2:
        yield from map(_parse_task, tasks)
        return
    pool = WorkerPool(min(workers, len(tasks)))
    finished = False
    try:
        # In file order, so the output does not depend on the number of workers.
        yield from pool.map(
            _parse_task, tasks, lambda i: f"the QM9 molecule {tasks[i][0].split(chr(10))[0]!r}", 256
        )
        finished = True
    finally:
        pool.close(finished=finished)


def _examples(names: Iterable[str], count: int = 3) -> str:
    shown = list(itertools.islice(names, count))
    return ", ".join(repr(name) for name in shown) + ", ..."


def parse_qm9(
    sdf: str | os.PathLike[str],
    labels: str | os.PathLike[str] | QM9Labels,
    uncharacterized: str | os.PathLike[str] | None,
    on_sanitize_error: str = "relax",
    workers: int = 1,
) -> QM9Parsed:
    """Parse gdb9.sdf, join the labels by ``gdb_k`` name, drop the uncharacterized molecules.

    Args:
        sdf: Path of ``gdb9.sdf`` (or a subset in the same format).
        labels: Path of ``gdb9.sdf.csv``, or its already-read table.
        uncharacterized: Path of ``uncharacterized.txt``; ``None`` keeps every molecule.
        on_sanitize_error: ``"relax"`` or ``"drop"`` (see the module docstring).
        workers: Processes for the RDKit part (1: in this process).

    Returns:
        The packed molecules, in file order. Per-block failure reasons: ``truncated_record``,
        ``missing_terminator``,
        ``invalid_title`` (not ``gdb_k``), ``duplicate_id``, ``uncharacterized``,
        ``missing_label``, and those of :func:`parse_qm9_block`. Label rows without an SDF
        molecule are counted apart (:attr:`QM9Parsed.label_rows_without_molecule`).

    Raises:
        QM9FormatError: A missing file, an unreadable label / uncharacterized file, or
            ``names_do_not_match`` when no SDF title names a row of the label file.
    """
    if on_sanitize_error not in SANITIZE_POLICIES:
        raise UserError(
            f"on_sanitize_error must be one of {SANITIZE_POLICIES}, got {on_sanitize_error!r}"
        )
    table = labels if isinstance(labels, QM9Labels) else read_qm9_labels(labels)
    excluded = frozenset() if uncharacterized is None else read_uncharacterized(uncharacterized)
    failures: list[Failure] = []
    pending: list[tuple[SDFBlock, int, str]] = []
    seen: dict[int, int] = {}
    titles: dict[str, None] = {}  # in file order, for examples in messages
    read = 0
    for block in iter_sdf_blocks(Path(sdf)):
        read += 1
        title = block.title
        titles[title] = None
        k = gdb_index(title)
        mol_id = block.index if k is None else k - 1

        def drop(reason: str, message: str, block: SDFBlock = block, mol_id: int = mol_id) -> None:
            failures.append(Failure(mol_id, block.line, "", reason, message))

        if block.next_line is not None:
            drop(
                "missing_terminator",
                f"{title!r}: no $$$$ line between this molecule and the next, at line "
                f"{block.next_line}",
            )
        elif not block.terminated:
            drop("truncated_record", f"{title!r}: the file ends inside this molecule (no $$$$)")
        elif k is None:
            drop("invalid_title", f"title {title[:40]!r} is not gdb_<index>; labels join by it")
        elif k in seen:
            drop("duplicate_id", f"{title} already at line {seen[k]}")
        elif k in excluded:
            seen[k] = block.line
            drop("uncharacterized", f"{title} is listed in uncharacterized.txt")
        elif title not in table.rows:
            seen[k] = block.line
            drop("missing_label", f"{title} has no row in the label file")
        else:
            seen[k] = block.line
            pending.append((block, mol_id, title))
    if table.rows and titles and not any(title in table.rows for title in titles):
        # Not one molecule found its labels: the files do not belong together (or the label
        # file names its rows otherwise), which must not pass for every molecule failing.
        raise QM9FormatError(
            f"{sdf}: none of the {read} molecule titles ({_examples(titles)}) names a row of "
            f"the label file (its mol_id column holds {_examples(table.rows)}); labels are "
            "joined by this name (gdb_<k>), so the two files must use the same names",
            reason="names_do_not_match",
        )
    kept: list[tuple[int, ParsedMolecule, np.ndarray]] = []
    relaxed: list[Failure] = []
    tasks = [(block.text, on_sanitize_error) for block, _, _ in pending]
    for (block, mol_id, title), result in zip(pending, _parse_all(tasks, workers), strict=True):
        if isinstance(result, Failure):
            failures.append(
                Failure(mol_id, block.line, "", result.reason, f"{title}: {result.message}")
            )
            continue
        if result.relaxed:
            relaxed.append(
                Failure(
                    mol_id,
                    block.line,
                    result.smiles,
                    f"relaxed_{result.relaxed}",
                    f"{title}: {result.message}",
                )
            )
        kept.append((mol_id, result, table.values[table.rows[title]]))
    failures.sort(key=lambda f: f.line)
    # A row whose molecule is in the SDF but failed or was excluded is not "without molecule".
    unmatched = sorted(
        (int(table.lines[row]), name) for name, row in table.rows.items() if name not in titles
    )
    return QM9Parsed(
        pack_molecules(kept),
        failures,
        relaxed,
        read,
        label_rows_without_molecule=len(unmatched),
        label_rows_without_molecule_examples=[
            {"id": name, "line": line} for line, name in unmatched[:EXAMPLES_KEPT]
        ],
    )

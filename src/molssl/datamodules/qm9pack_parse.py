"""QM9 in the qm9pack layout → the arrays of :class:`~molssl.datamodules.qm9_parse.QM9Parsed`.

The layout is described in :mod:`molssl.datamodules.sources.qm9pack`: one CSV row per
molecule carries its DFT coordinates, its SMILES and its labels, so labels can only travel
with their own molecule. Rows are identified by their GDB index ``k`` (``mol_id = k - 1``, as
for ``gdb_k`` in the raw layout). Per-row failures (``ok + failed == read``):

* ``invalid_record``: a field missing, unparsable or inconsistent (``Index`` against
  ``XYZ_file``, ``N_atoms`` against the lists);
* ``duplicate_id``: a GDB index already seen (in this file or an earlier one);
* ``invalid_label``: a target that is not a finite number;
* ``invalid_smiles``, ``composition_mismatch``, ``connectivity_mismatch``: the SMILES graph
  cannot be placed on the coordinates (see :func:`~molssl.datamodules.sources.qm9pack.
  mol_from_smiles_and_xyz`).

qm9pack leaves the 3,054 uncharacterized molecules out already, so there is nothing to
exclude; ``label_rows_without_molecule`` is always 0 (a label row *is* a molecule).
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from molssl.chem.errors import MoleculeError
from molssl.chem.features import mol_to_data
from molssl.datamodules.embedded import Failure
from molssl.datamodules.qm9_parse import ParsedMolecule, QM9Parsed, pack_molecules
from molssl.datamodules.qm9_raw import HARTREE_TO_MEV, QM9_TARGET_UNITS, QM9_TARGETS
from molssl.datamodules.sources.qm9pack import (
    QM9PACK_TARGET_COLUMNS,
    QM9PackRow,
    gdb_index_of,
    iter_qm9pack_rows,
    row_molecule,
)

__all__ = ["parse_qm9pack", "parse_qm9pack_row", "row_labels"]
# Energies are in Hartree in the file and served in meV, as in the raw layout.
_SCALE = np.array(
    [HARTREE_TO_MEV if QM9_TARGET_UNITS[name] == "meV" else 1.0 for name in QM9_TARGETS]
)


def row_labels(row: QM9PackRow) -> np.ndarray:
    """The row's 12 targets in :data:`~molssl.datamodules.qm9_raw.QM9_TARGETS` order and units.

    Raises:
        MoleculeError: ``invalid_label`` naming the column of a value that is not finite.
    """
    values = []
    for name in QM9_TARGETS:
        column = QM9PACK_TARGET_COLUMNS[name]
        text = row.fields[column].strip()
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise MoleculeError(
                f"{row.label}: column {column!r}: label {text!r} is not a finite number",
                reason="invalid_label",
            )
        values.append(value)
    return np.asarray(values, dtype=np.float64) * _SCALE


def parse_qm9pack_row(row: QM9PackRow) -> ParsedMolecule | Failure:
    """One row's molecule arrays, or a :class:`Failure` (``mol_id`` and ``line`` left at -1)."""
    try:
        data = mol_to_data(row_molecule(row), conf_id=-1)
    except MoleculeError as error:
        return Failure(-1, -1, row.fields.get("SMILES", ""), error.reason, str(error))
    return ParsedMolecule(
        z=data.z.numpy(),
        x=data.x.numpy(),
        pos=data.pos.numpy(),
        edge_index=data.edge_index.numpy(),
        edge_attr=data.edge_attr.numpy(),
        smiles=data.smiles,
    )


def _parse_rows(rows: list[QM9PackRow], workers: int) -> Iterator[ParsedMolecule | Failure]:
    if workers <= 1 or len(rows) < 2:
        yield from map(parse_qm9pack_row, rows)
        return
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(processes=min(workers, len(rows))) as pool:
        # imap keeps file order, so the output does not depend on the number of workers.
        yield from pool.imap(parse_qm9pack_row, rows, chunksize=256)


def parse_qm9pack(files: Sequence[str | Path], workers: int = 1) -> QM9Parsed:
    """Parse qm9pack CSV files (in the given order) into packed molecules with their labels.

    Args:
        files: The ``qm9_part*.csv`` files (or any CSVs in that layout).
        workers: Processes for the RDKit part (1: in this process).

    Returns:
        The usable molecules in file order, and a failure for every other row read.

    Raises:
        SourceError: A missing file or one without qm9pack's columns.
    """
    failures: list[Failure] = []
    pending: list[tuple[QM9PackRow, int, np.ndarray]] = []
    seen: dict[int, str] = {}
    read = 0
    for path in files:
        for row in iter_qm9pack_rows(path):
            read += 1
            mol_id = -1
            try:
                k = gdb_index_of(row)
                mol_id = k - 1
                if k in seen:
                    raise MoleculeError(
                        f"{row.label}: GDB index {k} already read at {seen[k]}",
                        reason="duplicate_id",
                    )
                seen[k] = row.label
                labels = row_labels(row)
            except MoleculeError as error:
                failures.append(
                    Failure(
                        mol_id, row.line, row.fields.get("SMILES", ""), error.reason, str(error)
                    )
                )
                continue
            pending.append((row, mol_id, labels))
    kept: list[tuple[int, ParsedMolecule, np.ndarray]] = []
    results = _parse_rows([row for row, _, _ in pending], workers)
    for (row, mol_id, labels), result in zip(pending, results, strict=True):
        if isinstance(result, Failure):
            failures.append(Failure(mol_id, row.line, result.smiles, result.reason, result.message))
        else:
            kept.append((mol_id, result, labels))
    return QM9Parsed(pack_molecules(kept), failures, [], read)

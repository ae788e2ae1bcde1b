"""QM9's raw text files: the label CSV, the list of uncharacterized molecules, SDF blocks.

The common raw layout (as PyTorch Geometric, TorchMD-NET and DeepChem ship it; data from
Ramakrishnan et al. 2014, figshare collection 978904):

* ``gdb9.sdf``: 133,885 molecules, every hydrogen an explicit atom, DFT (B3LYP/6-31G(2df,p))
  coordinates in Å; the title line of molecule ``k`` (1-based) is ``gdb_k``.
* ``gdb9.sdf.csv``: header ``mol_id,A,B,C,mu,alpha,homo,lumo,gap,r2,zpve,u0,u298,h298,g298,cv``
  (DeepChem's copy adds ``u0_atom,u298_atom,h298_atom,g298_atom``), one row per molecule,
  ``mol_id`` = ``gdb_k``. Units: A, B, C GHz; mu D; alpha a0³; homo, lumo, gap Ha; r2 a0²;
  zpve, u0, u298, h298, g298 Ha; cv cal/(mol K).
* ``uncharacterized.txt`` (figshare file 3195404): a free-text header, a ``=====`` rule, a
  column header, another rule, then one row per molecule whose first column is its 1-based
  index ``k`` (3,054 rows), and a closing rule. Those molecules changed connectivity during
  the DFT relaxation and are excluded by convention, leaving 130,831.

Labels are joined to molecules by name (``gdb_k``), never by position, so a molecule that
fails to parse cannot shift the labels of the ones after it.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from molssl.datamodules.sdf_records import RECORD_END, record_starts
from molssl.errors import UserError

__all__ = [
    "HARTREE_TO_MEV",
    "QM9_TARGETS",
    "QM9_TARGET_UNITS",
    "QM9FormatError",
    "QM9Labels",
    "SDFBlock",
    "gdb_index",
    "iter_sdf_blocks",
    "read_qm9_labels",
    "read_uncharacterized",
    "resolve_targets",
]

#: meV per Hartree (CODATA 2018: 1 Ha = 27.211386245988 eV).
HARTREE_TO_MEV = 27211.386245988

#: The 12 targets of the UniCorn paper's QM9 table, in its order.
QM9_TARGETS: tuple[str, ...] = (
    "mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "U0", "U", "H", "G", "Cv",
)  # fmt: skip

#: Units of each target as this package serves them (the paper's: meV for energies).
QM9_TARGET_UNITS: dict[str, str] = {
    "mu": "D",
    "alpha": "a0^3",
    "homo": "meV",
    "lumo": "meV",
    "gap": "meV",
    "r2": "a0^2",
    "zpve": "meV",
    "U0": "meV",
    "U": "meV",
    "H": "meV",
    "G": "meV",
    "Cv": "cal/(mol K)",
}

# Paper name -> column of gdb9.sdf.csv (U, H and G are the values at 298.15 K).
_CSV_COLUMNS: dict[str, str] = {
    "mu": "mu",
    "alpha": "alpha",
    "homo": "homo",
    "lumo": "lumo",
    "gap": "gap",
    "r2": "r2",
    "zpve": "zpve",
    "U0": "u0",
    "U": "u298",
    "H": "h298",
    "G": "g298",
    "Cv": "cv",
}
_HARTREE_TARGETS = frozenset({"homo", "lumo", "gap", "zpve", "U0", "U", "H", "G"})
_ID_COLUMN = "mol_id"
_GDB_TITLE = re.compile(r"^gdb_(\d+)$")


class QM9FormatError(UserError):
    """A QM9 raw file that cannot be read as a whole (names the file, line and column).

    Attributes:
        reason: Stable code: ``missing_file``, ``empty_file``, ``missing_column``,
            ``truncated_row``, ``ragged_row``, ``invalid_label``, ``duplicate_id``,
            ``invalid_row``, ``names_do_not_match``.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (type(self), (str(self), self.reason))


def resolve_targets(targets: Sequence[str] | None) -> list[str]:
    """Paper names of the requested targets (all 12 when ``None``).

    Names match case-insensitively, and the CSV's column names are accepted too
    (``u0`` → ``U0``, ``u298`` → ``U``, ``h298`` → ``H``, ``g298`` → ``G``, ``cv`` → ``Cv``).

    Raises:
        ValueError: An unknown or repeated name, or an empty list.
    """
    if targets is None:
        return list(QM9_TARGETS)
    if isinstance(targets, str):
        targets = [targets]
    aliases = {name.lower(): name for name in QM9_TARGETS}
    aliases.update({column: name for name, column in _CSV_COLUMNS.items()})
    resolved: list[str] = []
    for target in targets:
        name = aliases.get(str(target).lower())
        if name is None:
            raise UserError(f"unknown QM9 target {target!r}; choose from {list(QM9_TARGETS)}")
        if name in resolved:
            raise UserError(f"QM9 target {target!r} is requested twice")
        resolved.append(name)
    if not resolved:
        raise UserError("at least one QM9 target is needed")
    return resolved


def gdb_index(title: str) -> int | None:
    """``k`` of a ``gdb_k`` title (1-based index in the full ``gdb9.sdf``), else ``None``."""
    match = _GDB_TITLE.match(title.strip())
    return int(match.group(1)) if match else None


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise QM9FormatError(f"QM9 {what} not found: {path}", reason="missing_file")


@dataclass
class QM9Labels:
    """The label table of ``gdb9.sdf.csv``, converted to the paper's units.

    Attributes:
        rows: ``mol_id`` (``gdb_k``) → row of :attr:`values`.
        values: ``(R, 12)`` float64 targets in :data:`QM9_TARGETS` order, units as in
            :data:`QM9_TARGET_UNITS`.
        lines: ``(R,)`` 1-based line of each row in the CSV.
    """

    rows: dict[str, int]
    values: np.ndarray
    lines: np.ndarray


def read_qm9_labels(path: str | os.PathLike[str]) -> QM9Labels:
    """Read ``gdb9.sdf.csv``; energies Ha → meV, the others kept in their units.

    Columns are found by name (any order; extra columns ignored).

    Raises:
        QM9FormatError: A missing file or column, a short row, a label that is not a
            finite number, or a ``mol_id`` seen twice (each naming the file, line, column).
    """
    path = Path(path)
    _require_file(path, "label file")
    scale = np.array([HARTREE_TO_MEV if name in _HARTREE_TARGETS else 1.0 for name in QM9_TARGETS])
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise QM9FormatError(f"{path}: empty file, expected a CSV header", "empty_file")
        columns = {name.strip().lower(): i for i, name in enumerate(header)}
        wanted = [_ID_COLUMN, *(_CSV_COLUMNS[name] for name in QM9_TARGETS)]
        missing = [name for name in wanted if name not in columns]
        if missing:
            raise QM9FormatError(
                f"{path}: column(s) {missing} missing from the header {header}", "missing_column"
            )
        positions = [columns[name] for name in wanted]
        width = max(positions) + 1
        rows: dict[str, int] = {}
        values: list[list[float]] = []
        lines: list[int] = []
        for row in reader:
            line = reader.line_num
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) < width:
                raise QM9FormatError(
                    f"{path}, line {line}: {len(row)} columns, expected at least {width} "
                    "(truncated file?)",
                    "truncated_row",
                )
            if len(row) != len(header):
                # An extra or missing comma shifts every later column onto another target.
                raise QM9FormatError(
                    f"{path}, line {line}: {len(row)} columns, the header has {len(header)}",
                    "ragged_row",
                )
            name = row[positions[0]].strip()
            if name in rows:
                raise QM9FormatError(
                    f"{path}, line {line}: mol_id {name!r} already on line {lines[rows[name]]}",
                    "duplicate_id",
                )
            numbers = []
            for column, position in zip(wanted[1:], positions[1:], strict=True):
                text = row[position].strip()
                try:
                    number = float(text)
                except ValueError:
                    number = math.nan
                if not math.isfinite(number):
                    raise QM9FormatError(
                        f"{path}, line {line}, column {column!r}: label {text!r} is not a "
                        "finite number",
                        "invalid_label",
                    )
                numbers.append(number)
            rows[name] = len(values)
            values.append(numbers)
            lines.append(line)
    array = np.asarray(values, dtype=np.float64).reshape(-1, len(QM9_TARGETS)) * scale
    return QM9Labels(rows=rows, values=array, lines=np.asarray(lines, dtype=np.int64))


def read_uncharacterized(path: str | os.PathLike[str]) -> frozenset[int]:
    """The 1-based ``gdb_k`` indices listed in ``uncharacterized.txt``.

    Lines before the first row (free text, ``=====`` rules, the column header) and the
    closing rule are skipped; a row is a line whose first field is an integer.

    Raises:
        QM9FormatError: A line among the rows that is neither a row nor a rule, a
            non-positive index, or a file with no row at all.
    """
    path = Path(path)
    _require_file(path, "uncharacterized list")
    indices: set[int] = set()
    with open(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields or set(line.strip()) <= {"=", "-"}:
                continue
            if fields[0].lstrip("-").isdigit():
                index = int(fields[0])
                if index < 1:
                    raise QM9FormatError(
                        f"{path}, line {line_number}: index {index} is not a 1-based index",
                        "invalid_row",
                    )
                indices.add(index)
            elif indices:
                raise QM9FormatError(
                    f"{path}, line {line_number}: expected a row starting with an index, got "
                    f"{line.strip()[:60]!r}",
                    "invalid_row",
                )
    if not indices:
        raise QM9FormatError(f"{path}: no molecule index found", "empty_file")
    return frozenset(indices)


@dataclass(frozen=True)
class SDFBlock:
    """One molecule's text in an SDF file.

    Attributes:
        index: 0-based position of the block in the file.
        line: 1-based line where the block starts.
        text: The block (molfile plus data items), without the ``$$$$`` line.
        terminated: False for a last block that ends without ``$$$$`` (truncated file).
        next_line: For a block followed by another molecule with no ``$$$$`` between them,
            the line where that molecule starts (the block fails as ``missing_terminator``);
            else ``None``.
    """

    index: int
    line: int
    text: str
    terminated: bool = True
    next_line: int | None = None

    @property
    def title(self) -> str:
        """The block's first line (the molecule's name)."""
        return self.text.split("\n", 1)[0].strip()


def iter_sdf_blocks(path: str | os.PathLike[str]) -> Iterator[SDFBlock]:
    """Stream the molecule blocks of an SDF file (never the whole file in memory).

    Molecules are counted from the molfile structure
    (:func:`~molssl.datamodules.sdf_records.record_starts`): text between two ``$$$$`` lines
    that holds two molecules gives two blocks.

    Raises:
        QM9FormatError: ``missing_file``.
    """
    path = Path(path)
    _require_file(path, "SDF file")
    lines: list[str] = []
    start = 1
    index = 0
    with open(path, errors="replace") as handle:
        for line_number, line in enumerate(handle, start=1):
            if line.startswith(RECORD_END):
                for block in _split(lines, index, start, terminated=True):
                    yield block
                    index += 1
                lines = []
                start = line_number + 1
            else:
                lines.append(line)
    if any(text.strip() for text in lines):
        yield from _split(lines, index, start, terminated=False)


def _split(lines: list[str], index: int, start: int, terminated: bool) -> Iterator[SDFBlock]:
    starts = record_starts(lines)
    stops = [*starts[1:], len(lines)]
    for k, (first, stop) in enumerate(zip(starts, stops, strict=True)):
        last = k + 1 == len(starts)
        yield SDFBlock(
            index + k,
            start + first,
            "".join(lines[first:stop]),
            terminated=terminated or not last,
            next_line=None if last else start + stop,
        )

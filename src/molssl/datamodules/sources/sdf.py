"""SDF files with 3D coordinates (``.sdf``, optionally ``.gz``), streamed record by record.

Records are split on ``$$$$`` lines while reading, so a file of millions of molecules is never
held in memory, and counted from the molfile structure
(:func:`~molssl.datamodules.sdf_records.record_starts`), so a missing ``$$$$`` never hides a
molecule. Each record's connection table is parsed by RDKit without sanitisation and
without removing hydrogens (``Chem.MolFromMolBlock(block, sanitize=False, removeHs=False)``);
sanitising, adding hydrogens with coordinates and featurising happen later, in
:func:`~molssl.datamodules.sources.to_record.entry_to_record`. Coordinates are kept exactly as
written: PCQM4Mv2's DFT SDF (heavy atoms only) is the real-world case.

Per record (``line`` = its first line, the title line):

* ``source_id``: the title line, else the first of the data fields ``PUBCHEM_COMPOUND_CID``,
  ``cid``, ``id``, ``name`` (any case), else ``"{file name}:{index}"``.
* ``truncated_record``: no ``M  END`` line before ``$$$$``, or a last record without ``$$$$``
  (a file cut mid-record). Blank lines after the last ``$$$$`` are not a record.
* ``missing_terminator``: a record followed by the next one without a ``$$$$`` line between
  them (the next one is read as usual).
* ``invalid_record``: RDKit cannot read the block (its message is kept in ours).
* ``no_3d_coordinates``: see :func:`~molssl.datamodules.sources.coordinates.check_3d`; a
  block is declared 3D by the dimension code ``3D`` on its second line.
* ``truncated_file``: a gzip stream that ends early (one failure, then the file stops).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from rdkit import Chem

from molssl.chem.errors import MoleculeError
from molssl.chem.rdkit_log import quiet_rdkit
from molssl.datamodules.sdf_records import RECORD_END, record_starts
from molssl.datamodules.sources.coordinates import check_3d
from molssl.datamodules.sources.entry import SourceEntry, SourceRecordError, default_source_id
from molssl.datamodules.sources.textio import TRUNCATION_ERRORS, open_text

__all__ = ["iter_sdf_file", "parse_sdf_record", "rdkit_detail"]

_ID_FIELDS = ("pubchem_compound_cid", "cid", "id", "name")


def iter_sdf_file(path: str | Path) -> Iterator[SourceEntry]:
    """Entries of an SDF file, one per record, in file order."""
    source = str(path)
    index = 0
    line_no = 0
    block: list[str] = []
    start = 1
    with open_text(Path(path)) as handle:
        while True:
            try:
                raw = handle.readline()
            except TRUNCATION_ERRORS as error:
                failure = SourceRecordError(
                    f"{source}: compressed stream ends early after line {line_no} ({error})",
                    reason="truncated_file",
                )
                yield SourceEntry(
                    source=source,
                    index=index,
                    line=start if block else line_no + 1,
                    source_id=default_source_id(source, index),
                    failure=failure,
                )
                return
            if not raw:
                break
            line_no += 1
            line = raw.rstrip("\r\n")
            if line.strip() == RECORD_END:
                for entry in _block_entries(block, source, index, start, terminated=True):
                    yield entry
                    index += 1
                block = []
                start = line_no + 1
            else:
                block.append(line)
    if any(line.strip() for line in block):
        yield from _block_entries(block, source, index, start, terminated=False)


def _block_entries(
    block: list[str], source: str, index: int, start: int, terminated: bool
) -> Iterator[SourceEntry]:
    """The entries of the text before one ``$$$$`` (one per molecule found in it)."""
    starts = record_starts(block)
    stops = [*starts[1:], len(block)]
    for k, (first, stop) in enumerate(zip(starts, stops, strict=True)):
        lines = block[first:stop]
        line = start + first
        if k + 1 < len(starts):
            failure = SourceRecordError(
                f"{source}:{line}: no '$$$$' line between this record and the next one, at "
                f"line {start + stop}",
                reason="missing_terminator",
            )
            yield SourceEntry(
                source, index + k, line, _title_id(lines, source, index + k), failure=failure
            )
        elif not terminated:
            failure = SourceRecordError(
                f"{source}:{line}: last record has no '$$$$' terminator (file cut?)",
                reason="truncated_record",
            )
            yield SourceEntry(
                source, index + k, line, _title_id(lines, source, index + k), failure=failure
            )
        else:
            yield parse_sdf_record(lines, source, index + k, line)


def _title_id(lines: list[str], source: str, index: int) -> str:
    title = lines[0].strip() if lines else ""
    return title or default_source_id(source, index)


def _data_fields(lines: list[str]) -> dict[str, str]:
    # SDF data items: a header line "> ... <name> ..." then value lines up to a blank line.
    fields: dict[str, str] = {}
    for i, line in enumerate(lines):
        if line.startswith(">") and "<" in line and ">" in line[line.index("<") :]:
            name = line[line.index("<") + 1 : line.index(">", line.index("<"))]
            value = lines[i + 1].strip() if i + 1 < len(lines) else ""
            fields.setdefault(name.lower(), value)
    return fields


def parse_sdf_record(lines: list[str], source: str, index: int, line: int) -> SourceEntry:
    """One SDF record (its lines without ``$$$$``) → an entry with a 3D molecule or a failure."""
    label = f"{source}:{line}"
    end = next((i for i, text in enumerate(lines) if text.startswith("M  END")), None)
    title = lines[0].strip() if lines else ""
    fields = _data_fields(lines[end + 1 :]) if end is not None else {}
    source_id = title or next(
        (fields[key] for key in _ID_FIELDS if fields.get(key)), default_source_id(source, index)
    )
    try:
        if end is None:
            raise SourceRecordError(
                f"{label}: record has no 'M  END' line (cut mid-block?)",
                reason="truncated_record",
            )
        mol = _read_block("\n".join(lines[: end + 1]) + "\n", label)
        tagged_3d = len(lines) > 1 and lines[1][20:22].upper() == "3D"
        check_3d(mol, label, tagged_3d)
    except MoleculeError as failure:
        return SourceEntry(source, index, line, source_id, failure=failure)
    return SourceEntry(source, index, line, source_id, mol=mol)


def _read_block(block: str, label: str) -> Chem.Mol:
    with quiet_rdkit() as log:
        try:
            mol = Chem.MolFromMolBlock(block, sanitize=False, removeHs=False)
        except Exception as error:  # RDKit raises several unrelated types on malformed input
            detail = rdkit_detail(str(error)) or type(error).__name__
            raise SourceRecordError(f"{label}: RDKit cannot read the record ({detail})") from None
        if mol is None:
            detail = rdkit_detail("\n".join(log.lines())) or "no detail from RDKit"
            raise SourceRecordError(f"{label}: RDKit cannot read the record ({detail})")
    return mol


# Boilerplate lines of RDKit's invariant errors, around the one line that says what is wrong.
_NOISE = (
    "****",
    "----",
    "Post-condition Violation",
    "Pre-condition Violation",
    "Invariant Violation",
    "Violation occurred",
    "Failed Expression",
)


def rdkit_detail(text: str) -> str:
    """The informative lines of an RDKit error text, without its invariant boilerplate."""
    kept: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("Stacktrace"):
            break
        if line and not line.startswith(_NOISE) and line not in kept:
            kept.append(line)
    return "; ".join(kept)[:300]

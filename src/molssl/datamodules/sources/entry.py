"""What a source file yields per molecule, and the errors of reading one.

Every entry read from a file becomes one :class:`SourceEntry`, in file order, whether it
parsed or not: a caller can then check ``ok + failed == read`` and keep every label attached
to its own molecule (``index`` never skips a failed entry).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rdkit import Chem

from molssl.chem.errors import MoleculeError
from molssl.errors import UserError

__all__ = ["SourceEntry", "SourceError", "SourceRecordError", "default_source_id"]


class SourceError(UserError):
    """A whole input file cannot be read (found before any of its entries).

    Attributes:
        reason: Short snake_case code: ``missing_file``, ``unknown_suffix``,
            ``no_smiles_column``, ``invalid_gzip``, ``no_supported_files``, ``unreadable_file``.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (type(self), (str(self), self.reason))


class SourceRecordError(MoleculeError):
    """One entry of a file could not be read.

    Reasons: ``invalid_record`` (the default), ``truncated_record``, ``missing_terminator``,
    ``ragged_row``, ``truncated_file``, ``invalid_json``, ``no_3d_coordinates``.
    """

    default_reason = "invalid_record"


@dataclass(frozen=True)
class SourceEntry:
    """One entry of an input file, read but not yet turned into a record.

    Exactly one of ``smiles``, ``mol`` and ``failure`` is set.

    Attributes:
        source: Path of the file the entry comes from, as given (or as listed in a directory).
        index: 0-based entry number within that file, counting every entry read, failed ones
            included.
        line: 1-based line where the entry starts (1 for a one-molecule JSON file).
        source_id: Name column, SDF title, PubChem CID; else ``"{file name}:{index}"``.
        smiles: The SMILES text of a SMILES source (not parsed yet).
        mol: A molecule with one 3D conformer, coordinates as in the file; from an SDF as
            parsed (not sanitised, hydrogens possibly implicit), from PubChemQC sanitised with
            every hydrogen explicit.
        failure: Why the entry could not be read (reason codes of
            :class:`~molssl.chem.errors.MoleculeError` subclasses).
    """

    source: str
    index: int
    line: int
    source_id: str
    smiles: str | None = None
    mol: Chem.Mol | None = None
    failure: MoleculeError | None = None

    def __post_init__(self) -> None:
        given = sum(value is not None for value in (self.smiles, self.mol, self.failure))
        if given != 1:
            raise ValueError(
                f"SourceEntry {self.source}:{self.line}: exactly one of smiles, mol and failure "
                f"must be set, got {given}"
            )

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        # Worker processes get entries by pickle. RDKit's default pickle rounds coordinates to
        # float32; hydrogens placed from rounded coordinates would then depend on whether an
        # entry crossed a process boundary. Keep them as doubles.
        mol = None if self.mol is None else self.mol.ToBinary(_MOL_PICKLE_FLAGS)
        fields = (self.source, self.index, self.line, self.source_id, self.smiles, mol)
        return (_restore_entry, (*fields, self.failure))

    @property
    def ok(self) -> bool:
        """Whether the entry was read (it may still fail when made into a record)."""
        return self.failure is None


_MOL_PICKLE_FLAGS = int(
    Chem.PropertyPickleOptions.AllProps | Chem.PropertyPickleOptions.CoordsAsDouble
)


def _restore_entry(
    source: str,
    index: int,
    line: int,
    source_id: str,
    smiles: str | None,
    mol: bytes | None,
    failure: MoleculeError | None,
) -> SourceEntry:
    restored = None if mol is None else Chem.Mol(mol)
    return SourceEntry(source, index, line, source_id, smiles, restored, failure)


def default_source_id(source: str, index: int) -> str:
    """The id of an entry whose file names none: ``"{file name}:{index}"``."""
    return f"{Path(source).name}:{index}"

"""New molecules for a trained model: rows in, batches of usable molecules plus failed rows out.

Every input row stays a row: row ``i`` of a file (any format
:func:`~molssl.datamodules.sources.iter_source` reads) or of a Python list is molecule
``mol_id = i`` whether it can be used or not, and is featurised exactly as fine-tuning
featurised row ``i`` of its CSV (:func:`~molssl.analysis.molecules.prepare_molecule`: one
ETKDG conformer seeded by ``(conformer seed, i)``, relaxed with MMFF94 if training relaxed
them; a 3D entry keeps its coordinates). Predicting on the training file therefore sees the
very conformers training saw. Featurisation runs in the DataLoader (and its workers), batch by
batch; a batch carries its usable molecules as one PyG ``Batch`` and every row's id, SMILES
and, for a row that failed, the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from torch.utils.data import Dataset
from torch_geometric.data import Batch

from molssl.analysis.molecules import EmbedMolecule, MoleculeFailure, prepare_molecule
from molssl.chem.conformers import ConformerOptions
from molssl.chem.errors import InvalidSmilesError
from molssl.datamodules.sources import SourceEntry, iter_source
from molssl.inference_transforms import SampleTransforms, apply_transforms

__all__ = ["RowBatch", "RowDataset", "collate_rows", "file_entries", "smiles_entries"]

#: ``source`` of the entries of a Python list.
LIST_SOURCE = "<list>"


def smiles_entries(smiles: Iterable[object]) -> list[SourceEntry]:
    """Entries of a list of SMILES; anything but a string is a failed row."""
    entries = []
    for index, value in enumerate(smiles):
        fields = (LIST_SOURCE, index, index + 1, str(index))
        if isinstance(value, str):
            entries.append(SourceEntry(*fields, smiles=value))
        else:
            failure = InvalidSmilesError(
                f"row {index}: expected a SMILES string, got {type(value).__name__}",
                reason="invalid_smiles",
            )
            entries.append(SourceEntry(*fields, failure=failure))
    return entries


def file_entries(
    path: str | os.PathLike[str], smiles_column: str | None = None
) -> list[SourceEntry]:
    """Every entry of an input file or directory, in order (see ``iter_source``).

    Raises:
        SourceError: The input cannot be read at all (missing, unknown type, no SMILES column).
    """
    return list(iter_source(path, smiles_column=smiles_column))


@dataclass
class RowBatch:
    """A batch of input rows.

    Attributes:
        rows: Input positions (``mol_id``) of the rows, in order.
        ids: Each row's id (name column, SDF title, or ``<file>:<index>``; the position for a
            list).
        smiles: Each row's SMILES as given (a 3D entry: the molecule's canonical SMILES, or
            ``""`` if it failed).
        errors: ``None`` for a usable row, else ``"<reason>: <message>"``.
        usable: Positions (within this batch) of the usable rows, in order.
        graph: Those molecules as one PyG ``Batch`` (``None`` when none is usable).
    """

    rows: list[int]
    ids: list[str]
    smiles: list[str]
    errors: list[str | None]
    usable: list[int]
    graph: Batch | None


def transformed(
    molecule: EmbedMolecule, entry: SourceEntry, transforms: SampleTransforms
) -> EmbedMolecule | MoleculeFailure:
    """``molecule`` with its sample through ``transforms``; a sample a transform refuses is the
    row's failure (reason ``transform_failed``), never a crash of the whole run."""
    try:
        return replace(molecule, data=apply_transforms(transforms, molecule.data))
    except ValueError as error:
        return MoleculeFailure(
            entry.source, entry.line, entry.index, molecule.mol_id, entry.source_id,
            "transform_failed", str(error),
        )  # fmt: skip


class RowDataset(Dataset[tuple[SourceEntry, EmbedMolecule | MoleculeFailure]]):
    """Input rows, featurised on access (in DataLoader workers when there are any).

    Args:
        entries: The rows.
        options: Conformer settings; row ``i`` is seeded with ``molecule_seed(options.seed, i)``.
        max_heavy_atoms: Larger molecules fail as ``too_many_atoms``; ``None``: no limit.
        transforms: What the model's training samples went through
            (:func:`~molssl.inference_transforms.inference_transforms`), in order.
    """

    def __init__(
        self,
        entries: Sequence[SourceEntry],
        options: ConformerOptions,
        max_heavy_atoms: int | None = 150,
        transforms: SampleTransforms = (),
    ) -> None:
        self.entries = entries
        self.options = options
        self.max_heavy_atoms = max_heavy_atoms
        self.transforms = list(transforms)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> tuple[SourceEntry, EmbedMolecule | MoleculeFailure]:
        entry = self.entries[index]
        result = prepare_molecule(index, entry, self.options, self.max_heavy_atoms)
        if isinstance(result, EmbedMolecule) and self.transforms:
            result = transformed(result, entry, self.transforms)
        return entry, result


def collate_rows(items: Sequence[tuple[SourceEntry, EmbedMolecule | MoleculeFailure]]) -> RowBatch:
    """A :class:`RowBatch` of featurised rows."""
    rows, ids, smiles, errors, usable, data = [], [], [], [], [], []
    for position, (entry, result) in enumerate(items):
        rows.append(result.mol_id)
        ids.append(entry.source_id)
        if isinstance(result, MoleculeFailure):
            errors.append(f"{result.reason}: {' '.join(str(result.message).split())}")
            smiles.append(entry.smiles or "")
            continue
        errors.append(None)
        smiles.append(entry.smiles if entry.smiles is not None else result.smiles)
        usable.append(position)
        data.append(result.data)
    graph = Batch.from_data_list(data) if data else None
    return RowBatch(rows, ids, smiles, errors, usable, graph)

"""Input molecules of ``molssl embed``: entries → one seeded conformer and features each.

Entries come from :func:`~molssl.datamodules.sources.iter_source` and are numbered ``mol_id``
0, 1, 2, ... in file order whether they can be used or not, as ``molssl prepare`` numbers
them, so a failure never shifts the ids (nor the labels) of the molecules after it. Each
usable entry becomes a record through :func:`~molssl.datamodules.sources.entry_to_record`:
a SMILES gets one RDKit conformer seeded with
:func:`~molssl.datamodules.embedded.molecule_seed` ``(seed, mol_id)`` (the same for any number
of workers), a 3D entry keeps its coordinates. The Bemis-Murcko scaffold is taken from the
record's canonical SMILES. Every failure keeps its file, line, entry index, id, reason code
and message.
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from torch_geometric.data import Data

from molssl.chem.conformers import ConformerOptions
from molssl.chem.errors import MoleculeError
from molssl.chem.scaffold import murcko_scaffold
from molssl.datamodules.embedded import molecule_seed
from molssl.datamodules.prepare import EntryFailure
from molssl.datamodules.records import MoleculeRecord
from molssl.datamodules.sources import SourceEntry, entry_to_record, iter_source

__all__ = [
    "EmbedMolecule",
    "MoleculeFailure",
    "embedding_input",
    "prepare_molecule",
    "read_molecules",
]

# A reason code of its own, so that a bug in molssl never looks like bad input.
UNEXPECTED_ERROR = "unexpected_error"
# The record fields an encoder reads (3D: z, pos; 2D and blended: x, edges, spd).
_ENCODER_KEYS = ("z", "x", "edge_index", "edge_attr", "pos", "spd")


@dataclass
class EmbedMolecule:
    """A usable input molecule.

    Attributes:
        mol_id: Entry number in the input (all files, in order), failures counted.
        source: File the entry comes from.
        index: Entry number within that file.
        source_id: The entry's name in its source.
        smiles: Canonical heavy-atom SMILES of the record.
        scaffold: Bemis-Murcko scaffold SMILES (``""`` for an acyclic molecule).
        data: The encoder's input (``z``, ``x``, ``edge_index``, ``edge_attr``, ``pos``,
            ``spd``, ``mol_id``).
    """

    mol_id: int
    source: str
    index: int
    source_id: str
    smiles: str
    scaffold: str
    data: Data


@dataclass(frozen=True)
class MoleculeFailure(EntryFailure):
    """An input entry that gave no molecule (written to ``failures.json``).

    The fields of :class:`~molssl.datamodules.prepare.EntryFailure`: a failure is described
    the same way whether the molecule was wanted for a shard or for an analysis.
    """

    def as_dict(self) -> dict[str, Any]:
        """Plain values."""
        return asdict(self)


def embedding_input(record: MoleculeRecord) -> Data:
    """The encoder's input of a record: its first conformer and the graph, nothing else.

    Pre-training's per-atom extras (fragments, torsions) are left out: they cost memory and
    collation time and no encoder reads them.
    """
    full = record.to_data(0)
    data = Data(**{key: full[key] for key in _ENCODER_KEYS}, num_nodes=record.num_atoms)
    data.mol_id = full.mol_id
    return data


def prepare_molecule(
    mol_id: int,
    entry: SourceEntry,
    options: ConformerOptions,
    max_heavy_atoms: int | None = 150,
) -> EmbedMolecule | MoleculeFailure:
    """One entry → its molecule or its failure.

    A SMILES gets one conformer seeded with ``molecule_seed(options.seed, mol_id)``, as
    preparation for fine-tuning seeds the molecule of CSV row ``mol_id``; a 3D entry keeps its
    coordinates.
    """
    per_molecule = replace(options, seed=molecule_seed(options.seed, mol_id))
    try:
        record = entry_to_record(entry, mol_id, per_molecule, max_heavy_atoms)
        scaffold = murcko_scaffold(record.smiles)
    except MoleculeError as error:
        reason, message = error.reason, str(error)
    except Exception as error:  # a bug, not bad input: recorded, and counted apart
        reason, message = UNEXPECTED_ERROR, f"{type(error).__name__}: {error}"
    else:
        return EmbedMolecule(
            mol_id=mol_id,
            source=entry.source,
            index=entry.index,
            source_id=entry.source_id,
            smiles=record.smiles,
            scaffold=scaffold,
            data=embedding_input(record),
        )
    return MoleculeFailure(
        entry.source, entry.line, entry.index, mol_id, entry.source_id, reason, message
    )


def _prepare(task: tuple[int, SourceEntry, ConformerOptions]) -> EmbedMolecule | MoleculeFailure:
    """:func:`prepare_molecule` of a task tuple (runs in a worker process when there are any)."""
    return prepare_molecule(*task)


def _mapped(tasks: Iterable[Any], workers: int) -> Iterator[EmbedMolecule | MoleculeFailure]:
    if workers <= 1:
        yield from map(_prepare, tasks)
        return
    # forkserver: workers do not inherit the parent's threads (torch's); they fork from a
    # server that imported this module once.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if "forkserver" in methods:
        context.set_forkserver_preload([__name__])
    with context.Pool(processes=workers) as pool:
        # imap keeps input order, so the output does not depend on the number of workers.
        yield from pool.imap(_prepare, tasks, chunksize=8)


def read_molecules(
    path: str | Path,
    seed: int = 0,
    workers: int = 1,
    max_molecules: int | None = None,
    smiles_column: str | None = None,
) -> tuple[list[EmbedMolecule], list[MoleculeFailure], int]:
    """Reads and prepares the molecules of an input file or directory.

    Args:
        path: Input for :func:`~molssl.datamodules.sources.iter_source`.
        seed: Conformer seed; molecule ``i`` uses ``molecule_seed(seed, i)``.
        workers: Preparation processes (1: in this process).
        max_molecules: Read only the first this many entries (failed ones included).
        smiles_column: SMILES column of CSV inputs (default: by name).

    Returns:
        ``(molecules, failures, read)`` with ``len(molecules) + len(failures) == read``,
        both in input order.

    Raises:
        SourceError: The input itself cannot be read (missing, unknown suffix, ...).
    """
    options = ConformerOptions(num_conformers=1, seed=seed)
    entries: Iterable[SourceEntry] = iter_source(path, smiles_column=smiles_column)
    if max_molecules is not None:
        entries = itertools.islice(entries, max_molecules)
    tasks = ((mol_id, entry, options) for mol_id, entry in enumerate(entries))
    molecules: list[EmbedMolecule] = []
    failures: list[MoleculeFailure] = []
    for result in _mapped(tasks, workers):
        if isinstance(result, MoleculeFailure):
            failures.append(result)
        else:
            molecules.append(result)
    return molecules, failures, len(molecules) + len(failures)

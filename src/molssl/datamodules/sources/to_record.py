"""Source entries → :class:`~molssl.datamodules.records.MoleculeRecord`.

A SMILES entry gets ``K`` RDKit conformers (:func:`~molssl.datamodules.records.record_from_smiles`
with the options as given, seed included). A 3D entry keeps its one geometry exactly: it is
sanitised, checked against the same limits as a SMILES (dummy atoms, no heavy atom, too many
heavy atoms), given stereo labels from its coordinates as RDKit's own SDF reader does, and gets
its missing hydrogens placed by ``Chem.AddHs(addCoords=True)``; the file's atoms keep their
order and coordinates, added hydrogens come after them. No ETKDG, no force field.
"""

from __future__ import annotations

from rdkit import Chem

from molssl.chem.conformers import ConformerOptions
from molssl.chem.errors import MoleculeError
from molssl.chem.features import prepare_mol
from molssl.chem.rdkit_log import quiet_rdkit
from molssl.datamodules.records import MoleculeRecord, record_from_mol, record_from_smiles
from molssl.datamodules.sources.entry import SourceEntry

__all__ = ["InvalidStructureError", "entry_to_record", "mol_3d_with_hydrogens"]


class InvalidStructureError(MoleculeError):
    """A molecule read with coordinates that RDKit cannot sanitise (``invalid_structure``)."""

    default_reason = "invalid_structure"


def entry_to_record(
    entry: SourceEntry,
    mol_id: int,
    options: ConformerOptions | None = None,
    max_heavy_atoms: int | None = 150,
) -> MoleculeRecord:
    """The record of one source entry, with ``source_id`` set from the entry.

    Args:
        entry: An entry of :func:`~molssl.datamodules.sources.iter_source`.
        mol_id: Index of the molecule in the prepared dataset.
        options: Conformer settings for SMILES entries (``None``: the defaults); unused for
            entries with coordinates.
        max_heavy_atoms: Reject larger molecules; ``None`` for no limit.

    Raises:
        MoleculeError: The entry's own read failure, or a subclass with a ``reason`` from
            parsing, checking, embedding or featurising the molecule.
    """
    if entry.failure is not None:
        raise entry.failure
    if entry.smiles is not None:
        record = record_from_smiles(entry.smiles, mol_id, options, max_heavy_atoms)
    else:
        assert entry.mol is not None  # SourceEntry holds exactly one of smiles / mol / failure
        label = f"{entry.source}:{entry.line} ({entry.source_id})"
        record = record_from_mol(mol_3d_with_hydrogens(entry.mol, label, max_heavy_atoms), mol_id)
    record.source_id = entry.source_id
    return record


def mol_3d_with_hydrogens(mol: Chem.Mol, label: str, max_heavy_atoms: int | None = 150) -> Chem.Mol:
    """Sanitise a molecule read with one 3D conformer and complete its hydrogens.

    Returns:
        A new molecule: the input's atoms first (coordinates unchanged), then the added
        hydrogens, with chirality and double-bond stereo assigned from the 3D geometry.

    Raises:
        InvalidStructureError: RDKit cannot sanitise it (valence, kekulisation, ...).
        MoleculeError: The limits of :func:`~molssl.chem.features.prepare_mol`.
    """
    work = Chem.Mol(mol)
    with quiet_rdkit() as log:
        try:
            Chem.SanitizeMol(work)
        except Exception as error:  # RDKit raises several unrelated exception types here
            detail = str(error).strip() or log.summary() or type(error).__name__
            raise InvalidStructureError(f"{label}: cannot sanitise ({detail})") from None
        # The same checks as a SMILES; its hydrogen handling is not used (coordinates would be
        # lost), only its errors.
        prepare_mol(work, add_hs=False, max_heavy_atoms=max_heavy_atoms, name=label)
        Chem.AssignStereochemistryFrom3D(work)
        return Chem.AddHs(work, addCoords=True)

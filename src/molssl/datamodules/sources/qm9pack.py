"""QM9 as the ``qm9pack`` package ships it: CSV rows with DFT coordinates, a SMILES, labels.

Layout (``qm9pack`` 1.0.3, ``qm9pack/data/qm9_part{1,2,3}.csv``; data of Ramakrishnan et al.
2014): a header, then one row per characterized molecule (130,831 in all, the 3,054
uncharacterized ones already left out), every field on one line. Columns read here:

* ``Index``: the 1-based GDB index ``k`` (the molecule ``gdb_k`` of ``gdb9.sdf``), also in
  ``XYZ_file`` as ``dsgdb9nsd_<k, 6 digits>.xyz``; the two must agree.
* ``SMILES``: the molecule's SMILES (no hydrogens); ``N_atoms``: atoms with hydrogens.
* ``Elements``: the element symbols in coordinate order, e.g. ``['C','H','H','H','H']``.
* ``XYZ_Ang``: B3LYP/6-31G(2df,p) coordinates in Å, ``[[x, y, z], ...]`` in that order.
* labels: ``Dipole_debye``, ``Polarizability_bohr3``, ``HOMO_au``, ``LUMO_au``,
  ``HOMO_LUMO_gap_au``, ``R2_bohr2``, ``ZPVE_au``, ``InternalEnergy_0K_au``,
  ``InternalEnergy_298K_au``, ``Enthalphy_298K_au`` (sic), ``GibbsFreeEnergy_298K_au``,
  ``Heatcapacity_Cv_cal_mol_K`` (see :data:`QM9PACK_TARGET_COLUMNS`).

No bonds are given. The molecular graph is the SMILES's (bond orders, charges, aromaticity as
RDKit reads them), placed on the DFT atoms only when the two agree: the connectivity that the
coordinates imply (RDKit's ``DetermineConnectivity``, covalent radii) must be isomorphic to the
SMILES graph with hydrogens, element by element. The isomorphism gives each SMILES atom its
coordinate row; stereo labels then come from the geometry. A molecule whose geometry and
SMILES disagree (different composition, a bond that the coordinates break or make) is a
counted failure with the reason, never a guessed graph.

Failure reasons of one row: ``invalid_record`` (a missing, unparsable or inconsistent field),
``invalid_smiles``, ``composition_mismatch`` (the SMILES's atoms are not the coordinates'
atoms), ``connectivity_mismatch`` (same atoms, other bonds).
"""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rdkit import Chem
from rdkit.Chem import rdDetermineBonds
from rdkit.Geometry import Point3D

from molssl.chem.errors import InvalidSmilesError, MoleculeError
from molssl.chem.rdkit_log import quiet_rdkit
from molssl.datamodules.sources.entry import SourceEntry, SourceError, SourceRecordError
from molssl.datamodules.sources.table import csv_header
from molssl.datamodules.sources.textio import TRUNCATION_ERRORS, open_text

__all__ = [
    "QM9PACK_COLUMNS",
    "QM9PACK_TARGET_COLUMNS",
    "QM9PackRow",
    "is_qm9pack_header",
    "iter_qm9pack_file",
    "iter_qm9pack_rows",
    "mol_from_smiles_and_xyz",
]

#: The paper's 12 QM9 targets -> qm9pack column (energies in Hartree, as in ``gdb9.sdf.csv``).
QM9PACK_TARGET_COLUMNS: dict[str, str] = {
    "mu": "Dipole_debye",
    "alpha": "Polarizability_bohr3",
    "homo": "HOMO_au",
    "lumo": "LUMO_au",
    "gap": "HOMO_LUMO_gap_au",
    "r2": "R2_bohr2",
    "zpve": "ZPVE_au",
    "U0": "InternalEnergy_0K_au",
    "U": "InternalEnergy_298K_au",
    "H": "Enthalphy_298K_au",
    "G": "GibbsFreeEnergy_298K_au",
    "Cv": "Heatcapacity_Cv_cal_mol_K",
}
#: Columns every qm9pack file must have.
QM9PACK_COLUMNS: tuple[str, ...] = (
    "XYZ_file", "Index", "SMILES", "N_atoms", "Elements", "XYZ_Ang",
    *QM9PACK_TARGET_COLUMNS.values(),
)  # fmt: skip
_XYZ_NAME = re.compile(r"^dsgdb9nsd_(\d+)\.xyz$")


class CompositionMismatchError(MoleculeError):
    """The SMILES's atoms (with hydrogens) are not the atoms of the coordinates."""

    default_reason = "composition_mismatch"


class ConnectivityMismatchError(MoleculeError):
    """The bonds the coordinates imply are not the SMILES's bonds."""

    default_reason = "connectivity_mismatch"


@dataclass(frozen=True)
class QM9PackRow:
    """One row's fields as text, with where it is.

    Attributes:
        source: The file, as given.
        index: 0-based row number in the file (header excluded), failed rows included.
        line: 1-based line of the row.
        fields: Column name -> text (only :data:`QM9PACK_COLUMNS`).
    """

    source: str
    index: int
    line: int
    fields: dict[str, str]

    @property
    def label(self) -> str:
        return f"{self.source}:{self.line}"


def is_qm9pack_header(header: list[str] | tuple[str, ...]) -> bool:
    """Whether a CSV header is qm9pack's (it has the coordinate and element columns)."""
    names = {cell.strip() for cell in header}
    return "XYZ_Ang" in names and "Elements" in names


def _header(path: Path) -> list[str]:
    header = [cell.strip() for cell in csv_header(path)]
    missing = [name for name in QM9PACK_COLUMNS if name not in header]
    if missing:
        raise SourceError(
            f"{path}: not a qm9pack file, column(s) {missing} missing from the header",
            reason="missing_column",
        )
    return header


def iter_qm9pack_rows(path: str | Path) -> Iterator[QM9PackRow]:
    """The rows of one qm9pack CSV, in file order (fields not parsed yet).

    Raises:
        SourceError: ``missing_file``, ``missing_column`` (a header without qm9pack's
            columns), ``truncated_file`` (a gzip stream that ends inside the header).
    """
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: no such file", reason="missing_file")
    header = _header(path)
    positions = {name: header.index(name) for name in QM9PACK_COLUMNS}
    with open_text(path, newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        index = 0
        while True:
            line = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except (csv.Error, *TRUNCATION_ERRORS) as error:
                # A cut file or an unreadable row: the row's fields are unknown.
                yield QM9PackRow(str(path), index, line, {"_error": str(error)})
                if not isinstance(error, csv.Error):
                    return
                index += 1
                continue
            if not any(cell.strip() for cell in row):
                continue
            fields = {name: row[i] for name, i in positions.items() if i < len(row)}
            yield QM9PackRow(str(path), index, line, fields)
            index += 1


def gdb_index_of(row: QM9PackRow) -> int:
    """The row's 1-based GDB index, checked against its ``XYZ_file`` name.

    Raises:
        SourceRecordError: ``invalid_record`` when either is missing or they disagree.
    """
    if "_error" in row.fields:
        raise SourceRecordError(f"{row.label}: unreadable row ({row.fields['_error']})")
    missing = [name for name in QM9PACK_COLUMNS if name not in row.fields]
    if missing:
        raise SourceRecordError(f"{row.label}: row too short, field(s) {missing} missing")
    text = row.fields["Index"].strip()
    match = _XYZ_NAME.match(row.fields["XYZ_file"].strip())
    if not text.isdigit() or int(text) < 1:
        raise SourceRecordError(f"{row.label}: Index {text!r} is not a positive integer")
    if match is None or int(match.group(1)) != int(text):
        raise SourceRecordError(
            f"{row.label}: XYZ_file {row.fields['XYZ_file']!r} does not name Index {text}"
        )
    return int(text)


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_COORDS = re.compile(r"^\[\s*(\[[^\[\]]*\]\s*,?\s*)*\]$")
_SYMBOLS = re.compile(r"^\[\s*('[A-Z][a-z]?'\s*,?\s*)*\]$")
_ATOMIC_NUMBERS = {Chem.GetPeriodicTable().GetElementSymbol(z): z for z in range(1, 119)}


def row_atoms(row: QM9PackRow) -> tuple[list[str], list[tuple[float, float, float]]]:
    """Element symbols and coordinates (Å) of a row, checked against ``N_atoms``.

    Raises:
        SourceRecordError: ``invalid_record`` for lists that do not parse, disagree in length,
            hold non-finite numbers or unknown element symbols.
    """
    elements_text = row.fields["Elements"].strip()
    coords_text = row.fields["XYZ_Ang"].strip()
    count = row.fields["N_atoms"].strip()
    if _SYMBOLS.match(elements_text) is None:
        raise SourceRecordError(
            f"{row.label}: Elements must be a list of quoted element symbols, got "
            f"{elements_text[:60]!r}"
        )
    elements = re.findall(r"'([A-Za-z]+)'", elements_text)
    rows = re.findall(r"\[([^\[\]]*)\]", coords_text)
    numbers = [_NUMBER.findall(text) for text in rows]
    if _COORDS.match(coords_text) is None or any(
        len(found) != 3 or ",".join(found) != text.replace(" ", "")
        for found, text in zip(numbers, rows, strict=True)
    ):
        raise SourceRecordError(
            f"{row.label}: XYZ_Ang must be a list of [x, y, z] numbers, got {coords_text[:60]!r}"
        )
    coords = [(float(x), float(y), float(z)) for x, y, z in numbers]
    if not all(math.isfinite(c) for xyz in coords for c in xyz):
        raise SourceRecordError(f"{row.label}: non-finite coordinates")
    if not count.isdigit() or not int(count) == len(elements) == len(coords) or not elements:
        raise SourceRecordError(
            f"{row.label}: N_atoms {count!r}, {len(elements)} element(s) and {len(coords)} "
            "coordinate row(s) must agree"
        )
    unknown = sorted({symbol for symbol in elements if symbol not in _ATOMIC_NUMBERS})
    if unknown:
        raise SourceRecordError(f"{row.label}: unknown element symbol(s) {unknown}")
    return elements, coords


def _bare_graph(mol: Chem.Mol) -> Chem.Mol:
    """The molecule as a graph of plain atoms (element only) and single bonds, for matching."""
    bare = Chem.RWMol()
    for atom in mol.GetAtoms():
        bare.AddAtom(Chem.Atom(atom.GetAtomicNum()))
    for bond in mol.GetBonds():
        bare.AddBond(bond.GetBeginAtomIdx(), bond.GetEndAtomIdx(), Chem.BondType.SINGLE)
    graph = bare.GetMol()
    graph.UpdatePropertyCache(strict=False)
    Chem.FastFindRings(graph)
    return graph


#: How the coordinates' bonds are found, tried in order: RDKit's default connect-the-dots
#: method (``None``), then bond-length thresholds as multiples of the summed covalent radii,
#: tighter ones first for strained cages (where a 1.9-2.0 Å transannular contact would
#: otherwise count as a bond), then looser ones for stretched bonds.
COVALENT_FACTORS: tuple[float | None, ...] = (None, 1.2, 1.15, 1.1, 1.25, 1.3, 1.35)
_FACTOR_RANGE = "1.1-1.35"


def _match_connectivity(geometry: Chem.RWMol, template: Chem.Mol) -> tuple[int, ...] | None:
    """An element-preserving isomorphism from ``template``'s graph onto the coordinates' bonds.

    Tries each of :data:`COVALENT_FACTORS`; the first threshold whose bonds form a graph
    isomorphic to the template's gives the match (``match[i]``: the coordinate row of template
    atom ``i``). ``None`` when no threshold does.
    """
    target = _bare_graph(template)
    for factor in COVALENT_FACTORS:
        candidate = Chem.RWMol(geometry)
        if factor is None:
            rdDetermineBonds.DetermineConnectivity(candidate, useHueckel=False)
        else:
            rdDetermineBonds.DetermineConnectivity(candidate, covFactor=factor, useVdw=True)
        if candidate.GetNumBonds() != template.GetNumBonds():
            continue
        # Same number of atoms and bonds: a substructure match is an isomorphism.
        match = _bare_graph(candidate).GetSubstructMatch(target)
        if len(match) == template.GetNumAtoms():
            return tuple(match)
    return None


def mol_from_smiles_and_xyz(
    smiles: str,
    elements: list[str],
    coords: list[tuple[float, float, float]],
    label: str = "<qm9pack>",
) -> Chem.Mol:
    """The SMILES's molecule, hydrogens explicit, on the given coordinates (see the module).

    Returns:
        A sanitised molecule whose atom ``i`` is ``elements[i]`` at ``coords[i]`` (one 3D
        conformer), with the SMILES's bonds, charges and aromaticity and stereo labels from
        the geometry.

    Raises:
        InvalidSmilesError: The SMILES does not parse or sanitise.
        CompositionMismatchError: Its atoms with hydrogens are not ``elements``.
        ConnectivityMismatchError: The coordinates' bonds are another graph.
    """
    with quiet_rdkit() as log:
        template = Chem.MolFromSmiles(smiles.strip())
        if template is None:
            detail = log.summary()
            raise InvalidSmilesError(
                f"{label}: cannot parse SMILES {smiles!r}"
                + (f" (RDKit: {detail})" if detail else "")
            )
        template = Chem.AddHs(template)
        wanted = Counter(atom.GetSymbol() for atom in template.GetAtoms())
        if wanted != Counter(elements):
            raise CompositionMismatchError(
                f"{label}: SMILES {smiles!r} has atoms {dict(sorted(wanted.items()))}, the "
                f"coordinates {dict(sorted(Counter(elements).items()))}"
            )
        geometry = Chem.RWMol()
        for symbol in elements:
            geometry.AddAtom(Chem.Atom(symbol))
        conformer = Chem.Conformer(len(elements))
        for i, xyz in enumerate(coords):
            conformer.SetAtomPosition(i, Point3D(*xyz))
        conformer.Set3D(True)
        geometry.AddConformer(conformer, assignId=True)
        match = _match_connectivity(geometry, template)
        if match is None:
            raise ConnectivityMismatchError(
                f"{label}: neither RDKit's connect-the-dots bonds nor a bond-length threshold "
                f"of {_FACTOR_RANGE} x the covalent radii make the coordinates the graph of SMILES "
                f"{smiles!r} "
                f"({template.GetNumBonds()} bonds)"
            )
        # match[i] is the coordinate row of SMILES atom i; RenumberAtoms wants, for each new
        # position, the old index that goes there.
        order = [0] * len(match)
        for smiles_atom, row in enumerate(match):
            order[row] = smiles_atom
        mol = Chem.RenumberAtoms(template, order)
        mol.RemoveAllConformers()
        mol.AddConformer(Chem.Conformer(conformer), assignId=True)
        Chem.AssignStereochemistryFrom3D(mol)
    return mol


def row_molecule(row: QM9PackRow) -> Chem.Mol:
    """The molecule of a row (:func:`mol_from_smiles_and_xyz` on its fields)."""
    elements, coords = row_atoms(row)
    label = f"{row.label} (gdb_{row.fields['Index'].strip()})"
    return mol_from_smiles_and_xyz(row.fields["SMILES"], elements, coords, label)


def iter_qm9pack_file(path: str | Path) -> Iterator[SourceEntry]:
    """Source entries of a qm9pack CSV for ``molssl prepare``: the DFT geometry kept.

    ``source_id`` is ``gdb_<Index>``. Rows fail with the reasons of the module docstring.
    """
    for row in iter_qm9pack_rows(path):
        source_id = f"{Path(row.source).name}:{row.index}"
        try:
            source_id = f"gdb_{gdb_index_of(row)}"
            mol = row_molecule(row)
        except MoleculeError as error:
            yield SourceEntry(row.source, row.index, row.line, source_id, failure=error)
            continue
        yield SourceEntry(row.source, row.index, row.line, source_id, mol=mol)

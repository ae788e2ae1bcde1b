"""PubChemQC B3LYP/6-31G*//PM6 per-molecule JSON (``.json``, ``.json.gz``, or a directory).

Layout read (Nakata & Maeda, J. Chem. Inf. Model. 63, 5734 (2023); key paths as used by the
dataset authors' own scripts, github.com/nakatamaho/pubchemqc_b3lyp_pm6,
``b3lyp_pm6_dataplot/*/json2csv_b3lyp_pm6.py``, and by third-party readers of the released
``Compound_*.tar.xz`` archives)::

    {"pubchem": {
        "cid": 1,                         # PubChem CID -> source_id
        "charge": 0,                      # total charge (optional, default 0)
        "multiplicity": 1,                # spin multiplicity (optional, default 1)
        "B3LYP@PM6": {
            "atoms": {
                "elements": {"number": [6, 6, 8, ..., 1]},      # atomic numbers, H included
                "coords": {"3d": [x0, y0, z0, x1, y1, z1, ...]}  # final geometry, Angstrom
            },
            "bonds": {
                "connections": {"index": [1, 2, 1, 5, ...]},     # 1-based atom pairs, flat
                "order": [1, 2, ...]                              # one per pair
            },
            "properties": {...}, "openbabel": {...}, ...
        },
        ...}}

The database export wraps the same object as ``{"cid": ..., "data": {"pubchem": ...}}``;
both forms are read. One file is one molecule (``index`` 0, ``line`` 1); the file is parsed
whole, which is fine for one molecule (its orbital data included).

The molecule is built from the atoms and bonds with the DFT coordinates as its one conformer;
every hydrogen is an explicit atom. The layout has no per-atom formal charges, so the bond
orders as given (1, 2, 3) are tried first with neutral atoms, and kept when they sanitise and
agree with the total charge and multiplicity. Otherwise (charged groups such as nitro or
zwitterions, or bond order codes other than 1-3) bond orders and formal charges are perceived
from the connectivity and the total charge (``rdDetermineBonds.DetermineBondOrders``).

Failures: ``truncated_file`` (a gzip stream that ends early), ``invalid_json`` (text that is not
JSON, e.g. a cut file), ``invalid_record`` (a missing key, named as a path, or values of the
wrong shape; or bond orders that cannot be perceived), ``no_3d_coordinates``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rdkit import Chem
from rdkit.Chem import rdDetermineBonds
from rdkit.Geometry import Point3D

from molssl.chem.errors import MoleculeError
from molssl.chem.rdkit_log import quiet_rdkit
from molssl.datamodules.sources.coordinates import check_3d
from molssl.datamodules.sources.entry import SourceEntry, SourceRecordError, default_source_id
from molssl.datamodules.sources.textio import TRUNCATION_ERRORS, open_text

__all__ = ["iter_pubchemqc_file", "mol_from_pubchemqc"]

_METHOD = "B3LYP@PM6"
_BOND_TYPES = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
# Bound on the bond-order search of one molecule, so a pathological one fails instead of hanging.
_MAX_PERCEPTION_ITERATIONS = 1_000_000


def iter_pubchemqc_file(path: str | Path) -> Iterator[SourceEntry]:
    """The one entry of a PubChemQC JSON file."""
    source = str(path)
    try:
        with open_text(Path(path)) as handle:
            document = json.load(handle)
    except TRUNCATION_ERRORS as error:
        failure: MoleculeError = SourceRecordError(
            f"{source}: compressed stream ends early ({error})", reason="truncated_file"
        )
        yield SourceEntry(source, 0, 1, default_source_id(source, 0), failure=failure)
        return
    except json.JSONDecodeError as error:
        failure = SourceRecordError(f"{source}: not valid JSON ({error})", reason="invalid_json")
        yield SourceEntry(source, 0, 1, default_source_id(source, 0), failure=failure)
        return
    record = _pubchem_object(document)
    cid = record.get("cid") if isinstance(record, dict) else None
    source_id = str(cid) if cid is not None else default_source_id(source, 0)
    try:
        mol = mol_from_pubchemqc(document, label=source)
    except MoleculeError as error:
        yield SourceEntry(source, 0, 1, source_id, failure=error)
        return
    yield SourceEntry(source, 0, 1, source_id, mol=mol)


def _pubchem_object(document: Any) -> Any:
    if isinstance(document, dict) and "pubchem" not in document:
        data = document.get("data")
        if isinstance(data, dict) and "pubchem" in data:
            return data["pubchem"]
    return document.get("pubchem") if isinstance(document, dict) else None


def _get(record: Any, path: tuple[str, ...], label: str) -> Any:
    # `record` is the "pubchem" object; missing keys are named by their full path.
    obj = record
    for depth, key in enumerate(path):
        if not isinstance(obj, dict) or key not in obj:
            named = "/".join(("pubchem", *path[: depth + 1]))
            raise SourceRecordError(f"{label}: missing key {named!r}", reason="invalid_record")
        obj = obj[key]
    return obj


def _int_list(value: Any, name: str, label: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise SourceRecordError(f"{label}: {name} must be a list of integers")
    return value


def mol_from_pubchemqc(document: dict[str, Any], label: str = "<json>") -> Chem.Mol:
    """Build the molecule of one PubChemQC B3LYP@PM6 JSON document (see the module layout).

    Returns:
        A sanitised molecule with explicit hydrogens and one conformer (the DFT geometry).

    Raises:
        SourceRecordError: ``invalid_record`` (missing key, bad shapes, unperceivable bond
            orders) or ``no_3d_coordinates``.
    """
    record = _pubchem_object(document)
    if isinstance(document, list):
        raise SourceRecordError(
            f"{label}: a JSON array of {len(document)} item(s); a PubChemQC file holds one "
            "molecule, an object with the key 'pubchem' (split the array into one file each)"
        )
    if record is None:
        raise SourceRecordError(f"{label}: missing key 'pubchem'")
    numbers = _int_list(
        _get(record, (_METHOD, "atoms", "elements", "number"), label),
        "atoms/elements/number",
        label,
    )
    coords = _get(record, (_METHOD, "atoms", "coords", "3d"), label)
    pairs = _int_list(
        _get(record, (_METHOD, "bonds", "connections", "index"), label),
        "bonds/connections/index",
        label,
    )
    orders = _get(record, (_METHOD, "bonds", "order"), label)
    charge = record.get("charge", 0)
    multiplicity = record.get("multiplicity", 1)
    n = len(numbers)
    if n == 0 or not all(1 <= z <= 118 for z in numbers):
        raise SourceRecordError(f"{label}: atoms/elements/number must be atomic numbers 1-118")
    if not isinstance(coords, list) or len(coords) != 3 * n:
        raise SourceRecordError(f"{label}: atoms/coords/3d must hold 3 x {n} numbers")
    if not all(isinstance(c, int | float) and not isinstance(c, bool) for c in coords):
        raise SourceRecordError(f"{label}: atoms/coords/3d must be numbers")
    if not isinstance(orders, list) or len(pairs) != 2 * len(orders):
        raise SourceRecordError(
            f"{label}: bonds/connections/index ({len(pairs)} values) must hold two atoms per "
            f"entry of bonds/order"
        )
    if not all(1 <= i <= n for i in pairs):
        raise SourceRecordError(f"{label}: bonds/connections/index must be 1-based atom numbers")
    if not isinstance(charge, int) or not isinstance(multiplicity, int) or multiplicity < 1:
        raise SourceRecordError(f"{label}: charge and multiplicity must be integers")

    mol = Chem.RWMol()
    for z in numbers:
        atom = Chem.Atom(z)
        atom.SetNoImplicit(True)  # every hydrogen of a DFT geometry is an atom of the file
        mol.AddAtom(atom)
    bonded: set[tuple[int, int]] = set()
    for k, order in enumerate(orders):
        i, j = pairs[2 * k] - 1, pairs[2 * k + 1] - 1
        key = (min(i, j), max(i, j))
        if i == j or key in bonded:
            raise SourceRecordError(f"{label}: bond {k} ({i + 1}-{j + 1}) repeats or is a loop")
        bonded.add(key)
        mol.AddBond(i, j, _BOND_TYPES.get(order, Chem.BondType.SINGLE))
    conformer = Chem.Conformer(n)
    for i in range(n):
        conformer.SetAtomPosition(i, Point3D(*(float(c) for c in coords[3 * i : 3 * i + 3])))
    conformer.Set3D(True)
    mol.AddConformer(conformer, assignId=True)
    check_3d(mol, label, tagged_3d=True)
    known_orders = all(order in _BOND_TYPES for order in orders)
    as_given = _sanitised(mol.GetMol()) if known_orders else None
    if as_given is not None and _fits(as_given, charge, multiplicity):
        return as_given
    return _perceive(mol.GetMol(), charge, label)


def _sanitised(mol: Chem.Mol) -> Chem.Mol | None:
    candidate = Chem.Mol(mol)
    with quiet_rdkit():
        try:
            Chem.SanitizeMol(candidate)
        except Exception:  # RDKit raises several types; any of them means "not as given"
            return None
    return candidate


def _fits(mol: Chem.Mol, charge: int, multiplicity: int) -> bool:
    formal = sum(atom.GetFormalCharge() for atom in mol.GetAtoms())
    radicals = sum(atom.GetNumRadicalElectrons() for atom in mol.GetAtoms())
    return formal == charge and radicals == multiplicity - 1


def _perceive(mol: Chem.Mol, charge: int, label: str) -> Chem.Mol:
    candidate = Chem.RWMol(mol)
    for bond in candidate.GetBonds():
        bond.SetBondType(Chem.BondType.SINGLE)
    with quiet_rdkit() as log:
        try:
            rdDetermineBonds.DetermineBondOrders(
                candidate,
                charge=charge,
                allowChargedFragments=True,
                embedChiral=False,
                maxIterations=_MAX_PERCEPTION_ITERATIONS,
            )
            Chem.SanitizeMol(candidate)
        except Exception as error:  # RDKit raises several unrelated types here
            detail = str(error).strip() or log.summary() or type(error).__name__
            raise SourceRecordError(
                f"{label}: the bond orders as given do not fit the total charge {charge}, and "
                f"none could be perceived ({detail})"
            ) from None
    return candidate.GetMol()

"""RDKit molecules → categorical atom/bond features and PyG ``Data``.

Every feature is a categorical index whose last bucket is "other", so an unseen value never
crashes an embedding lookup; the exact atomic number is always kept in ``z``.

Atom columns of ``x`` (:data:`ATOM_FEATURE_NAMES`): element, degree, formal charge,
hybridization, aromatic, total hydrogen count, chirality tag. The degree counts the neighbours
in the graph as given (hydrogens included when they are explicit atoms); the hydrogen count is
the same whether hydrogens are explicit atoms or not.
Bond columns of ``edge_attr`` (:data:`BOND_FEATURE_NAMES`): bond type, conjugated, in ring,
stereo.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np
import torch
from rdkit import Chem
from torch import Tensor
from torch_geometric.data import Data

from molssl.chem.conformers import ConformerOptions, embed_conformers
from molssl.chem.errors import (
    InvalidSmilesError,
    MoleculeTooLargeError,
    NoHeavyAtomError,
    UnsupportedElementError,
)
from molssl.chem.rdkit_log import quiet_rdkit

__all__ = [
    "ATOM_FEATURE_DIMS",
    "ATOM_FEATURE_NAMES",
    "BOND_FEATURE_DIMS",
    "BOND_FEATURE_NAMES",
    "CHIRAL_CCW",
    "CHIRAL_CW",
    "ELEMENTS",
    "HYDROGEN_CLASS",
    "NUM_ELEMENT_CLASSES",
    "atom_feature_matrix",
    "bond_feature_matrix",
    "degree_category",
    "element_index",
    "featurize_smiles",
    "mol_from_smiles",
    "mol_to_data",
    "prepare_mol",
]

#: Atomic numbers with their own element class: organic and drug-like elements, halogens and
#: the counter-ions common in screening libraries. Anything else is class ``len(ELEMENTS)``.
ELEMENTS: tuple[int, ...] = (
    1, 3, 5, 6, 7, 8, 9, 11, 12, 14, 15, 16, 17, 19, 20, 26, 29, 30, 33, 34, 35, 50, 53,
)  # fmt: skip
NUM_ELEMENT_CLASSES = len(ELEMENTS) + 1

_DEGREES = (0, 1, 2, 3, 4, 5, 6)
_FORMAL_CHARGES = (-2, -1, 0, 1, 2)
_HYBRIDIZATIONS = (
    Chem.HybridizationType.S,
    Chem.HybridizationType.SP,
    Chem.HybridizationType.SP2,
    Chem.HybridizationType.SP3,
    Chem.HybridizationType.SP3D,
    Chem.HybridizationType.SP3D2,
)
_NUM_HS = (0, 1, 2, 3, 4)
_CHIRALITIES = (
    Chem.ChiralType.CHI_UNSPECIFIED,
    Chem.ChiralType.CHI_TETRAHEDRAL_CW,
    Chem.ChiralType.CHI_TETRAHEDRAL_CCW,
)
_BOND_TYPES = (
    Chem.BondType.SINGLE,
    Chem.BondType.DOUBLE,
    Chem.BondType.TRIPLE,
    Chem.BondType.AROMATIC,
)
_BOND_STEREOS = (
    Chem.BondStereo.STEREONONE,
    Chem.BondStereo.STEREOANY,
    Chem.BondStereo.STEREOZ,
    Chem.BondStereo.STEREOE,
    Chem.BondStereo.STEREOCIS,
    Chem.BondStereo.STEREOTRANS,
)

ATOM_FEATURE_NAMES = (
    "element",
    "degree",
    "formal_charge",
    "hybridization",
    "aromatic",
    "num_hs",
    "chirality",
)
ATOM_FEATURE_DIMS: tuple[int, ...] = (
    NUM_ELEMENT_CLASSES,
    len(_DEGREES) + 1,
    len(_FORMAL_CHARGES) + 1,
    len(_HYBRIDIZATIONS) + 1,
    2,
    len(_NUM_HS) + 1,
    len(_CHIRALITIES) + 1,
)
BOND_FEATURE_NAMES = ("bond_type", "conjugated", "in_ring", "stereo")
BOND_FEATURE_DIMS: tuple[int, ...] = (len(_BOND_TYPES) + 1, 2, 2, len(_BOND_STEREOS) + 1)


class _EnumIndex(dict):
    """Categorical index of each listed RDKit enum value; any other value is the last bucket.

    Used as ``map(table.__getitem__, values)``: a dict lookup per value, with no Python-level
    branch for the "other" case.
    """

    def __init__(self, values: tuple) -> None:
        super().__init__((value, index) for index, value in enumerate(values))
        self.other = len(values)

    def __missing__(self, key: object) -> int:
        return self.other


class _IntIndex:
    """Categorical index of integers from a list (e.g. formal charges), vectorised.

    ``self(column)`` maps each listed value to its position and everything else to
    ``len(values)`` (the "other" bucket): one ``take`` from a table over ``[min - 1, max + 1]``
    whose two end cells are "other", so clipping the shifted values sends anything out of
    range to them.
    """

    def __init__(self, values: tuple[int, ...]) -> None:
        self.offset = 1 - min(values)
        self.table = np.full(max(values) + self.offset + 2, len(values), dtype=np.int64)
        self.table[np.asarray(values) + self.offset] = np.arange(len(values))

    def __call__(self, column: np.ndarray) -> np.ndarray:
        return self.table.take(column + self.offset, mode="clip")


_ELEMENT_INDEX = _IntIndex(ELEMENTS)
_DEGREE_INDEX = _IntIndex(_DEGREES)
_CHARGE_INDEX = _IntIndex(_FORMAL_CHARGES)
_HYBRID_INDEX = _EnumIndex(_HYBRIDIZATIONS)
_NUM_HS_INDEX = _IntIndex(_NUM_HS)
_CHIRAL_INDEX = _EnumIndex(_CHIRALITIES)
_BOND_TYPE_INDEX = _EnumIndex(_BOND_TYPES)
_STEREO_INDEX = _EnumIndex(_BOND_STEREOS)

#: Element class of hydrogen (column 0 of ``x``).
HYDROGEN_CLASS = int(_ELEMENT_INDEX(np.array([1]))[0])
#: Chirality-column classes of RDKit's tetrahedral tags (relative to the atom's bond order).
CHIRAL_CW = _CHIRAL_INDEX[Chem.ChiralType.CHI_TETRAHEDRAL_CW]
CHIRAL_CCW = _CHIRAL_INDEX[Chem.ChiralType.CHI_TETRAHEDRAL_CCW]


def degree_category(degree: np.ndarray) -> np.ndarray:
    """The degree column of ``x`` for these neighbour counts (the last class for 7 or more)."""
    return _DEGREE_INDEX(np.asarray(degree, dtype=np.int64))


# Dense atomic-number → element-class table, for the per-batch lookups of masking objectives.
_Z_TO_ELEMENT = torch.full((119,), len(ELEMENTS), dtype=torch.long)
_Z_TO_ELEMENT[list(ELEMENTS)] = torch.arange(len(ELEMENTS))


def element_index(z: Tensor) -> Tensor:
    """Element class of each atomic number (``len(ELEMENTS)`` for "other")."""
    table = _Z_TO_ELEMENT.to(z.device)
    return table[z.clamp(0, table.numel() - 1)]


def mol_from_smiles(
    smiles: str, add_hs: bool = True, max_heavy_atoms: int | None = 150
) -> Chem.Mol:
    """Parses and sanitises a SMILES string.

    Args:
        smiles: One SMILES, nothing else: surrounding whitespace is ignored, whitespace inside
            is refused. RDKit reads ``"c1ccccc1 O"`` as benzene named ``O``, which is right
            for a ``.smi`` line but turns a CSV cell holding phenol into benzene (and its label
            onto the wrong molecule); a ``.smi`` reader splits the name off first.
        add_hs: Make hydrogens explicit atoms (needed for 3D work).
        max_heavy_atoms: Reject larger molecules; ``None`` for no limit.

    Raises:
        InvalidSmilesError: Missing input (``None``, NaN from a CSV column, blank text: reason
            ``empty_input``), something that is not a string, text with whitespace inside
            (``invalid_smiles``), or a SMILES RDKit cannot parse or sanitise
            (``invalid_smiles``; the message carries RDKit's explanation).
        UnsupportedElementError: Dummy atoms (``*``) or atomic number 0.
        NoHeavyAtomError: Only hydrogens.
        MoleculeTooLargeError: More than ``max_heavy_atoms`` heavy atoms.
    """
    if _is_missing(smiles):
        raise InvalidSmilesError(f"empty SMILES: {smiles!r}", reason="empty_input")
    if not isinstance(smiles, str):
        raise InvalidSmilesError(f"expected a SMILES string, got {type(smiles).__name__}")
    text = smiles.strip()
    if any(character.isspace() for character in text):
        raise InvalidSmilesError(
            f"SMILES {text!r} contains whitespace: a SMILES is one word (RDKit would read the "
            "rest as a name and keep only the first part); put a name in its own column"
        )
    with quiet_rdkit() as log:
        mol = Chem.MolFromSmiles(text, sanitize=False)
        if mol is None:
            raise InvalidSmilesError(_with_detail(f"cannot parse SMILES {text!r}", log.summary()))
        try:
            Chem.SanitizeMol(mol)
        except Exception as error:  # RDKit raises several unrelated exception types here
            raise InvalidSmilesError(f"cannot sanitise SMILES {text!r}: {error}") from None
        # What MolFromSmiles does after sanitising: without it, no double bond gets its E/Z
        # label and '@' marks on atoms that are not stereocentres survive.
        Chem.AssignStereochemistry(mol, cleanIt=True, force=True)
    return prepare_mol(mol, add_hs=add_hs, max_heavy_atoms=max_heavy_atoms, name=text)


def _is_missing(smiles: object) -> bool:
    if smiles is None:
        return True
    if isinstance(smiles, float) and math.isnan(smiles):
        return True
    return isinstance(smiles, str) and not smiles.strip()


def _with_detail(message: str, detail: str) -> str:
    return f"{message} (RDKit: {detail})" if detail else message


def prepare_mol(
    mol: Chem.Mol,
    add_hs: bool = True,
    max_heavy_atoms: int | None = 150,
    name: str | None = None,
) -> Chem.Mol:
    """Checks a sanitised molecule against the pipeline's limits and adds hydrogens.

    Raises the same typed errors as :func:`mol_from_smiles`, naming the molecule by ``name``.
    """
    label = name if name is not None else Chem.MolToSmiles(mol)
    if any(atom.GetAtomicNum() == 0 for atom in mol.GetAtoms()):
        raise UnsupportedElementError(f"dummy atom (atomic number 0) in {label!r}")
    heavy = sum(1 for atom in mol.GetAtoms() if atom.GetAtomicNum() > 1)
    if heavy == 0:
        raise NoHeavyAtomError(f"no heavy atom in {label!r}")
    if max_heavy_atoms is not None and heavy > max_heavy_atoms:
        raise MoleculeTooLargeError(
            f"{heavy} heavy atoms in {label!r}, more than the limit of {max_heavy_atoms}"
        )
    return Chem.AddHs(mol) if add_hs else Chem.RemoveHs(mol)


# Unbound methods mapped over atom / bond lists: about half the cost per call of a
# comprehension calling ``atom.Method()``, which is what these functions spend their time on.
_Atom, _Bond = Chem.Atom, Chem.Bond


def _bond_arrays(mol: Chem.Mol) -> tuple[np.ndarray, np.ndarray, list[Chem.Bond]]:
    """Begin and end atom of every bond (``mol.GetBonds()`` order), and the bonds."""
    # Indexed access: iterating mol.GetBonds() goes through a slow Python sequence wrapper.
    bonds = list(map(mol.GetBondWithIdx, range(mol.GetNumBonds())))
    count = len(bonds)
    begin = np.fromiter(map(_Bond.GetBeginAtomIdx, bonds), dtype=np.int64, count=count)
    end = np.fromiter(map(_Bond.GetEndAtomIdx, bonds), dtype=np.int64, count=count)
    return begin, end, bonds


def _atom_arrays(
    mol: Chem.Mol, begin: np.ndarray, end: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Atomic numbers ``(N,)`` and the feature matrix ``(N, 7)`` of ``mol``'s atoms."""
    atoms = list(map(mol.GetAtomWithIdx, range(mol.GetNumAtoms())))
    count = len(atoms)

    def column(values: Iterator[int]) -> np.ndarray:
        return np.fromiter(values, dtype=np.int64, count=count)

    z = column(map(_Atom.GetAtomicNum, atoms))
    # An atom's degree is its number of bonds (what Atom.GetDegree counts), so it comes
    # from the bond list without one more call per atom.
    degree = np.bincount(np.concatenate([begin, end]), minlength=count)
    include_neighbours = itertools.repeat(True, count)
    x = np.stack(
        [
            _ELEMENT_INDEX(z),
            _DEGREE_INDEX(degree),
            _CHARGE_INDEX(column(map(_Atom.GetFormalCharge, atoms))),
            column(map(_HYBRID_INDEX.__getitem__, map(_Atom.GetHybridization, atoms))),
            column(map(_Atom.GetIsAromatic, atoms)),
            _NUM_HS_INDEX(column(map(_Atom.GetTotalNumHs, atoms, include_neighbours))),
            column(map(_CHIRAL_INDEX.__getitem__, map(_Atom.GetChiralTag, atoms))),
        ],
        axis=1,
    ).reshape(count, len(ATOM_FEATURE_DIMS))
    return z, x


def atom_feature_matrix(mol: Chem.Mol) -> np.ndarray:
    """``(N, 7)`` int64 categorical atom features, columns as :data:`ATOM_FEATURE_NAMES`."""
    begin, end, _ = _bond_arrays(mol)
    return _atom_arrays(mol, begin, end)[1]


def _directed_bonds(
    begin: np.ndarray, end: np.ndarray, bonds: list[Chem.Bond]
) -> tuple[np.ndarray, np.ndarray]:
    count = len(bonds)

    def column(values: Iterator[int]) -> np.ndarray:
        return np.fromiter(values, dtype=np.int64, count=count)

    attr = np.stack(
        [
            column(map(_BOND_TYPE_INDEX.__getitem__, map(_Bond.GetBondType, bonds))),
            column(map(_Bond.GetIsConjugated, bonds)),
            column(map(_Bond.IsInRing, bonds)),
            column(map(_STEREO_INDEX.__getitem__, map(_Bond.GetStereo, bonds))),
        ],
        axis=1,
    ).reshape(count, len(BOND_FEATURE_DIMS))
    edge_index = np.empty((2, 2 * count), dtype=np.int64)
    edge_index[0, 0::2], edge_index[1, 0::2] = begin, end
    edge_index[0, 1::2], edge_index[1, 1::2] = end, begin
    return edge_index, np.repeat(attr, 2, axis=0)


def bond_feature_matrix(mol: Chem.Mol) -> tuple[np.ndarray, np.ndarray]:
    """Directed bonds of ``mol``.

    Returns:
        ``edge_index`` ``(2, 2B)`` int64 and ``edge_attr`` ``(2B, 4)`` int64: bond ``b`` appears
        as columns ``2b`` (begin → end) and ``2b + 1`` (end → begin), in ``mol.GetBonds()`` order.
    """
    return _directed_bonds(*_bond_arrays(mol))


def mol_to_data(mol: Chem.Mol, conf_id: int | None = None) -> Data:
    """One molecule as a PyG ``Data``.

    Args:
        mol: A sanitised molecule (explicit hydrogens are kept as atoms).
        conf_id: Conformer whose coordinates become ``pos``; ``-1`` is RDKit's default
            conformer; ``None`` gives a 2D-only ``Data`` without ``pos``.

    Returns:
        ``Data`` with ``z`` (N,), ``x`` (N, 7), ``edge_index`` (2, E), ``edge_attr`` (E, 4),
        ``pos`` (N, 3) float32 when a conformer is asked for, ``num_nodes`` and ``smiles``.

    Raises:
        ValueError: ``conf_id`` names a conformer the molecule does not have.
    """
    begin, end, bonds = _bond_arrays(mol)
    z, x = _atom_arrays(mol, begin, end)
    edge_index, edge_attr = _directed_bonds(begin, end, bonds)
    data = Data(
        z=torch.from_numpy(z),
        x=torch.from_numpy(x),
        edge_index=torch.from_numpy(edge_index),
        edge_attr=torch.from_numpy(edge_attr),
        num_nodes=mol.GetNumAtoms(),
        smiles=Chem.MolToSmiles(Chem.RemoveHs(mol, sanitize=False)),
    )
    if conf_id is not None:
        if mol.GetNumConformers() == 0:
            raise ValueError("mol_to_data: conf_id given but the molecule has no conformer")
        try:
            conformer = mol.GetConformer(conf_id)
        except ValueError:
            raise ValueError(f"mol_to_data: the molecule has no conformer {conf_id}") from None
        data.pos = torch.from_numpy(np.asarray(conformer.GetPositions(), dtype=np.float32))
    return data


def featurize_smiles(
    smiles: str,
    options: ConformerOptions | None = None,
    max_heavy_atoms: int | None = 150,
) -> Data:
    """SMILES → parse and check → embed conformers → ``Data`` with ``pos`` of conformer 0.

    Hydrogens are explicit atoms. For several conformers per molecule, call
    :func:`~molssl.chem.conformers.embed_conformers` and :func:`mol_to_data` per conformer.

    Args:
        smiles: The SMILES string.
        options: Conformer settings; ``None`` for the defaults of ``ConformerOptions``.
        max_heavy_atoms: Reject larger molecules; ``None`` for no limit.

    Raises:
        MoleculeError: Only subclasses of it, each with a ``reason`` code: those of
            :func:`mol_from_smiles` and of :func:`~molssl.chem.conformers.embed_conformers`.
    """
    mol = mol_from_smiles(smiles, add_hs=True, max_heavy_atoms=max_heavy_atoms)
    return mol_to_data(embed_conformers(mol, options), conf_id=0)

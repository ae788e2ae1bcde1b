"""Pre-training molecule records: what is computed once per molecule, stored without pickle.

A :class:`MoleculeRecord` holds, as plain NumPy arrays, everything the pre-training pipeline
needs from RDKit: atom and bond features, the conformers, BRICS fragment labels and the
rotatable torsions with the atoms each one moves. RDKit is never called again after
preparation: :meth:`MoleculeRecord.to_data` builds the per-sample PyG ``Data`` from the
arrays, and the views (torsion augmentation, noise, masks) work on that.

Many records are stored in one ``.npz`` of concatenated arrays plus per-molecule offsets
(:func:`save_records`, :func:`load_records`); strings are a fixed-width unicode array, so the
file loads with ``allow_pickle=False``. :class:`PackedRecords` keeps those few large arrays
and slices a record out on access, which is cheap to share with data-loader workers.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import numpy as np
import torch
from rdkit import Chem
from torch_geometric.data import Data

from molssl.chem.conformers import ConformerOptions, conformer_positions, embed_conformers
from molssl.chem.errors import MoleculeError
from molssl.chem.features import mol_from_smiles, mol_to_data
from molssl.chem.fragments import brics_fragment_labels
from molssl.chem.torsions import rotatable_torsions, torsion_moving_masks

__all__ = [
    "RECORD_FORMAT_VERSION",
    "MoleculeRecord",
    "PackedRecords",
    "RecordsFormatError",
    "load_records",
    "pack_records",
    "record_from_mol",
    "record_from_smiles",
    "save_records",
]

#: Bumped whenever what a record holds or how it is computed changes; part of cache keys.
RECORD_FORMAT_VERSION = 1

# Per-atom arrays of the packed file, indexed by ``atom_ptr``.
_ATOM_KEYS = ("z", "x", "fragment")


class RecordsFormatError(ValueError):
    """A file that is not a readable molssl records ``.npz`` of the current format."""


@dataclass(eq=False)  # field-wise == on arrays is ambiguous; compare arrays explicitly
class MoleculeRecord:
    """One prepared molecule (hydrogens explicit), as NumPy arrays.

    Attributes:
        smiles: Canonical heavy-atom SMILES (as in :func:`~molssl.chem.features.mol_to_data`).
        mol_id: Index of the molecule in its source; stays attached to the molecule whatever
            failed before it, so labels and records never shift.
        z: ``(N,)`` int64 atomic numbers.
        x: ``(N, 7)`` int64 categorical atom features.
        edge_index: ``(2, E)`` int64, both directions of every bond.
        edge_attr: ``(E, 4)`` int64 categorical bond features.
        conformers: ``(K, N, 3)`` float32 coordinates in Å, ``K >= 1``.
        fragment: ``(N,)`` int64 BRICS fragment label of every atom.
        torsion_atoms: ``(T, 4)`` int64 rotatable torsions ``(i, j, k, l)``.
        torsion_moving: ``(T, N)`` bool, the atoms rotating with each torsion.
    """

    smiles: str
    mol_id: int
    z: np.ndarray
    x: np.ndarray
    edge_index: np.ndarray
    edge_attr: np.ndarray
    conformers: np.ndarray
    fragment: np.ndarray
    torsion_atoms: np.ndarray
    torsion_moving: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.z)
        e = self.edge_attr.shape[0] if self.edge_attr.ndim > 0 else -1
        expected = {
            "x": (n, 7),
            "edge_index": (2, e),
            "edge_attr": (e, 4),
            "conformers": (max(len(self.conformers), 1), n, 3),
            "fragment": (n,),
            "torsion_atoms": (len(self.torsion_atoms), 4),
            "torsion_moving": (len(self.torsion_atoms), n),
        }
        for key, shape in expected.items():
            actual = getattr(self, key).shape
            if actual != shape:
                raise ValueError(
                    f"MoleculeRecord {self.mol_id} ({self.smiles!r}): {key} has shape {actual}, "
                    f"expected {shape} for {n} atoms"
                )

    @property
    def num_atoms(self) -> int:
        """Number of atoms ``N``, hydrogens included."""
        return len(self.z)

    @property
    def num_conformers(self) -> int:
        """Number of stored conformers ``K``."""
        return len(self.conformers)

    def to_data(self, conformer: int = 0) -> Data:
        """The per-sample ``Data`` of the pre-training dataset, before views.

        Keys: ``z``, ``x``, ``edge_index``, ``edge_attr``, ``pos`` (N, 3) float32 from conformer
        ``conformer``, ``fragment``, ``torsion_atoms``, ``torsion_moving``, ``smiles``,
        ``mol_id`` (0-d long, so a batch holds one per molecule) and ``num_nodes``. Every
        tensor owns its memory: changing it never changes the record.

        Raises:
            IndexError: ``conformer`` is not in ``[0, K)``.
        """
        if not 0 <= conformer < self.num_conformers:
            raise IndexError(
                f"conformer {conformer} out of range: molecule {self.mol_id} has "
                f"{self.num_conformers} conformer(s)"
            )
        return Data(
            z=_tensor(self.z, torch.long),
            x=_tensor(self.x, torch.long),
            edge_index=_tensor(self.edge_index, torch.long),
            edge_attr=_tensor(self.edge_attr, torch.long),
            pos=_tensor(self.conformers[conformer], torch.float32),
            fragment=_tensor(self.fragment, torch.long),
            torsion_atoms=_tensor(self.torsion_atoms, torch.long),
            torsion_moving=_tensor(self.torsion_moving, torch.bool),
            smiles=self.smiles,
            mol_id=torch.tensor(self.mol_id, dtype=torch.long),
            num_nodes=self.num_atoms,
        )


def _tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    # A copy: records are shared across samples (and with workers), tensors are not.
    return torch.tensor(np.ascontiguousarray(array), dtype=dtype)


def record_from_mol(mol: Chem.Mol, mol_id: int) -> MoleculeRecord:
    """A record from a sanitised molecule that already has its conformers.

    Atom and bond features are read from ``mol`` as it is. RDKit's MMFF94 set-up re-types
    aromaticity in place (e.g. 2-iminothiazoline rings lose their aromatic flags), so prefer
    :func:`record_from_smiles`, which reads the features before the force field runs.

    Args:
        mol: Molecule with explicit hydrogens and at least one conformer (e.g. the output of
            :func:`~molssl.chem.conformers.embed_conformers`).
        mol_id: Index of the molecule in its source.

    Raises:
        MoleculeError: ``no_conformer`` when ``mol`` has none; ``featurization_failed`` when
            RDKit cannot compute fragments or torsions for it.
    """
    return _record(mol, mol, mol_id)


def _record(graph_mol: Chem.Mol, conformer_mol: Chem.Mol, mol_id: int) -> MoleculeRecord:
    # graph_mol and conformer_mol are the same molecule (same atom order); features come
    # from the first, coordinates from the second.
    if conformer_mol.GetNumConformers() == 0:
        raise MoleculeError(
            f"molecule {mol_id} has no conformer; embed one first (embed_conformers)",
            reason="no_conformer",
        )
    graph = mol_to_data(graph_mol)
    try:
        torsions = rotatable_torsions(graph_mol)
        moving = torsion_moving_masks(graph_mol, torsions)
        fragment = brics_fragment_labels(graph_mol)
    except MoleculeError:
        raise
    except (RuntimeError, ValueError) as error:  # RDKit's C++ errors surface as RuntimeError
        raise MoleculeError(
            f"cannot compute fragments or torsions of {graph.smiles!r}: {error}",
            reason="featurization_failed",
        ) from None
    num_atoms = graph_mol.GetNumAtoms()
    return MoleculeRecord(
        smiles=graph.smiles,
        mol_id=int(mol_id),
        z=graph.z.numpy(),
        x=graph.x.numpy(),
        edge_index=graph.edge_index.numpy(),
        edge_attr=graph.edge_attr.numpy(),
        conformers=conformer_positions(conformer_mol).astype(np.float32),
        fragment=np.asarray(fragment, dtype=np.int64),
        torsion_atoms=np.asarray(torsions, dtype=np.int64).reshape(-1, 4),
        torsion_moving=np.asarray(moving, dtype=bool).reshape(len(torsions), num_atoms),
    )


def record_from_smiles(
    smiles: str,
    mol_id: int,
    options: ConformerOptions | None = None,
    max_heavy_atoms: int | None = 150,
) -> MoleculeRecord:
    """Parse, add hydrogens, embed conformers with ``options`` (seed as given), and record.

    Features, fragments and torsions are computed on the sanitised molecule (RDKit's
    aromaticity model), coordinates on its embedded copy.

    Raises:
        MoleculeError: Only subclasses of it, each with a ``reason`` code (those of
            :func:`~molssl.chem.features.mol_from_smiles`,
            :func:`~molssl.chem.conformers.embed_conformers` and :func:`record_from_mol`).
    """
    mol = mol_from_smiles(smiles, add_hs=True, max_heavy_atoms=max_heavy_atoms)
    return _record(mol, embed_conformers(mol, options), mol_id)


class PackedRecords(Sequence[MoleculeRecord]):
    """Many records as concatenated arrays plus offsets; ``records[i]`` slices one out.

    Build with :func:`pack_records` or :func:`load_records`. Records returned by indexing
    are views into the packed arrays: treat them as read-only.
    """

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays
        self._check()
        counts = np.diff(arrays["atom_ptr"])
        conf_sizes = arrays["num_conformers"] * counts
        self._conformer_ptr = np.concatenate([[0], np.cumsum(conf_sizes)]).astype(np.int64)
        torsion_counts = np.diff(arrays["torsion_ptr"])
        self._moving_ptr = np.concatenate([[0], np.cumsum(torsion_counts * counts)]).astype(
            np.int64
        )

    def _check(self) -> None:
        a = self.arrays
        m = len(a["mol_id"])
        for ptr, data_key, axis in (
            ("atom_ptr", "z", 0),
            ("edge_ptr", "edge_attr", 0),
            ("torsion_ptr", "torsion_atoms", 0),
        ):
            offsets = a[ptr]
            if (
                offsets.shape != (m + 1,)
                or offsets[0] != 0
                or offsets[-1] != a[data_key].shape[axis]
                or np.any(np.diff(offsets) < 0)
            ):
                raise RecordsFormatError(f"inconsistent offsets {ptr!r} for {m} molecules")
        if len(a["smiles"]) != m or len(a["num_conformers"]) != m:
            raise RecordsFormatError("smiles / num_conformers do not have one entry per molecule")
        atoms = np.diff(a["atom_ptr"])
        if a["conformers"].shape[0] != int((a["num_conformers"] * atoms).sum()):
            raise RecordsFormatError("conformer rows do not match the atom and conformer counts")
        if a["torsion_moving"].shape[0] != int((np.diff(a["torsion_ptr"]) * atoms).sum()):
            raise RecordsFormatError("torsion_moving does not match the torsion and atom counts")

    def __len__(self) -> int:
        return len(self.arrays["mol_id"])

    @overload
    def __getitem__(self, index: int) -> MoleculeRecord: ...

    @overload
    def __getitem__(self, index: slice) -> list[MoleculeRecord]: ...

    def __getitem__(self, index: int | slice) -> MoleculeRecord | list[MoleculeRecord]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(f"record {index} out of range for {len(self)} records")
        i = index % len(self)
        a = self.arrays
        a0, a1 = a["atom_ptr"][i], a["atom_ptr"][i + 1]
        e0, e1 = a["edge_ptr"][i], a["edge_ptr"][i + 1]
        t0, t1 = a["torsion_ptr"][i], a["torsion_ptr"][i + 1]
        c0, c1 = self._conformer_ptr[i], self._conformer_ptr[i + 1]
        m0, m1 = self._moving_ptr[i], self._moving_ptr[i + 1]
        n = int(a1 - a0)
        return MoleculeRecord(
            smiles=str(a["smiles"][i]),
            mol_id=int(a["mol_id"][i]),
            z=a["z"][a0:a1],
            x=a["x"][a0:a1],
            edge_index=a["edge_index"][:, e0:e1],
            edge_attr=a["edge_attr"][e0:e1],
            conformers=a["conformers"][c0:c1].reshape(-1, n, 3),
            fragment=a["fragment"][a0:a1],
            torsion_atoms=a["torsion_atoms"][t0:t1],
            torsion_moving=a["torsion_moving"][m0:m1].reshape(int(t1 - t0), n),
        )

    def __iter__(self) -> Iterator[MoleculeRecord]:
        return (self[i] for i in range(len(self)))

    @property
    def mol_ids(self) -> np.ndarray:
        """``(M,)`` int64 source index of every record."""
        return self.arrays["mol_id"]

    @property
    def smiles(self) -> np.ndarray:
        """``(M,)`` canonical SMILES of every record."""
        return self.arrays["smiles"]


def _offsets(counts: Sequence[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))]).astype(np.int64)


def pack_records(records: Iterable[MoleculeRecord]) -> PackedRecords:
    """Concatenate records into a :class:`PackedRecords` (the in-memory form of the file)."""
    items = list(records)

    def cat(key: str, axis: int, empty: tuple[int, ...], dtype: type) -> np.ndarray:
        parts = [np.asarray(getattr(r, key), dtype=dtype) for r in items]
        return np.concatenate(parts, axis=axis) if parts else np.zeros(empty, dtype=dtype)

    smiles = [r.smiles for r in items]
    width = max((len(s) for s in smiles), default=1) or 1
    arrays = {
        "format_version": np.asarray(RECORD_FORMAT_VERSION, dtype=np.int64),
        "smiles": np.asarray(smiles, dtype=f"<U{width}").reshape(len(items)),
        "mol_id": np.asarray([r.mol_id for r in items], dtype=np.int64),
        "num_conformers": np.asarray([r.num_conformers for r in items], dtype=np.int64),
        "atom_ptr": _offsets([r.num_atoms for r in items]),
        "edge_ptr": _offsets([r.edge_index.shape[1] for r in items]),
        "torsion_ptr": _offsets([len(r.torsion_atoms) for r in items]),
        "z": cat("z", 0, (0,), np.int64),
        "x": cat("x", 0, (0, 7), np.int64),
        "fragment": cat("fragment", 0, (0,), np.int64),
        "edge_index": cat("edge_index", 1, (2, 0), np.int64),
        "edge_attr": cat("edge_attr", 0, (0, 4), np.int64),
        "conformers": np.concatenate(
            [np.asarray(r.conformers, dtype=np.float32).reshape(-1, 3) for r in items]
        )
        if items
        else np.zeros((0, 3), dtype=np.float32),
        "torsion_atoms": cat("torsion_atoms", 0, (0, 4), np.int64),
        "torsion_moving": np.concatenate(
            [np.asarray(r.torsion_moving, dtype=bool).reshape(-1) for r in items]
        )
        if items
        else np.zeros((0,), dtype=bool),
    }
    return PackedRecords(arrays)


def save_records(path: str | os.PathLike[str], records: Iterable[MoleculeRecord]) -> Path:
    """Write records to one ``.npz`` (no pickle), atomically: a reader never sees half a file.

    Returns:
        The path written (``path`` as given; no ``.npz`` suffix is appended).
    """
    packed = records if isinstance(records, PackedRecords) else pack_records(records)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **packed.arrays)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return target


def load_records(path: str | os.PathLike[str]) -> PackedRecords:
    """Read a file written by :func:`save_records`.

    Raises:
        FileNotFoundError: No such file.
        RecordsFormatError: Not a records file, another format version, or inconsistent arrays.
    """
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"no records file at {source}")
    try:
        with np.load(source, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise RecordsFormatError(f"{source} is not a readable .npz records file: {error}") from None
    required = {*_ATOM_KEYS, "format_version", "smiles", "mol_id", "num_conformers"}
    required |= {"atom_ptr", "edge_ptr", "torsion_ptr", "edge_index", "edge_attr"}
    required |= {"conformers", "torsion_atoms", "torsion_moving"}
    missing = sorted(required - arrays.keys())
    if missing:
        raise RecordsFormatError(f"{source} is not a molssl records file (missing {missing})")
    version = int(arrays["format_version"])
    if version != RECORD_FORMAT_VERSION:
        raise RecordsFormatError(
            f"{source} has records format {version}; this molssl reads format "
            f"{RECORD_FORMAT_VERSION}; prepare the data again"
        )
    return PackedRecords(arrays)

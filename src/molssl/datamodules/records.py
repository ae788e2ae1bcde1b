"""Pre-training molecule records: what is computed once per molecule, stored without pickle.

A :class:`MoleculeRecord` holds, as plain NumPy arrays, everything the pre-training pipeline
needs from RDKit: atom and bond features, the conformers, BRICS fragment labels, the
rotatable torsions with the atoms each one moves, the 2D shortest-path matrix (one byte per
atom pair) and the molecule's id in its source file. RDKit is never called again after
preparation: :meth:`MoleculeRecord.to_data` builds the per-sample PyG ``Data`` from the
arrays, and the views (torsion augmentation, noise, masks) work on that, or on the arrays
themselves (:mod:`molssl.datamodules.samples`).

Many records are stored in one ``.npz`` of concatenated arrays plus per-molecule offsets
(:func:`save_records`, :func:`load_records`); strings are fixed-width unicode arrays, so the
file loads with ``allow_pickle=False``. The bytes of a file are a function of the records only
(:func:`records_npz_bytes`: fixed zip timestamps, fixed member order), so preparing the same
molecules twice gives identical files. :class:`PackedRecords` keeps those few large arrays
and slices a record out on access, which is cheap to share with data-loader workers.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, overload

import numpy as np
from rdkit import Chem
from torch_geometric.data import Data

from molssl.chem.conformers import ConformerOptions, conformer_positions, embed_conformers
from molssl.chem.errors import MoleculeError
from molssl.chem.features import mol_from_smiles, mol_to_data
from molssl.chem.fragments import brics_fragment_labels
from molssl.chem.graph import shortest_path_matrix
from molssl.chem.torsions import rotatable_torsions, torsion_moving_masks
from molssl.datamodules.file_magic import describe_start, is_zip_start
from molssl.datamodules.samples import record_data
from molssl.errors import UserError

__all__ = [
    "RECORD_FORMAT_VERSION",
    "SPD_UNREACHABLE",
    "MoleculeRecord",
    "PackedRecords",
    "RecordsFormatError",
    "load_records",
    "pack_records",
    "read_records_npz",
    "record_from_mol",
    "record_from_smiles",
    "records_npz_bytes",
    "save_records",
    "spd_to_uint8",
    "write_records_npz",
]

#: Bumped whenever what a record holds or how it is computed changes; part of cache keys.
#: 2: ``source_id`` and the uint8 shortest-path matrix ``spd``.
RECORD_FORMAT_VERSION = 2

#: Stored shortest-path value of an unreachable pair (atoms of different fragments of a salt).
SPD_UNREACHABLE = 255
# Timestamp of every member of a records .npz: a fixed one keeps the bytes reproducible.
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)

# Per-atom arrays of the packed file, indexed by ``atom_ptr``.
_ATOM_KEYS = ("z", "x", "fragment")
# Arrays whose per-molecule pieces are concatenated (offsets derived from the ``*_ptr`` arrays).
_CONCATENATED_KEYS = (
    *_ATOM_KEYS,
    "mol_id",
    "num_conformers",
    "edge_index",
    "edge_attr",
    "conformers",
    "torsion_atoms",
    "torsion_moving",
    "spd",
)


class RecordsFormatError(UserError):
    """A file that is not a readable molssl records ``.npz`` of the current format."""


def spd_to_uint8(spd: np.ndarray) -> np.ndarray:
    """The stored form of a shortest-path matrix: uint8 hops, :data:`SPD_UNREACHABLE` for -1.

    Args:
        spd: ``(N, N)`` integer hops with ``-1`` for unreachable pairs
            (:func:`~molssl.chem.graph.shortest_path_matrix`).

    Raises:
        MoleculeError: ``too_many_atoms`` when a path has 255 bonds or more (a chain of
            that length does not fit one byte per pair; only possible without a heavy-atom
            limit).
    """
    spd = np.asarray(spd)
    longest = int(spd.max()) if spd.size else 0
    if longest >= SPD_UNREACHABLE:
        raise MoleculeError(
            f"a shortest path of {longest} bonds does not fit the records format "
            f"(at most {SPD_UNREACHABLE - 1}); lower max_heavy_atoms",
            reason="too_many_atoms",
        )
    return np.where(spd < 0, SPD_UNREACHABLE, spd).astype(np.uint8)


def _spd_for(edge_index: np.ndarray, num_atoms: int) -> np.ndarray:
    return spd_to_uint8(shortest_path_matrix(edge_index, num_atoms))


def _spd_of_mol(mol: Chem.Mol) -> np.ndarray:
    # RDKit's C++ BFS: the same matrix as shortest_path_matrix on mol_to_data's edge_index
    # (same atom order; tested), at a fraction of the cost per molecule.
    distances = Chem.GetDistanceMatrix(mol)
    return spd_to_uint8(np.where(distances > 1e6, -1, distances).astype(np.int64))


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
        source_id: Name of the molecule in its source (name column, SDF title, PubChem CID),
            ``""`` if unknown.
        spd: ``(N, N)`` uint8 shortest-path hops, :data:`SPD_UNREACHABLE` for unreachable
            pairs; computed from ``edge_index`` when ``None`` is given.
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
    source_id: str = ""
    spd: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.z)
        if self.spd is None:
            self.spd = _spd_for(self.edge_index, n)
        e = self.edge_attr.shape[0] if self.edge_attr.ndim > 0 else -1
        expected = {
            "x": (n, 7),
            "edge_index": (2, e),
            "edge_attr": (e, 4),
            "conformers": (max(len(self.conformers), 1), n, 3),
            "fragment": (n,),
            "torsion_atoms": (len(self.torsion_atoms), 4),
            "torsion_moving": (len(self.torsion_atoms), n),
            "spd": (n, n),
        }
        for key, shape in expected.items():
            actual = getattr(self, key).shape
            if actual != shape:
                raise ValueError(
                    f"MoleculeRecord {self.mol_id} ({self.smiles!r}): {key} has shape {actual}, "
                    f"expected {shape} for {n} atoms"
                )
        if self.spd.dtype != np.uint8:
            raise ValueError(
                f"MoleculeRecord {self.mol_id} ({self.smiles!r}): spd must be uint8 "
                f"({SPD_UNREACHABLE} = unreachable), got {self.spd.dtype}; see spd_to_uint8"
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
        ``conformer``, ``fragment``, ``torsion_atoms``, ``torsion_moving``, ``spd`` (N*N,)
        long row-major with ``-1`` for unreachable pairs (as
        :class:`~molssl.chem.graph.AddGraphRelations` stores it, so
        :func:`~molssl.chem.graph.dense_graph_relations` uses it), ``smiles``, ``source_id``,
        ``mol_id`` (0-d long, so a batch holds one per molecule) and ``num_nodes``. Every
        tensor owns its memory: changing it never changes the record.

        Raises:
            IndexError: ``conformer`` is not in ``[0, K)``.
        """
        return record_data(self, conformer)


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
    edge_index = graph.edge_index.numpy()
    return MoleculeRecord(
        smiles=graph.smiles,
        mol_id=int(mol_id),
        z=graph.z.numpy(),
        x=graph.x.numpy(),
        edge_index=edge_index,
        edge_attr=graph.edge_attr.numpy(),
        conformers=conformer_positions(conformer_mol).astype(np.float32),
        fragment=np.asarray(fragment, dtype=np.int64),
        torsion_atoms=np.asarray(torsions, dtype=np.int64).reshape(-1, 4),
        torsion_moving=np.asarray(moving, dtype=bool).reshape(len(torsions), num_atoms),
        spd=_spd_of_mol(graph_mol),
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
        self._spd_ptr = _offsets(counts * counts)

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
        for key in ("smiles", "source_id", "num_conformers"):
            if a[key].shape != (m,):
                raise RecordsFormatError(f"{key} does not have one entry per molecule")
        if a["smiles"].dtype.kind != "U" or a["source_id"].dtype.kind != "U":
            raise RecordsFormatError("smiles / source_id must be fixed-width unicode arrays")
        atoms = np.diff(a["atom_ptr"])
        if a["conformers"].shape[0] != int((a["num_conformers"] * atoms).sum()):
            raise RecordsFormatError("conformer rows do not match the atom and conformer counts")
        if a["torsion_moving"].shape[0] != int((np.diff(a["torsion_ptr"]) * atoms).sum()):
            raise RecordsFormatError("torsion_moving does not match the torsion and atom counts")
        num_atoms, num_edges = int(a["atom_ptr"][-1]), int(a["edge_ptr"][-1])
        num_torsions = int(a["torsion_ptr"][-1])
        # With these, every record sliced out has consistent shapes (checked once here
        # rather than per record on every read).
        for key, shape in (
            ("z", (num_atoms,)),
            ("x", (num_atoms, 7)),
            ("fragment", (num_atoms,)),
            ("edge_index", (2, num_edges)),
            ("edge_attr", (num_edges, 4)),
            ("conformers", (a["conformers"].shape[0], 3)),
            ("torsion_atoms", (num_torsions, 4)),
        ):
            if a[key].shape != shape:
                raise RecordsFormatError(f"{key} has shape {a[key].shape}, expected {shape}")
        if np.any(a["num_conformers"] < 1):
            raise RecordsFormatError("a molecule without a conformer")
        if a["spd"].dtype != np.uint8 or a["spd"].shape != (int((atoms * atoms).sum()),):
            raise RecordsFormatError(
                "spd is not uint8 with one entry per atom pair of every molecule"
            )

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
        s0, s1 = self._spd_ptr[i], self._spd_ptr[i + 1]
        n = int(a1 - a0)
        # The packed arrays were checked as a whole (_check), so every slice has the shapes
        # MoleculeRecord.__post_init__ would check: skip it on this per-sample path.
        record = MoleculeRecord.__new__(MoleculeRecord)
        record.__dict__.update(
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
            source_id=str(a["source_id"][i]),
            spd=a["spd"][s0:s1].reshape(n, n),
        )
        return record

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

    @property
    def source_ids(self) -> np.ndarray:
        """``(M,)`` name of every record in its source (``""`` if unknown)."""
        return self.arrays["source_id"]

    @classmethod
    def concatenate(cls, parts: Sequence[PackedRecords]) -> PackedRecords:
        """The records of ``parts`` in order, as one :class:`PackedRecords` (arrays copied)."""
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return pack_records([])
        arrays: dict[str, np.ndarray] = {
            "format_version": np.asarray(RECORD_FORMAT_VERSION, dtype=np.int64)
        }
        for key in ("atom_ptr", "edge_ptr", "torsion_ptr"):
            counts = np.concatenate([np.diff(p.arrays[key]) for p in parts])
            arrays[key] = _offsets(counts)
        for key in ("smiles", "source_id"):
            width = max(max(p.arrays[key].dtype.itemsize // 4 for p in parts), 1)
            arrays[key] = np.concatenate([p.arrays[key].astype(f"<U{width}") for p in parts])
        for key in _CONCATENATED_KEYS:
            axis = 1 if key == "edge_index" else 0
            arrays[key] = np.concatenate([p.arrays[key] for p in parts], axis=axis)
        return cls(arrays)


def _offsets(counts: Sequence[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))]).astype(np.int64)


def pack_records(records: Iterable[MoleculeRecord]) -> PackedRecords:
    """Concatenate records into a :class:`PackedRecords` (the in-memory form of the file)."""
    items = list(records)

    def cat(key: str, axis: int, empty: tuple[int, ...], dtype: type) -> np.ndarray:
        parts = [np.asarray(getattr(r, key), dtype=dtype) for r in items]
        return np.concatenate(parts, axis=axis) if parts else np.zeros(empty, dtype=dtype)

    arrays = {
        "format_version": np.asarray(RECORD_FORMAT_VERSION, dtype=np.int64),
        "smiles": _unicode_array([r.smiles for r in items]),
        "source_id": _unicode_array([r.source_id for r in items]),
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
        "spd": np.concatenate([np.asarray(r.spd, dtype=np.uint8).reshape(-1) for r in items])
        if items
        else np.zeros((0,), dtype=np.uint8),
    }
    return PackedRecords(arrays)


def _unicode_array(strings: Sequence[str]) -> np.ndarray:
    width = max((len(s) for s in strings), default=1) or 1
    return np.asarray(strings, dtype=f"<U{width}").reshape(len(strings))


def write_records_npz(stream: BinaryIO, records: Iterable[MoleculeRecord]) -> None:
    """Write records as an ``.npz`` to a binary stream, reproducibly and without pickle.

    Like :func:`numpy.savez` (uncompressed members ``<key>.npy``, readable by
    :func:`numpy.load`), but every member has a fixed timestamp, so the same records always
    give the same bytes.
    """
    packed = records if isinstance(records, PackedRecords) else pack_records(records)
    with zipfile.ZipFile(stream, mode="w", compression=zipfile.ZIP_STORED) as archive:
        for key in sorted(packed.arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE_TIME)
            info.external_attr = 0o644 << 16
            with archive.open(info, mode="w", force_zip64=True) as member:
                np.lib.format.write_array(
                    member, np.asanyarray(packed.arrays[key]), allow_pickle=False
                )


def records_npz_bytes(records: Iterable[MoleculeRecord]) -> bytes:
    """The bytes :func:`save_records` would write for ``records``."""
    buffer = io.BytesIO()
    write_records_npz(buffer, records)
    return buffer.getvalue()


def save_records(path: str | os.PathLike[str], records: Iterable[MoleculeRecord]) -> Path:
    """Write records to one ``.npz`` (no pickle), atomically: a reader never sees half a file.

    Returns:
        The path written (``path`` as given; no ``.npz`` suffix is appended).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write_records_npz(stream, records)
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
    with open(source, "rb") as stream:
        return read_records_npz(stream, name=str(source))


def read_records_npz(stream: BinaryIO, name: str = "<stream>") -> PackedRecords:
    """Read records from a seekable binary stream holding a records ``.npz``.

    Args:
        stream: The ``.npz`` bytes (a file or :class:`io.BytesIO`).
        name: What to call the source in error messages.

    Raises:
        RecordsFormatError: Not a records file, another format version, or inconsistent arrays.
    """
    source = name
    head = stream.read(64)
    stream.seek(-len(head), io.SEEK_CUR)
    if not is_zip_start(head):
        # np.load would call anything else "pickled data"; say what the bytes really are.
        raise RecordsFormatError(
            f"{source} is not a records .npz (a zip archive of arrays): {describe_start(head)}; "
            "the file is damaged or not a molssl records file (prepare the data again)"
        )
    try:
        with np.load(stream, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise RecordsFormatError(f"{source} is not a readable .npz records file: {error}") from None
    required = {*_ATOM_KEYS, "format_version", "smiles", "mol_id", "num_conformers"}
    required |= {"atom_ptr", "edge_ptr", "torsion_ptr", *_CONCATENATED_KEYS, "source_id"}
    missing = sorted(required - arrays.keys())
    if missing:
        raise RecordsFormatError(f"{source} is not a molssl records file (missing {missing})")
    try:
        version = int(arrays["format_version"])
    except (TypeError, ValueError):
        raise RecordsFormatError(f"{source} has an unreadable format_version") from None
    if version != RECORD_FORMAT_VERSION:
        raise RecordsFormatError(
            f"{source} has records format {version}; this molssl reads format "
            f"{RECORD_FORMAT_VERSION}; prepare the data again"
        )
    return PackedRecords(arrays)

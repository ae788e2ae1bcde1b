"""sGDML ``.npz`` trajectories (MD17, MD22) → arrays in Å and kcal/mol, bad frames recorded.

File layout (sGDML, Chmiela et al.; the files of quantum-machine.org/gdml): ``z`` ``(N,)``
atomic numbers, ``R`` ``(F, N, 3)`` positions in Å, ``E`` ``(F,)`` or ``(F, 1)`` energies in
kcal/mol, ``F`` ``(F, N, 3)`` forces in kcal/mol/Å, plus metadata such as ``name``,
``theory``, ``md5``, ``type`` and, in newer files, ``r_unit`` / ``e_unit``. The revised MD17
files use ``nuclear_charges``, ``coords``, ``energies``, ``forces`` for the same arrays
(same units); both layouts are read. A file that declares other units (``e_unit`` eV or
Hartree, ``r_unit`` bohr) is converted to Å and kcal/mol.

A frame with a non-finite position, energy or force is dropped with its labels and recorded
(reason ``non_finite_frame``), and so is a frame with two atoms closer than
:data:`MIN_DISTANCE` (``coincident_atoms``: atoms on top of each other make a model's
distances and forces meaningless, and no real molecule has them). A missing key or
inconsistent shapes fail the whole file with :class:`MDFormatError`, and so does a file that is
no npz (``not_npz``), a truncated or damaged npz (``truncated_file``), one whose z/R/E/F is an
object array (``object_array``), or one without a usable frame (``empty_file``). Nothing is
ever unpickled: object arrays are recognised from their ``.npy`` header before any data is read.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from molssl.datamodules.embedded import Failure
from molssl.datamodules.file_magic import NPY_MAGIC, describe_start, is_zip_start
from molssl.errors import UserError

__all__ = [
    "MD_UNITS",
    "MIN_DISTANCE",
    "MDFormatError",
    "MDTrajectory",
    "closest_distances",
    "read_sgdml",
]

#: Units of the arrays this module returns.
MD_UNITS = {"positions": "Å", "energy": "kcal/mol", "forces": "kcal/mol/Å"}

# Our name -> accepted keys (sGDML first, then the revised-MD17 spelling).
_KEYS = {
    "z": ("z", "nuclear_charges"),
    "R": ("R", "coords"),
    "E": ("E", "energies"),
    "F": ("F", "forces"),
}
# Unit spellings -> factor to kcal/mol or Å.
_ENERGY_UNITS = {
    "kcal/mol": 1.0,
    "kcal mol-1": 1.0,
    "ev": 23.060547830619,
    "ha": 627.509474,
    "hartree": 627.509474,
    "kj/mol": 1 / 4.184,
}
_LENGTH_UNITS = {"ang": 1.0, "angstrom": 1.0, "å": 1.0, "a": 1.0, "bohr": 0.529177210903}
_MAX_Z = 118
#: Closest two atoms of a frame may be (Å): far below any bond (H-H is 0.74 Å) even in hot MD.
MIN_DISTANCE = 0.3
# Atom pairs processed at once by closest_distances (frames x pairs x 3 float64 values).
_PAIR_BLOCK = 4_000_000


class MDFormatError(UserError):
    """An sGDML file that cannot be used as a whole.

    Attributes:
        reason: ``missing_file``, ``not_npz`` (not a zip archive of ``.npy`` arrays: a text
            file, a lone ``.npy``, ...), ``truncated_file`` (a zip cut short or damaged, e.g.
            an interrupted download), ``object_array`` (z, R, E or F stored as a pickled object
            array, which is never unpickled), ``missing_key``, ``shape_mismatch``,
            ``invalid_atomic_number``, ``unknown_unit`` or ``empty_file``.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (type(self), (str(self), self.reason))


@dataclass
class MDTrajectory:
    """The usable frames of one trajectory.

    Attributes:
        z: ``(N,)`` int64 atomic numbers.
        positions: ``(F', N, 3)`` float32, Å.
        energy: ``(F',)`` float64, kcal/mol (float64: MD energies are around -1e5 kcal/mol).
        forces: ``(F', N, 3)`` float32, kcal/mol/Å.
        frame: ``(F',)`` int64 index of each kept frame in the file.
        read: Frames in the file (``len(frame) + len(failures) == read``).
        failures: Dropped frames (``mol_id`` = frame index, ``line`` = frame index + 1).
        metadata: ``name``, ``theory``, ``md5``, ... as strings, when the file has them.
        source: The file read.
    """

    z: np.ndarray
    positions: np.ndarray
    energy: np.ndarray
    forces: np.ndarray
    frame: np.ndarray
    read: int
    failures: list[Failure] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    source: str = ""

    @property
    def num_atoms(self) -> int:
        """Atoms per frame."""
        return len(self.z)


def _member_dtype(archive: zipfile.ZipFile, key: str) -> np.dtype | None:
    """The dtype in a member's ``.npy`` header (no data read); None for a non-``.npy`` member."""
    member = f"{key}.npy" if f"{key}.npy" in archive.namelist() else key
    with archive.open(member) as stream:
        if stream.read(len(NPY_MAGIC)) != NPY_MAGIC:
            return None
        stream.seek(0)
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(stream)[2]
        return np.lib.format.read_array_header_2_0(stream)[2]


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an npz, never unpickling anything.

    numpy's own error for a file that is not a zip is "pickled (object) data", which misleads
    (``np.load`` falls back to pickle for an unknown file); the file is classified here first.
    An object metadata entry is skipped; an object z, R, E or F array is an error.
    """
    with path.open("rb") as handle:
        head = handle.read(64)
    if not is_zip_start(head):
        raise MDFormatError(
            f"{path}: not an .npz file ({describe_start(head)}); an sGDML trajectory is a "
            "zip archive of .npy arrays z, R, E, F",
            reason="not_npz",
        )
    required = {key for keys in _KEYS.values() for key in keys}
    archive: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zipped, np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                dtype = _member_dtype(zipped, key)
                if dtype is not None and not dtype.hasobject:
                    archive[key] = npz[key]
                elif key in required:
                    what = "is not a .npy array" if dtype is None else "holds Python objects"
                    raise MDFormatError(
                        f"{path}: array {key!r} {what}; sGDML arrays are numeric, and object "
                        "(pickled) arrays are never unpickled",
                        reason="object_array",
                    )
                # else: object (pickled) or raw metadata, never unpickled and not needed
    except MDFormatError:
        raise
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError, ValueError) as error:
        raise MDFormatError(
            f"{path}: truncated or damaged .npz archive ({type(error).__name__}: {error}); "
            "was the download or copy interrupted?",
            reason="truncated_file",
        ) from None
    return archive


def _first_key(archive: dict[str, np.ndarray], ours: str, path: Path) -> np.ndarray:
    for key in _KEYS[ours]:
        if key in archive:
            return archive[key]
    raise MDFormatError(
        f"{path}: no {' / '.join(repr(k) for k in _KEYS[ours])} array; keys present: "
        f"{sorted(archive)} (an sGDML file has z, R, E, F)",
        reason="missing_key",
    )


def _unit_factor(archive: dict[str, np.ndarray], key: str, table: dict[str, float]) -> float:
    if key not in archive:
        return 1.0
    unit = str(archive[key]).strip()
    factor = table.get(unit.lower())
    if factor is None:
        raise MDFormatError(f"unknown {key} {unit!r}; known: {sorted(table)}", "unknown_unit")
    return factor


def closest_distances(positions: np.ndarray) -> np.ndarray:
    """``(F,)`` distance (in the positions' unit) of the closest atom pair of every frame.

    Squared distances come from the Gram matrix of each frame's centred positions (one batched
    matrix product), in blocks of frames so that an MD22 nanotube (370 atoms) stays within
    ~100 MB: about 2 s per 1,000 such frames on one core. Frames of one atom get ``inf``;
    non-finite positions give NaN (which compares as not close).
    """
    frames, atoms = positions.shape[:2]
    out = np.full(frames, np.inf)
    if atoms < 2:
        return out
    diagonal = np.eye(atoms, dtype=bool)
    block = max(1, _PAIR_BLOCK // (atoms * atoms))
    with np.errstate(invalid="ignore"):
        for start in range(0, frames, block):
            chunk = np.asarray(positions[start : start + block], dtype=np.float64)
            chunk = chunk - chunk.mean(axis=1, keepdims=True)
            norms = (chunk * chunk).sum(-1)
            squared = norms[:, :, None] + norms[:, None, :]
            squared -= 2.0 * np.matmul(chunk, chunk.transpose(0, 2, 1))
            squared[:, diagonal] = np.inf
            out[start : start + block] = np.sqrt(np.maximum(squared.min(axis=(1, 2)), 0.0))
    return out


def read_sgdml(path: str | os.PathLike[str]) -> MDTrajectory:
    """Read an sGDML ``.npz`` (see the module docstring for layout, units and failures).

    Raises:
        MDFormatError: Missing file, not an npz, a truncated npz, an object z/R/E/F array,
            a missing key, shapes that disagree,
            an atomic number outside 1..118, an unknown declared unit, or no frame at all.
    """
    path = Path(path)
    if not path.is_file():
        raise MDFormatError(f"MD trajectory not found: {path}", reason="missing_file")
    archive = _load_npz(path)
    z = np.asarray(_first_key(archive, "z", path)).reshape(-1)
    positions = np.asarray(_first_key(archive, "R", path), dtype=np.float64)
    energy = np.asarray(_first_key(archive, "E", path), dtype=np.float64)
    forces = np.asarray(_first_key(archive, "F", path), dtype=np.float64)
    n = len(z)
    frames = positions.shape[0] if positions.ndim == 3 else -1
    if energy.ndim == 2 and energy.shape[1:] == (1,):
        energy = energy[:, 0]
    expected = {"R": (frames, n, 3), "E": (frames,), "F": (frames, n, 3)}
    actual = {"R": positions.shape, "E": energy.shape, "F": forces.shape}
    if frames < 0 or any(actual[key] != shape for key, shape in expected.items()):
        raise MDFormatError(
            f"{path}: shapes disagree for {n} atoms: R {positions.shape}, E {energy.shape}, "
            f"F {forces.shape} (expected R (F, {n}, 3), E (F,) or (F, 1), F (F, {n}, 3))",
            reason="shape_mismatch",
        )
    if frames == 0 or n == 0:
        raise MDFormatError(f"{path}: {frames} frames of {n} atoms", reason="empty_file")
    if not np.issubdtype(z.dtype, np.integer) or z.min() < 1 or z.max() > _MAX_Z:
        raise MDFormatError(
            f"{path}: atomic numbers must be integers in 1..{_MAX_Z}, got {z.tolist()[:10]}",
            reason="invalid_atomic_number",
        )
    try:
        energy_factor = _unit_factor(archive, "e_unit", _ENERGY_UNITS)
        length_factor = _unit_factor(archive, "r_unit", _LENGTH_UNITS)
    except MDFormatError as error:
        raise MDFormatError(f"{path}: {error}", error.reason) from None
    bad_r = ~np.isfinite(positions).all(axis=(1, 2))
    bad_e = ~np.isfinite(energy)
    bad_f = ~np.isfinite(forces).all(axis=(1, 2))
    closest = closest_distances(positions * length_factor)
    coincide = ~(bad_r | bad_e | bad_f) & (closest < MIN_DISTANCE)
    failures = []
    for f in np.flatnonzero(bad_r | bad_e | bad_f | coincide):
        if coincide[f]:
            reason = "coincident_atoms"
            message = (
                f"frame {f}: two atoms {closest[f]:.3g} Å apart (closer than {MIN_DISTANCE} Å: "
                "no two atoms of a molecule are; a damaged or mis-written frame)"
            )
        else:
            which = [name for name, bad in (("R", bad_r), ("E", bad_e), ("F", bad_f)) if bad[f]]
            reason, message = "non_finite_frame", f"frame {f}: non-finite {which}"
        failures.append(Failure(int(f), int(f) + 1, "", reason, message))
    keep = np.flatnonzero(~(bad_r | bad_e | bad_f | coincide))
    if len(keep) == 0:
        counts = Counter(failure.reason for failure in failures)
        detail = ", ".join(f"{reason} {count}" for reason, count in counts.most_common())
        raise MDFormatError(
            f"{path}: no usable frame among {frames} ({detail}): every frame has a non-finite "
            "position, energy or force, or atoms on top of each other",
            reason="empty_file",
        )
    metadata = {
        key: str(value)
        for key, value in archive.items()
        if key not in {k for keys in _KEYS.values() for k in keys} and value.ndim == 0
    }
    return MDTrajectory(
        z=z.astype(np.int64),
        positions=(positions[keep] * length_factor).astype(np.float32),
        energy=energy[keep] * energy_factor,
        forces=(forces[keep] * (energy_factor / length_factor)).astype(np.float32),
        frame=keep.astype(np.int64),
        read=frames,
        failures=failures,
        metadata=metadata,
        source=str(path),
    )

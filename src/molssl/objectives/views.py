"""Per-sample views: hydrogen removal (order 5), torsion augmentation (order 10) and coordinate
noise (order 20).

Both run in the data loader's workers on one molecule at a time, before collation, and draw
from torch's global generator (seeded per worker and epoch by PyTorch), so a molecule seen
twice gets two different draws.

Neither view modifies the sample it is given: each returns a shallow copy
(:func:`copy.copy` of the PyG ``Data``) with new ``pos`` / ``coord_noise`` tensors. A dataset
that hands out cached ``Data`` objects therefore never accumulates noise across epochs.

Both also have a NumPy form (:func:`array_form`): the data pipeline
(:mod:`molssl.datamodules.samples`) runs it on the record's arrays before the sample's
``Data`` exists, with the same draws from torch's generator in the same order, hence the same
result as calling the view on the ``Data``. Any view can offer one: a method
``array_transform()`` returning a callable on a ``dict[str, np.ndarray]`` (the sample's keys,
as the ``Data`` would hold them), or ``None``. The callable may only assign new arrays to
keys, never write into an array it was given (those may be the record's own), and must give
what ``__call__`` gives for the same state of torch's generator.

Composition: :class:`RemoveHydrogens` first makes the sample a heavy-atom graph (MoleBLEND's
data), so that every later view sees the molecule the encoder will; :class:`TorsionAugment`
changes the conformer, :class:`CoordNoise` then adds
Gaussian noise to the augmented coordinates and stores that noise as the denoising target, so
``pos - coord_noise`` is the torsion-augmented (not the original) conformer, as in Frad and
UniCorn.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, MutableMapping
from typing import Literal

import numpy as np
import torch
from torch_geometric.data import Data

from molssl.chem.hydrogens import remove_hydrogens
from molssl.chem.torsions import apply_torsion_deltas
from molssl.objectives.base import View

__all__ = [
    "ArrayTransform",
    "CoordNoise",
    "RemoveHydrogens",
    "TorsionAugment",
    "array_form",
    "defined_together",
]

#: A view's NumPy form: updates a sample's arrays by assigning new arrays to keys.
ArrayTransform = Callable[[MutableMapping[str, np.ndarray]], None]

# (class, method, partner) -> whether the class of the MRO that defines the first method
# also defines the second; a class-level fact, cached.
_DEFINED_TOGETHER: dict[tuple[type, str, str], bool] = {}


def defined_together(cls: type, method: str, partner: str) -> bool:
    """Whether the first class of ``cls``'s MRO defining ``method`` or ``partner`` defines both.

    A subclass that overrides one of a pair of methods that must agree (a view's ``__call__``
    and its ``array_transform``, a mask objective's ``choose_mask`` and ``choose_mask_array``)
    but not the other gets ``False``, so that the override is what runs.
    """
    key = (cls, method, partner)
    known = _DEFINED_TOGETHER.get(key)
    if known is None:
        known = False
        for klass in cls.__mro__:
            if method in vars(klass) or partner in vars(klass):
                known = method in vars(klass) and partner in vars(klass)
                break
        _DEFINED_TOGETHER[key] = known
    return known


def array_form(view: Callable[[Data], Data]) -> ArrayTransform | None:
    """The NumPy form of ``view``, or ``None`` when it has none it can use.

    A view's ``array_transform()`` is used only when the class that defines its ``__call__``
    also defines ``array_transform``: a subclass overriding ``__call__`` alone runs on the
    ``Data``, as it expects.
    """
    if not defined_together(type(view), "__call__", "array_transform"):
        return None
    return view.array_transform()  # type: ignore[attr-defined]


_TORCH_FLOATS = {
    np.dtype(np.float16): torch.float16,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float64): torch.float64,
}


def _array_positions(arrays: MutableMapping[str, np.ndarray], view: str) -> np.ndarray:
    pos = arrays.get("pos")
    if pos is None:
        raise ValueError(f"{view} needs 3D coordinates 'pos' (N, 3) on each sample")
    if pos.ndim != 2 or pos.shape[1] != 3 or pos.dtype not in _TORCH_FLOATS:
        raise ValueError(
            f"{view}: 'pos' must be a float array of shape (N, 3), got {pos.dtype} {pos.shape}"
        )
    return pos


def _positions(data: Data, view: str) -> torch.Tensor:
    pos = getattr(data, "pos", None)
    if pos is None:
        raise ValueError(f"{view} needs 3D coordinates 'pos' (N, 3) on each sample")
    if pos.dim() != 2 or pos.size(1) != 3 or not pos.is_floating_point():
        raise ValueError(
            f"{view}: 'pos' must be a float tensor of shape (N, 3), got {pos.dtype} "
            f"{tuple(pos.shape)}"
        )
    return pos


_MISSING_TORSIONS = (
    "TorsionAugment needs 'torsion_atoms' (T, 4) and 'torsion_moving' (T, N) on each sample; "
    "they are added per molecule by the pre-training dataset, and this view must run before "
    "the datamodule drops them"
)


class TorsionAugment(View):
    """Rotate every rotatable torsion of the sample by an independent N(0, σ²) angle.

    UniCorn's torsion augmentation (and Frad's torsion perturbation): for a molecule with ``T``
    rotatable bonds, ``T`` angles are drawn afresh on every call and applied in order with
    :func:`molssl.chem.torsions.apply_torsion_deltas`, which moves the smaller side of each
    bond rigidly, so bond lengths and bond angles are unchanged. Molecules without a rotatable
    bond are returned unchanged (a copy), which makes a following :class:`CoordNoise` plain
    coordinate denoising for them.

    The sample must carry ``torsion_atoms`` (T, 4) long and ``torsion_moving`` (T, N) bool, as
    produced once per molecule by the pre-training dataset
    (:func:`~molssl.chem.torsions.rotatable_torsions` and
    :func:`~molssl.chem.torsions.torsion_moving_masks`); no RDKit call happens here.

    Args:
        sigma: Standard deviation of the angle change, in ``unit``.
        unit: ``"deg"`` (the paper's 2°) or ``"rad"``; the unit is explicit so a config
            cannot silently mean 2 radians.

    Views compare equal when their sigma (in radians) is the same, so a module can deduplicate
    identical augmentations.
    """

    order = 10

    def __init__(self, sigma: float = 2.0, unit: Literal["deg", "rad"] = "deg") -> None:
        if unit not in ("deg", "rad"):
            raise ValueError(f"unit must be 'deg' or 'rad', got {unit!r}")
        if not (math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
        self.sigma = float(sigma)
        self.unit = unit
        self.sigma_rad = math.radians(self.sigma) if unit == "deg" else self.sigma

    def __call__(self, data: Data) -> Data:
        pos = _positions(data, "TorsionAugment")
        torsions = getattr(data, "torsion_atoms", None)
        moving = getattr(data, "torsion_moving", None)
        if torsions is None or moving is None:
            raise ValueError(_MISSING_TORSIONS)
        out = copy.copy(data)
        if torsions.size(0) == 0 or self.sigma_rad == 0.0:
            out.pos = pos.clone()
            return out
        deltas = self._deltas(torsions.size(0))
        new_pos = apply_torsion_deltas(
            pos.detach().cpu().numpy(),
            torsions.cpu().numpy(),
            moving.cpu().numpy(),
            deltas.numpy(),
        )
        out.pos = torch.from_numpy(new_pos).to(dtype=pos.dtype, device=pos.device)
        return out

    def _deltas(self, count: int) -> torch.Tensor:
        return torch.randn(count, dtype=torch.float64) * self.sigma_rad

    def array_transform(self) -> ArrayTransform:
        """:meth:`__call__` on a sample's NumPy arrays (same draws, same coordinates)."""
        return self._apply_arrays

    def _apply_arrays(self, arrays: MutableMapping[str, np.ndarray]) -> None:
        pos = _array_positions(arrays, "TorsionAugment")
        torsions = arrays.get("torsion_atoms")
        moving = arrays.get("torsion_moving")
        if torsions is None or moving is None:
            raise ValueError(_MISSING_TORSIONS)
        if len(torsions) == 0 or self.sigma_rad == 0.0:
            return  # unchanged: the Data gets its own copy of pos when it is built
        new_pos = apply_torsion_deltas(pos, torsions, moving, self._deltas(len(torsions)).numpy())
        arrays["pos"] = new_pos.astype(pos.dtype)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TorsionAugment)
            and type(other) is type(self)
            and (other.sigma_rad == self.sigma_rad)
        )

    def __hash__(self) -> int:
        return hash((type(self), self.sigma_rad))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma}, unit={self.unit!r})"


_TWO_NOISES = (
    "sample already has 'coord_noise': two coordinate-noise views ran on it; a pipeline must "
    "hold one CoordNoise (equal views are deduplicated by the module)"
)


class CoordNoise(View):
    """Add isotropic Gaussian noise N(0, σ²) Å to every coordinate; keep it as ``coord_noise``.

    After this view, ``pos`` is what the 3D encoders see and ``coord_noise`` (N, 3) the noise
    that was added (the denoising target); ``pos - coord_noise`` is the conformer before noise.

    One pipeline holds at most one coordinate-noise view. Several objectives may ask for
    noise of the same sigma (e.g. a denoising objective and a regulariser); they share one
    draw because the module deduplicates equal views, and ``CoordNoise`` views are equal
    exactly when their type and sigma are. Two different sigmas in one run is a configuration
    error, reported by the module when it builds the pipeline. If a sample reaches this view
    with ``coord_noise`` already set, two noise views ran on it and this view raises instead
    of silently stacking noise.

    Args:
        sigma: Standard deviation of the noise per Cartesian component, in Å (paper: 0.04).
    """

    order = 20

    def __init__(self, sigma: float = 0.04) -> None:
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a finite number > 0 (Å), got {sigma}")
        self.sigma = float(sigma)

    def __call__(self, data: Data) -> Data:
        pos = _positions(data, "CoordNoise")
        if getattr(data, "coord_noise", None) is not None:
            raise ValueError(_TWO_NOISES)
        noise = torch.randn(pos.shape, dtype=pos.dtype, device=pos.device) * self.sigma
        out = copy.copy(data)
        out.pos = pos + noise
        out.coord_noise = noise
        return out

    def array_transform(self) -> ArrayTransform:
        """:meth:`__call__` on a sample's NumPy arrays (same draw, same float32 arithmetic)."""
        return self._apply_arrays

    def _apply_arrays(self, arrays: MutableMapping[str, np.ndarray]) -> None:
        pos = _array_positions(arrays, "CoordNoise")
        if arrays.get("coord_noise") is not None:
            raise ValueError(_TWO_NOISES)
        dtype = _TORCH_FLOATS[pos.dtype]
        noise = torch.randn(pos.shape, dtype=dtype).numpy() * pos.dtype.type(self.sigma)
        arrays["pos"] = pos + noise
        arrays["coord_noise"] = noise

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, CoordNoise)
            and type(other) is type(self)
            and (other.sigma == self.sigma)
        )

    def __hash__(self) -> int:
        return hash((type(self), self.sigma))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma})"


class RemoveHydrogens(View):
    """Make the sample the heavy-atom graph of its molecule: every hydrogen atom removed.

    MoleBLEND trains and fine-tunes on heavy-atom graphs (PCQM4Mv2 read by RDKit without
    hydrogens, MoleculeNet graphs from SMILES), while molssl's records keep explicit
    hydrogens. This view gives the sample what featurising ``Chem.RemoveHs(mol)`` would:
    heavy atoms in their order, bonds between them, the degree column recounted (so degree
    embeddings see heavy-atom degrees), the stored shortest paths restricted to the heavy atoms,
    and the coordinates, noise, fragment labels and torsions of the heavy atoms; see
    :func:`molssl.chem.hydrogens.remove_hydrogens` for every key and for what is refused.

    It runs first in a pre-training pipeline (order 5), so noise is drawn for the heavy atoms
    only; in a fine-tuning data module it is the ``transform``. All instances are equal (the
    module keeps one). It draws nothing from the random generator.
    """

    order = 5
    at_inference = True

    def __call__(self, data: Data) -> Data:
        out = copy.copy(data)
        tensors = {key: value for key, value in data.items() if isinstance(value, torch.Tensor)}
        arrays = {key: value.detach().cpu().numpy() for key, value in tensors.items()}
        given = dict(arrays)
        remove_hydrogens(arrays)
        for key, array in arrays.items():
            if array is not given[key]:
                out[key] = torch.from_numpy(array).to(tensors[key].device)
        out.num_nodes = len(arrays["z"] if "z" in arrays else arrays["x"])
        return out

    def array_transform(self) -> ArrayTransform:
        """:meth:`__call__` on a sample's NumPy arrays."""
        return remove_hydrogens

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))

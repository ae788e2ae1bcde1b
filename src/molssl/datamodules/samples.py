"""One pre-training sample from a record: NumPy arrays, array views, one ``Data``, other views.

The pipeline's hot path. :meth:`~molssl.datamodules.records.MoleculeRecord.to_data` and
:func:`viewed_sample` start from the record's arrays (views into it, no copy) and build the
PyG ``Data`` once, at the end, copying each array the record still owns exactly once
(``torch.from_numpy`` on a NumPy copy: no per-key ``torch.tensor`` and no PyG
``__setattr__`` bookkeeping).

Views with a NumPy form (:func:`~molssl.objectives.views.array_form`) run on the arrays
before the ``Data`` exists. The first view without one ends the array part: the ``Data`` is
built and that view and every later one are called on it, as before.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch_geometric.data import Data

from molssl.objectives.views import array_form

if TYPE_CHECKING:
    from molssl.datamodules.records import MoleculeRecord

__all__ = [
    "data_from_arrays",
    "record_arrays",
    "record_data",
    "viewed_sample",
]

# Stored shortest-path byte -> sample value (int64, -1 unreachable): one gather converts
# and copies. Kept in step with records.SPD_UNREACHABLE by a test.
_SPD_VALUES = np.arange(256, dtype=np.int64)
_SPD_VALUES[255] = -1

# Keys of a record's sample in the order Data(**keys) stores them (x, edge_index, edge_attr,
# pos first, as PyG's constructor sets those before its keyword arguments), with their dtype.
_SAMPLE_DTYPES: dict[str, Any] = {
    "x": np.int64,
    "edge_index": np.int64,
    "edge_attr": np.int64,
    "pos": np.float32,
    "z": np.int64,
    "fragment": np.int64,
    "torsion_atoms": np.int64,
    "torsion_moving": np.bool_,
    "spd": np.int64,
}
_TORCH_DTYPES = {
    np.dtype(np.int64): torch.long,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.bool_): torch.bool,
}


def record_arrays(record: MoleculeRecord, conformer: int = 0) -> dict[str, np.ndarray]:
    """The sample's arrays before views: the record's own arrays (not copies), ``spd`` converted.

    ``pos`` is conformer ``conformer`` (float32); ``spd`` is the flat int64 form (``-1``
    unreachable), a new array. The others are the record's: read them, never write into them.

    Raises:
        IndexError: ``conformer`` is not in ``[0, K)``.
    """
    if not 0 <= conformer < len(record.conformers):
        raise IndexError(
            f"conformer {conformer} out of range: molecule {record.mol_id} has "
            f"{len(record.conformers)} conformer(s)"
        )
    return {
        "x": record.x,
        "edge_index": record.edge_index,
        "edge_attr": record.edge_attr,
        "pos": np.asarray(record.conformers[conformer], dtype=np.float32),
        "z": record.z,
        "fragment": record.fragment,
        "torsion_atoms": record.torsion_atoms,
        "torsion_moving": record.torsion_moving,
        "spd": _SPD_VALUES[np.asarray(record.spd, dtype=np.uint8).reshape(-1)],
    }


def _tensor(value: np.ndarray, dtype: Any, copy: bool) -> torch.Tensor:
    # One NumPy copy (or none for an array the pipeline made), then a zero-copy tensor.
    array = np.array(value, dtype=dtype, order="C", copy=True if copy else None)
    return torch.from_numpy(array)


def data_from_arrays(
    arrays: MutableMapping[str, np.ndarray],
    record: MoleculeRecord,
    shared: MutableMapping[str, np.ndarray] | None = None,
    drop: Sequence[str] = (),
) -> Data:
    """The ``Data`` of a sample: its arrays as tensors, then ``smiles``, ``source_id`` and
    ``mol_id`` (0-d long) from ``record``, and ``num_nodes`` from ``z`` (a view may have
    removed atoms, :class:`~molssl.objectives.views.RemoveHydrogens`).

    Args:
        arrays: The sample's arrays (:func:`record_arrays`, possibly updated by views).
        record: The record the sample comes from.
        shared: The arrays as they came from the record; a key whose array is still that very
            array is copied (so changing the ``Data`` never changes the record), any other
            array is used as it is. ``None``: copy every array.
        drop: Keys to leave out.
    """
    mapping: dict[str, Any] = {}
    added: dict[str, Any] = {}  # keys views added come after the record's, as on a Data
    for key, value in arrays.items():
        if key in drop:
            continue
        dtype = _SAMPLE_DTYPES.get(key)
        copy = shared is None or value is shared.get(key)
        if dtype is None:
            if isinstance(value, torch.Tensor):
                added[key] = value.clone() if copy else value
            else:
                added[key] = _tensor(value, value.dtype, copy)
        else:
            mapping[key] = _tensor(value, dtype, copy)
    mapping["smiles"] = record.smiles
    mapping["source_id"] = record.source_id
    # A 0-d tensor through NumPy: a third of torch.tensor's cost per sample.
    mapping["mol_id"] = torch.from_numpy(np.array(record.mol_id, dtype=np.int64))
    mapping["num_nodes"] = len(arrays["z"]) if "z" in arrays else len(record.z)
    mapping.update(added)
    data = Data()
    # A new Data has no cached attribute sets to invalidate, and no value here is None:
    # what Data.__setattr__ would do per key reduces to storing it.
    data._store._mapping.update(mapping)
    return data


def record_data(record: MoleculeRecord, conformer: int = 0) -> Data:
    """``record.to_data(conformer)``: every tensor a copy, none shares the record's memory."""
    arrays = record_arrays(record, conformer)
    return data_from_arrays(arrays, record, _record_owned(arrays))


def _record_owned(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # The arrays of record_arrays that are the record's own (all but the converted spd).
    shared = dict(arrays)
    del shared["spd"]
    return shared


def viewed_sample(
    record: MoleculeRecord,
    views: Sequence[Callable[[Data], Data]],
    drop: Sequence[str] = (),
    private: bool = False,
) -> Data:
    """One sample: a conformer drawn from torch's generator, the views, ``drop`` left out.

    The same ``Data`` as ``record.to_data(k)`` passed through ``views`` in order with the
    keys of ``drop`` deleted at the end, for the same state of torch's global generator
    (the conformer is drawn only when the record has several). Views with a NumPy form run on
    the arrays first (see the module docstring).

    ``private=True`` says that nothing else holds the record's arrays (a record the stream
    copied out of its chunk and hands over): the ``Data`` is then built on them without
    copying them again.
    """
    conformer = 0
    if len(record.conformers) > 1:
        conformer = int(torch.randint(len(record.conformers), ()))
    arrays = record_arrays(record, conformer)
    shared: dict[str, np.ndarray] = {} if private else _record_owned(arrays)
    rest: Sequence[Callable[[Data], Data]] = ()
    for position, view in enumerate(views):
        transform = array_form(view)
        if transform is None:
            rest = views[position:]
            break
        transform(arrays)
    if not rest:
        return data_from_arrays(arrays, record, shared, drop)
    data = data_from_arrays(arrays, record, shared)
    for view in rest:
        data = view(data)
    for key in drop:
        if key in data:
            del data[key]
    return data

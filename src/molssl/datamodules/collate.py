"""Collation of pre-training samples into a PyG ``Batch``, without PyG's per-key generality.

:func:`collate_samples` gives the ``Batch`` that ``Batch.from_data_list`` gives (same class,
same keys in the same order, same values, ``batch``, ``ptr``, ``_slice_dict``, ``_inc_dict``,
``_num_graphs``, so ``get_example`` and ``to_data_list`` work), for the samples the data
pipeline makes: plain ``Data`` objects with an integer ``num_nodes``, the same keys, and only
dense CPU tensors and strings as values. It applies PyG's default rules
(``Data.__cat_dim__`` / ``Data.__inc__``): keys containing ``index`` (or ``face``) are
concatenated along the last dimension and shifted by the nodes before them, every other
tensor along the first, 0-d tensors stacked, strings kept as lists. Anything else (a
``Data`` subclass with its own rules, a key PyG treats specially such as ``*batch*`` or
``ptr``, sparse or GPU tensors, numbers, nested structures, differing keys) goes to
``Batch.from_data_list`` unchanged.

Inside a data-loader worker every tensor of the batch is placed in one block of shared
memory, so the batch crosses to the main process as one shared segment.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import get_worker_info
from torch_geometric.data import Batch, Data

__all__ = ["collate_samples", "fast_collatable"]

# An empty DataBatch (the class Batch.from_data_list makes for Data): copying it is much
# cheaper than Batch(_base_cls=Data), which goes through PyG's dynamic-inheritance metaclass.
_EMPTY_BATCH: Batch | None = None


def _new_batch() -> Batch:
    global _EMPTY_BATCH
    if _EMPTY_BATCH is None:
        _EMPTY_BATCH = Batch(_base_cls=Data)
    return copy.copy(_EMPTY_BATCH)


def _is_index_key(key: str) -> bool:
    # Data.__cat_dim__ / Data.__inc__ defaults: such keys hold node indices.
    return "index" in key or key == "face"


def fast_collatable(samples: Sequence[Data]) -> bool:
    """Whether :func:`collate_samples` batches ``samples`` itself (else PyG does).

    Like PyG, which decides how to batch a key from the first sample's value, the value
    types are checked on the first sample; the others must have the same keys, an integer
    ``num_nodes``, plain tensors where the first has tensors, and the same dtype for keys
    holding node indices.
    """
    if not samples or type(samples[0]) is not Data:
        return False
    first = samples[0]._store._mapping
    if not isinstance(first.get("num_nodes"), int):
        return False
    tensor_keys: list[str] = []
    index_dtypes: dict[str, torch.dtype] = {}
    for key, value in first.items():
        if key == "num_nodes" or isinstance(value, str):
            continue
        if key == "ptr" or "batch" in key or not _plain_tensor(value):
            return False
        tensor_keys.append(key)
        if _is_index_key(key):
            if not _index_dtype(value):
                return False
            index_dtypes[key] = value.dtype
    keys = first.keys()
    for sample in samples[1:]:
        if type(sample) is not Data:
            return False
        mapping = sample._store._mapping
        if mapping.keys() != keys or not isinstance(mapping["num_nodes"], int):
            return False
        for key in tensor_keys:
            if type(mapping[key]) is not torch.Tensor:
                return False
        for key, dtype in index_dtypes.items():
            if mapping[key].dtype != dtype:
                return False
    return True


def _plain_tensor(value: Any) -> bool:
    return (
        type(value) is torch.Tensor
        and value.layout == torch.strided
        and value.is_cpu
        and not value.is_nested
    )


def _index_dtype(value: torch.Tensor) -> bool:
    # Node indices are shifted in place after concatenation; a bool "index" would change
    # dtype under PyG's out-of-place shift, so leave such a key to PyG.
    return value.dtype != torch.bool and not value.is_complex()


def _cumsum(counts: torch.Tensor) -> torch.Tensor:
    # torch_geometric.utils.cumsum of a 1-D tensor: a leading 0, then the running sum.
    out = counts.new_zeros(counts.numel() + 1)
    torch.cumsum(counts, dim=0, out=out[1:])
    return out


def _into_one_shared_storage(batch: Batch) -> Batch:
    # Every tensor of the batch (values, batch, ptr, slice and increment tensors) becomes a
    # view of one shared-memory block: the batch then crosses to the main process as one
    # shared segment instead of one per tensor (PyG's in-worker collation shares each key
    # separately, and the ~30 small bookkeeping tensors each got their own segment when
    # pickled), which cut the worker's and the main process's cost per batch several-fold.
    places: list[tuple[dict[str, Any], str, torch.Tensor]] = []
    for mapping in (batch._store._mapping, batch._slice_dict, batch._inc_dict):
        places.extend(
            (mapping, key, value)
            for key, value in mapping.items()
            if isinstance(value, torch.Tensor)
        )
    offsets, end = [], 0
    for _, _, value in places:
        end = -(-end // _ALIGNMENT) * _ALIGNMENT
        offsets.append(end)
        end += value.numel() * value.element_size()
    storage = torch.UntypedStorage._new_shared(max(end, _ALIGNMENT))
    for (mapping, key, value), offset in zip(places, offsets, strict=True):
        view = torch.empty(0, dtype=value.dtype)
        view.set_(storage, offset // value.element_size(), value.shape)
        view.copy_(value)
        mapping[key] = view
    return batch


# Byte alignment of each tensor in the shared block (the largest element size batched).
_ALIGNMENT = 16


def collate_samples(samples: Sequence[Data]) -> Batch:
    """``Batch.from_data_list(samples)``, faster for the pipeline's samples (see module doc)."""
    samples = list(samples)
    if not fast_collatable(samples):
        return Batch.from_data_list(samples)
    mappings = [sample._store._mapping for sample in samples]
    num_graphs = len(samples)
    node_counts = [mapping["num_nodes"] for mapping in mappings]
    nodes = torch.tensor(node_counts, dtype=torch.long)
    node_offsets = _cumsum(nodes)[:-1]
    zeros = torch.zeros(num_graphs, dtype=torch.long)
    graph_slices = torch.arange(num_graphs + 1)

    out = _new_batch()
    store = out._store
    values_out: dict[str, Any] = {}
    slice_dict: dict[str, Any] = {}
    inc_dict: dict[str, Any] = {}
    for key, elem in mappings[0].items():
        if key == "num_nodes":
            store._num_nodes = node_counts
            values_out[key] = sum(node_counts)
            continue
        values = [mapping[key] for mapping in mappings]
        if isinstance(elem, str):
            values_out[key] = values
            slice_dict[key] = graph_slices.clone()
            inc_dict[key] = None
            continue
        index_key = _is_index_key(key)
        dim = -1 if index_key else 0
        if elem.dim() == 0:
            values = [value.unsqueeze(0) for value in values]
        sizes = torch.tensor([value.size(dim) for value in values], dtype=torch.long)
        value = torch.cat(values, dim=dim)
        if index_key:
            incs = node_offsets.clone()
            if num_graphs > 1 and int(incs[-1]) != 0:
                # Shift each sample's indices by the nodes of the samples before it.
                value += torch.repeat_interleave(incs, sizes)
        else:
            incs = zeros.clone()
        values_out[key] = value
        slice_dict[key] = _cumsum(sizes)
        inc_dict[key] = incs
    values_out["batch"] = torch.repeat_interleave(torch.arange(num_graphs), nodes)
    values_out["ptr"] = _cumsum(nodes)
    store._mapping.update(values_out)
    out._num_graphs = num_graphs
    out._slice_dict = slice_dict
    out._inc_dict = inc_dict
    return out if get_worker_info() is None else _into_one_shared_storage(out)

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

Inside a data-loader worker the tensors are concatenated straight into shared memory, as
PyG does, so handing the batch to the main process copies nothing.
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


def _concatenate(values: list[torch.Tensor], dim: int, in_worker: bool) -> torch.Tensor:
    if not in_worker:
        return torch.cat(values, dim=dim)
    # As PyG does in a worker: write into shared memory, so the batch crosses to the main
    # process without a copy.
    elem = values[0]
    numel = sum(value.numel() for value in values)
    storage = elem.untyped_storage()._new_shared(numel * elem.element_size(), device=elem.device)
    shape = list(elem.size())
    shape[dim] = sum(value.size(dim) for value in values)
    out = elem.new(storage).resize_(*shape)
    return torch.cat(values, dim=dim, out=out)


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
    in_worker = get_worker_info() is not None

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
        value = _concatenate(values, dim, in_worker)
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
    return out

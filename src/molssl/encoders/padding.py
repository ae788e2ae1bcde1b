"""Between PyG's flat node order ``(N, D)`` and padded per-molecule tensors ``(B, Nmax, D)``.

Transformers attend within a molecule, so they work on a dense, padded layout plus a boolean
``node_mask`` (``True`` = real atom, ``False`` = padding). Heads and objectives work on PyG's
flat layout. These two functions convert between them; ``from_padded(*to_padded(x, batch))``
returns ``x`` exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.utils import to_dense_batch


def to_padded(
    values: Tensor,
    batch: Tensor | None,
    num_graphs: int | None = None,
    fill_value: float = 0.0,
    max_num_nodes: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Scatter flat node values into a padded per-molecule tensor.

    Args:
        values: Node values ``(N, ...)`` in PyG order (``batch`` non-decreasing).
        batch: Molecule index of every node ``(N,)``; ``None`` means one molecule.
        num_graphs: Number of molecules ``B``; inferred from ``batch`` when ``None`` (pass it to
            keep trailing molecules without atoms and to avoid a device sync).
        fill_value: Value written at padded positions.
        max_num_nodes: Pad to this many positions instead of the largest molecule.

    Returns:
        ``(padded (B, Nmax, ...), node_mask (B, Nmax) bool)``.

    Raises:
        ValueError: If ``batch`` does not match ``values`` or is not sorted.
    """
    if batch is None:
        batch = torch.zeros(values.size(0), dtype=torch.long, device=values.device)
    if batch.dim() != 1 or batch.numel() != values.size(0):
        raise ValueError(
            f"batch must have shape ({values.size(0)},) to match values, got {tuple(batch.shape)}"
        )
    if batch.numel() > 1 and bool((batch[1:] < batch[:-1]).any()):
        raise ValueError("batch must be sorted (PyG order: all atoms of molecule 0, then 1, ...)")
    return to_dense_batch(
        values,
        batch,
        fill_value=fill_value,
        max_num_nodes=max_num_nodes,
        batch_size=num_graphs,
    )


def from_padded(padded: Tensor, node_mask: Tensor) -> Tensor:
    """Gather the real positions of a padded tensor back into PyG's flat node order.

    Args:
        padded: ``(B, Nmax, ...)``.
        node_mask: ``(B, Nmax)`` bool, ``True`` at real atoms.

    Returns:
        ``(N, ...)`` with ``N = node_mask.sum()``, molecule by molecule, atoms in order.

    Raises:
        ValueError: If the leading shapes of ``padded`` and ``node_mask`` differ.
    """
    if node_mask.dtype != torch.bool or padded.shape[:2] != node_mask.shape:
        raise ValueError(
            "node_mask must be a bool tensor of shape padded.shape[:2] = "
            f"{tuple(padded.shape[:2])}, got {node_mask.dtype} {tuple(node_mask.shape)}"
        )
    return padded[node_mask]

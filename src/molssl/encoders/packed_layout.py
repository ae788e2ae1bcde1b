"""The packed token layout of padded molecule batches, and attention over size buckets.

Graph transformers run on padded batches ``(B, N, D)`` (``N`` the largest molecule). Layer
norms, projections and feed-forward networks act on each token alone, so they need not run on
padding: on batches of 32 NCI molecules (28 atoms on average, the largest 45-98) the padded
layout holds 1.5-3x as many tokens as there are real ones, and 2-8x as many atom pairs.
:class:`PackedLayout` keeps the real tokens packed ``(T, D)`` (molecule by molecule, in order),
and :func:`bucketed_attention` runs attention per *bucket* of molecules of similar size, each
padded only to its own largest molecule, so the pairwise work shrinks too.

Buckets are contiguous runs of the molecules sorted by size, chosen by a small dynamic
programme that minimises ``sum(count * N_bucket**2) + overhead * buckets`` (the overhead stands
for the per-bucket kernel calls, in atom pairs). Attention within a molecule does not depend
on which other molecules share its padded block, so bucketing changes no result beyond float
round-off; attention dropout draws its masks in another order, though, so only runs without
attention dropout are equal value for value.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

#: Fixed cost of one more bucket per head, in atom pairs (measured on the CPU: a few tens of
#: microseconds of kernel calls per bucket and layer against ~1 ns per pair and head).
BUCKET_OVERHEAD_PAIR_HEADS = 40_000


def size_buckets(lengths: list[int], max_buckets: int, overhead_pairs: float) -> list[list[int]]:
    """Molecule indices per bucket (each sorted by decreasing length).

    Args:
        lengths: Real tokens per molecule.
        max_buckets: Most buckets to use.
        overhead_pairs: Cost of one more bucket, in padded atom pairs.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    sizes = np.array([lengths[i] for i in order], dtype=np.float64)
    count = len(order)
    if count == 0 or max_buckets <= 1:
        return [order]
    # cost[k][j]: best cost of the first j molecules (largest first) in k buckets.
    best = np.full((max_buckets + 1, count + 1), np.inf)
    choice = np.zeros((max_buckets + 1, count + 1), dtype=np.int64)
    best[0, 0] = 0.0
    starts = np.arange(count)
    for k in range(1, max_buckets + 1):
        for j in range(1, count + 1):
            # The bucket is molecules [i, j); its largest is molecule i.
            costs = best[k - 1, :j] + (j - starts[:j]) * sizes[:j] ** 2 + overhead_pairs
            i = int(np.argmin(costs))
            best[k, j], choice[k, j] = costs[i], i
    k = int(np.argmin(best[1:, count])) + 1
    buckets: list[list[int]] = []
    end = count
    while k > 0:
        start = int(choice[k, end])
        buckets.append(order[start:end])
        end, k = start, k - 1
    return buckets[::-1]


class _Bucket:
    """Molecules sharing one padded attention block of ``num_nodes`` positions."""

    def __init__(self, molecules: list[int], layout: PackedLayout, lengths: Tensor) -> None:
        device = layout.positions.device
        self.molecules = torch.tensor(molecules, dtype=torch.long, device=device)
        self.count = len(molecules)
        self.num_nodes = int(lengths[self.molecules].max())
        # Packed rows of the bucket's tokens, molecule by molecule, and their slots in the
        # bucket's padded block.
        starts = layout.starts[self.molecules]
        counts = lengths[self.molecules]
        local = torch.repeat_interleave(torch.arange(self.count, device=device), counts)
        offset = torch.arange(int(counts.sum()), device=device) - (counts.cumsum(0) - counts)[local]
        self.rows = starts[local] + offset
        self.slots = local * self.num_nodes + offset


class PackedLayout:
    """Where the real tokens of a padded ``(B, N, ...)`` batch sit (see the module docstring).

    Args:
        node_mask: ``(B, N)`` bool, ``True`` at real tokens.
        max_buckets: Most size buckets for the attention; 1 attends on the whole padded batch.
        num_heads: Attention heads (scales the cost of a bucket against its pairs).
    """

    def __init__(self, node_mask: Tensor, max_buckets: int = 1, num_heads: int = 1) -> None:
        self.batch_size, self.num_nodes = node_mask.shape
        #: Flat padded position ``b * N + i`` of every real token ``(T,)``.
        self.positions = node_mask.reshape(-1).nonzero().squeeze(1)
        #: Molecule of every real token ``(T,)``.
        self.groups = torch.div(self.positions, self.num_nodes, rounding_mode="floor")
        lengths = node_mask.sum(dim=1)
        self.starts = lengths.cumsum(0) - lengths
        prefix = torch.arange(self.num_nodes, device=node_mask.device) < lengths[:, None]
        self.buckets: list[_Bucket] = []
        self.attn_mask: Tensor | None = None
        self.bucket_masks: list[Tensor | None] = []
        if max_buckets > 1 and bool(torch.equal(prefix, node_mask)):
            groups = size_buckets(
                lengths.tolist(), max_buckets, BUCKET_OVERHEAD_PAIR_HEADS / max(num_heads, 1)
            )
            if len(groups) > 1:
                self.buckets = [_Bucket(group, self, lengths) for group in groups]
                order = torch.cat([bucket.rows for bucket in self.buckets])
                self.unsort = torch.empty_like(order)
                self.unsort[order] = torch.arange(order.numel(), device=order.device)

    def pack(self, padded: Tensor) -> Tensor:
        """``(B, N, ...)`` -> ``(T, ...)``: the real tokens."""
        flat = padded.reshape(self.batch_size * self.num_nodes, *padded.shape[2:])
        return flat.index_select(0, self.positions)

    def pad(self, packed: Tensor) -> Tensor:
        """``(T, ...)`` -> ``(B, N, ...)``, zeros at padding."""
        flat = packed.new_zeros(self.batch_size * self.num_nodes, *packed.shape[1:])
        flat = flat.index_copy(0, self.positions, packed)
        return flat.view(self.batch_size, self.num_nodes, *packed.shape[1:])

    def set_attention_mask(self, attn_mask: Tensor | None) -> None:
        """Keep the float attention mask of the padded batch (shared by all layers) and cut
        each bucket's from it once (its molecules, cropped to its size)."""
        self.attn_mask = attn_mask
        self.bucket_masks: list[Tensor | None] = []
        for bucket in self.buckets:
            mask = attn_mask
            if mask is not None:
                if mask.size(0) != 1:
                    mask = mask.index_select(0, bucket.molecules)
                mask = mask[..., : bucket.num_nodes, : bucket.num_nodes]
            self.bucket_masks.append(mask)


def bucketed_attention(
    qkv: Tensor, layout: PackedLayout, num_heads: int, dropout_p: float
) -> Tensor:
    """Multi-head attention of packed tokens: ``qkv (T, 3 * D)`` -> ``(T, D)``.

    Each bucket of ``layout`` attends in its own padded block with its own mask; without
    buckets, the whole padded batch attends with the layout's attention mask (see
    :meth:`PackedLayout.set_attention_mask`).
    """
    width = qkv.size(1) // 3
    head_dim = width // num_heads
    if not layout.buckets:
        blocks = [(layout.pad(qkv), layout.attn_mask, None)]
    else:
        blocks = []
        for bucket, mask in zip(layout.buckets, layout.bucket_masks, strict=True):
            padded = qkv.new_zeros(bucket.count * bucket.num_nodes, 3 * width)
            padded = padded.index_copy(0, bucket.slots, qkv.index_select(0, bucket.rows))
            blocks.append((padded.view(bucket.count, bucket.num_nodes, -1), mask, bucket))
    outs = []
    for padded, mask, bucket in blocks:
        count, size = padded.shape[:2]
        q, k, v = padded.view(count, size, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        out = out.transpose(1, 2).reshape(count * size, width)
        outs.append(out.index_select(0, layout.positions if bucket is None else bucket.slots))
    if len(outs) == 1:
        return outs[0]
    return torch.cat(outs).index_select(0, layout.unsort)

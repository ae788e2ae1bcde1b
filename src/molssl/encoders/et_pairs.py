"""ET edges as undirected atom pairs: each distance filter computed once per pair (CPU fast path).

An ET layer filters every edge ``j -> i`` by functions of its length alone (``dk``, ``dv``:
an activation of ``rbf(r) @ W + b``). Without a neighbour cap the edge list holds both
directions of every pair, so these filters -- the layer's largest matrix products and most
of its transcendental functions -- are the same twice. Here the edges are laid out as ``P``
pairs: the ``P`` forward edges first, then their ``P`` reverses in the same order, so that a
per-pair filter ``(P, ...)`` broadcasts over the directed edges viewed as ``(2, P, ...)``
without being copied, and the gradients of the two directions are summed by one addition.
Self-loops (distance 0: one filter row for all atoms, no direction) are per-atom terms, and
need no gather or scatter at all.

:class:`PairedEdgeAttention` is the edge part of a layer (attention, filters' activations,
messages, sums into the atoms) over this layout, with a hand-written backward that reuses the
forward's intermediates (no recomputation) and writes the gradients of the value parts into
one buffer rather than splitting and concatenating. It is first-order only
(``once_differentiable``): force training runs the plain path.

With a neighbour cap an atom may keep a neighbour that does not keep it: such an edge gets a
*dummy* reverse whose messages go to a spare row ``num_atoms`` that is dropped (its gradients
are then zero), so the layout stays two halves of equal length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from molssl.encoders.et_edges import activation_backward

if TYPE_CHECKING:
    from molssl.encoders.et_layers import EquivariantMultiHeadAttention


@dataclass
class EdgePairs:
    """A batch's edges as undirected pairs plus self-loops (see the module docstring).

    Attributes:
        source: ``(2P,)`` neighbour ``j`` of each directed edge: the ``P`` forward edges, then
            their reverses in the same order.
        target: ``(2P,)`` centre ``i`` of each directed edge (where its query is read).
        scatter_target: ``(2P,)`` the row each message is summed into: ``target``, except
            ``num_atoms`` (a spare row, dropped) for the dummy reverses of edges whose reverse
            the neighbour cap removed; ``None`` when there are none.
        distances: ``(P,)`` pair lengths.
        unit: ``(2P, 3)`` unit vectors from target to source.
        num_atoms: Atoms in the batch.
        self_loops: Whether every atom attends to itself (the edge list held self-loops).
        rbf: ``(P, K)`` radial basis of :attr:`distances` (set by the encoder).
        rbf_self: ``(1, K)`` radial basis at distance 0, the self-loops' (set by the encoder).
    """

    source: Tensor
    target: Tensor
    scatter_target: Tensor | None
    distances: Tensor
    unit: Tensor
    num_atoms: int
    self_loops: bool
    rbf: Tensor | None = None
    rbf_self: Tensor | None = None

    @property
    def num_pairs(self) -> int:
        return self.distances.numel()

    @property
    def rows(self) -> int:
        """Rows of the per-atom sums: one more than the atoms when a spare row is needed."""
        return self.num_atoms + (self.scatter_target is not None)

    @property
    def sum_index(self) -> Tensor:
        """The row each directed edge's message is summed into."""
        return self.target if self.scatter_target is None else self.scatter_target


def edge_pairs(
    edge_index: Tensor, distances: Tensor, unit_vectors: Tensor, num_atoms: int
) -> EdgePairs:
    """The pair layout of a directed edge list with optional self-loops.

    Args:
        edge_index: ``(2, E)``, row 0 the source ``j``, row 1 the target ``i``; no duplicates.
        distances: ``(E,)`` edge lengths.
        unit_vectors: ``(E, 3)`` unit vectors from target to source.
        num_atoms: Atoms in the batch.
    """
    source, target = edge_index[0], edge_index[1]
    is_self = source == target
    self_loops = bool(is_self.any())
    if self_loops:
        keep = ~is_self
        source, target = source[keep], target[keep]
        distances, unit_vectors = distances[keep], unit_vectors[keep]
    keys = target * num_atoms + source
    sorted_keys = keys.sort().values
    reverse_keys = source * num_atoms + target
    found = torch.searchsorted(sorted_keys, reverse_keys).clamp_(max=max(keys.numel() - 1, 0))
    has_reverse = (
        sorted_keys[found] == reverse_keys if keys.numel() else torch.zeros_like(source, dtype=bool)
    )
    # One edge per pair: the one with source > target, or the only one the cap left.
    first = ((source > target) | ~has_reverse).nonzero().squeeze(1)
    f_source, f_target = source[first], target[first]
    reverse_exists = has_reverse[first]
    scatter_target = None
    if not bool(reverse_exists.all()):
        spare = torch.full_like(f_source, num_atoms)
        scatter_target = torch.cat([f_target, torch.where(reverse_exists, f_source, spare)])
    unit = unit_vectors[first]
    return EdgePairs(
        source=torch.cat([f_source, f_target]),
        target=torch.cat([f_target, f_source]),
        scatter_target=scatter_target,
        distances=distances[first],
        unit=torch.cat([unit, -unit]),
        num_atoms=num_atoms,
        self_loops=self_loops,
    )


class PairedEdgeAttention(torch.autograd.Function):
    """Edge part of an ET layer over :class:`EdgePairs` (self-loops excluded): per-atom sums
    ``(m (N, D), vec_sum (N, 3, D))`` of the scalar and vector messages.

    Inputs: the layer; per atom ``q, k (N, D)`` (heads side by side), the values
    ``v (N, parts * D)`` laid out part by part (``s``, ``gate_vec``, ``gate_dir``, each ``D``
    wide with the heads side by side; without ``gate_vec`` when ``vec`` is ``None``: zero
    vectors) and ``vec (N, 3, D)`` or ``None``; per pair the filters' pre-activations
    ``pre (P, Fk + Fv)`` (the ``dk`` columns, then the ``dv`` columns in the values' layout,
    either absent when the layer has no such filter; ``None`` when it has neither) and the
    cosine cutoff ``(P,)``; the layout. Returns the gradients of ``q, k, v, vec`` and ``pre``.

    Every per-edge tensor is two-dimensional, ``(E, D)`` or ``(E, parts * D)``, and per-head
    quantities are expanded to ``(E, D)`` before they multiply: PyTorch's CPU kernels are several
    times slower on operands whose innermost run is one head (``d`` floats) than on rows.
    """

    @staticmethod
    def forward(
        ctx: Any,
        layer: EquivariantMultiHeadAttention,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        vec: Tensor | None,
        pre: Tensor | None,
        cutoff: Tensor,
        pairs: EdgePairs,
    ) -> tuple[Tensor, Tensor]:
        heads, hidden = layer.num_heads, layer.hidden_channels
        num_pairs, edges = pairs.num_pairs, 2 * pairs.num_pairs
        width_v = v.size(1)
        width_k = hidden if layer.dk_proj is not None else 0
        act = None if pre is None else layer.act(pre)
        dk = None if width_k == 0 else act[:, :width_k]
        dv = None if layer.dv_proj is None else act[:, width_k:]
        q_i = q.index_select(0, pairs.target)
        k_j = k.index_select(0, pairs.source)
        qk = q_i * k_j
        weighted = qk if dk is None else (qk.view(2, num_pairs, hidden) * dk).view(edges, hidden)
        attn_pre = weighted.view(edges, heads, hidden // heads).sum(dim=-1)
        attn_act = layer.attn_activation(attn_pre)
        cut = cutoff.repeat(2).unsqueeze(1)
        v_j = v.index_select(0, pairs.source)
        if layer.vector_cutoff:
            attn, v_scaled = attn_act, v_j * cut
        else:
            attn, v_scaled = attn_act * cut, v_j
        attn_full = _per_channel(attn, hidden)
        values = v_scaled
        if dv is not None:
            values = (v_scaled.view(2, num_pairs, width_v) * dv).view(edges, width_v)
        index = pairs.sum_index
        m = q.new_zeros(pairs.rows, hidden).index_add_(0, index, values[:, :hidden] * attn_full)
        # One broadcasting kernel each (three per-component kernels writing strided rows
        # were ~15% slower on the CPU).
        vector = values[:, -hidden:].unsqueeze(1) * pairs.unit.unsqueeze(2)
        vec_j = None
        if vec is not None:
            # Gathered as rows of 3 D floats: index_select is ~2x slower on (N, 3, D).
            rows = vec.reshape(vec.size(0), 3 * hidden)
            vec_j = rows.index_select(0, pairs.source).view(edges, 3, hidden)
            vector.addcmul_(vec_j, values[:, hidden : 2 * hidden].unsqueeze(1))
        vec_sum = q.new_zeros(pairs.rows, 3, hidden).index_add_(0, index, vector)
        ctx.layer, ctx.pairs = layer, pairs
        ctx.save_for_backward(
            q_i, k_j, qk, dk, dv, attn_pre, attn_act, attn_full, v_scaled, values, vec_j, pre,
            act, cut,
        )  # fmt: skip
        ctx.vec_shape = None if vec is None else vec.shape
        num_atoms = pairs.num_atoms
        return m[:num_atoms], vec_sum[:num_atoms]

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_m: Tensor, grad_vec_sum: Tensor) -> tuple[Tensor | None, ...]:
        layer, pairs = ctx.layer, ctx.pairs
        (q_i, k_j, qk, dk, dv, attn_pre, attn_act, attn_full) = ctx.saved_tensors[:8]
        (v_scaled, values, vec_j, pre, act, cut) = ctx.saved_tensors[8:]
        heads, hidden, num_atoms = layer.num_heads, layer.hidden_channels, pairs.num_atoms
        num_pairs, edges, width_v = pairs.num_pairs, 2 * pairs.num_pairs, values.size(1)
        if pairs.rows > num_atoms:  # the spare row's messages were dropped: zero gradient
            grad_m = torch.cat([grad_m, grad_m.new_zeros(1, hidden)])
            grad_vec_sum = torch.cat([grad_vec_sum, grad_vec_sum.new_zeros(1, 3, hidden)])
        index = pairs.sum_index
        g_m = grad_m.index_select(0, index)
        g_rows = grad_vec_sum.reshape(-1, 3 * hidden)
        g_vector = g_rows.index_select(0, index).view(edges, 3, hidden)
        # Gradients of the value parts (s, gate_vec, gate_dir), written into one buffer.
        g_values = values.new_empty(edges, width_v)
        g_dir, unit = g_values[:, -hidden:], pairs.unit
        torch.mul(g_vector[:, 0], unit[:, 0:1], out=g_dir)
        for c in (1, 2):
            g_dir.addcmul_(g_vector[:, c], unit[:, c : c + 1])
        grad_vec = None
        if vec_j is not None:
            gate_vec = values[:, hidden : 2 * hidden]
            g_vec_j = g_vector * gate_vec.unsqueeze(1)
            grad_vec = g_vec_j.new_zeros(ctx.vec_shape).index_add_(0, pairs.source, g_vec_j)
            g_gate_vec = g_values[:, hidden : 2 * hidden]
            torch.mul(g_vector[:, 0], vec_j[:, 0], out=g_gate_vec)
            for c in (1, 2):
                g_gate_vec.addcmul_(g_vector[:, c], vec_j[:, c])
        torch.mul(g_m, attn_full, out=g_values[:, :hidden])
        g_attn = (g_m * values[:, :hidden]).view(edges, heads, hidden // heads).sum(dim=-1)
        width_k = 0 if dk is None else hidden
        grad_act = None if pre is None else torch.empty_like(pre)
        if dv is not None:
            g_dv = g_values * v_scaled
            torch.add(g_dv[:num_pairs], g_dv[num_pairs:], out=grad_act[:, width_k:])
            g_values.view(2, num_pairs, width_v).mul_(dv)
        if layer.vector_cutoff:
            g_values.mul_(cut)
        else:
            g_attn = g_attn * cut
        grad_v = g_values.new_zeros(num_atoms, width_v).index_add_(0, pairs.source, g_values)
        g_pre = activation_backward(layer.attn_activation, attn_pre, attn_act, g_attn)
        g_pre = _per_channel(g_pre, hidden)
        g_qk = g_pre
        if dk is not None:
            g_dk = g_pre * qk
            torch.add(g_dk[:num_pairs], g_dk[num_pairs:], out=grad_act[:, :width_k])
            g_qk = (g_pre.view(2, num_pairs, hidden) * dk).view(edges, hidden)
        grad_q = g_qk.new_zeros(num_atoms, hidden).index_add_(0, pairs.target, g_qk * k_j)
        grad_k = g_qk.new_zeros(num_atoms, hidden).index_add_(0, pairs.source, g_qk * q_i)
        grad_pre = None
        if pre is not None:
            grad_pre = activation_backward(layer.act, pre, act, grad_act, out=grad_act)
        return None, grad_q, grad_k, grad_v, grad_vec, grad_pre, None, None


def _per_channel(per_head: Tensor, hidden: int) -> Tensor:
    """``(E, H)`` values repeated over each head's channels: ``(E, D)``, contiguous."""
    edges, heads = per_head.shape
    return per_head.unsqueeze(-1).expand(edges, heads, hidden // heads).reshape(edges, hidden)

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
one buffer rather than splitting and concatenating. Its per-edge tensors are part-major
(``(parts, E, D)``: each operand one contiguous block) and the direction term of the vector
messages is a sparse product (:meth:`EdgePairs.direction_matrices`); together these made a
small UniCorn step ~20% faster than the row layout ``(E, parts * D)`` it replaced. It is
first-order only (``once_differentiable``): force training runs the plain path.

With a neighbour cap an atom may keep a neighbour that does not keep it: such an edge gets a
*dummy* reverse whose messages go to a spare row ``num_atoms`` that is dropped (its gradients
are then zero), so the layout stays two halves of equal length.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
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

    _direction: tuple[Tensor, Tensor] | None = field(default=None, repr=False)

    @property
    def sum_index(self) -> Tensor:
        """The row each directed edge's message is summed into."""
        return self.target if self.scatter_target is None else self.scatter_target

    def direction_matrices(self) -> tuple[Tensor, Tensor]:
        """Sparse CSR matrices ``S (3 rows, 2P)`` with ``S[c rows + i, e] = unit[e, c]`` for the
        edges ``e`` summed into row ``i`` (component-major), and ``S^T (2P, 3 rows)``, both
        built once per batch and shared by every layer.

        ``S @ g`` is the direction term of the vector messages, ``sum_e g_e unit_e`` per
        component and row, ``(3, rows, D)``, without the ``(E, 3, D)`` product and its scatter;
        ``S^T @ G`` is its gradient, ``sum_c unit_e[c] G[c, i_e]`` per edge. Entries of a row
        are summed in edge order, as ``index_add`` sums them.
        """
        if self._direction is None:
            self._direction = _direction_matrices(self.sum_index, self.unit, self.rows)
        return self._direction


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


def _direction_matrices(index: Tensor, unit: Tensor, rows: int) -> tuple[Tensor, Tensor]:
    """:meth:`EdgePairs.direction_matrices` for edges summed into ``index`` with directions
    ``unit (E, 3)``."""
    edges, device = index.numel(), index.device
    # S: per component, the incidence matrix of the rows (edges sorted by row, stably).
    order = torch.argsort(index, stable=True)
    starts = torch.cat([index.new_zeros(1), torch.bincount(index, minlength=rows).cumsum(0)])
    sum_rows = torch.cat([starts[:-1] + c * edges for c in range(3)] + [starts[-1:] * 3])
    sum_values = unit.index_select(0, order).t().reshape(-1)
    # S^T: one row per edge, its entries in columns c rows + i, already in ascending order.
    gather_rows = torch.arange(0, 3 * edges + 1, 3, device=device)
    offsets = torch.arange(3, device=device) * rows
    gather_columns = (index.unsqueeze(1) + offsets).reshape(-1)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": products with dense work
        warnings.simplefilter("ignore", UserWarning)
        direction_sum = torch.sparse_csr_tensor(
            sum_rows, order.repeat(3), sum_values, (3 * rows, edges), check_invariants=False
        )
        direction_gather = torch.sparse_csr_tensor(
            gather_rows, gather_columns, unit.reshape(-1), (edges, 3 * rows),
            check_invariants=False,
        )  # fmt: skip
    return direction_sum, direction_gather


def _gather(parts: Tensor, index: Tensor) -> Tensor:
    """``parts (K, M, D)`` gathered along dim 1: ``(K, len(index), D)``, one ``index_select``
    per part (4x faster than one ``index_select`` along dim 1 on the CPU; ``parts`` should be
    contiguous: gathering rows with a stride was several times slower again)."""
    out = parts.new_empty(parts.size(0), index.numel(), parts.size(2))
    for part in range(parts.size(0)):
        torch.index_select(parts[part], 0, index, out=out[part])
    return out


def _scatter(parts: Tensor, index: Tensor, rows: int) -> Tensor:
    """``parts (K, E, D)`` summed along dim 1 into ``(K, rows, D)`` rows ``index``, one
    ``index_add_`` per part into a contiguous block."""
    out = parts.new_zeros(parts.size(0), rows, parts.size(2))
    for part in range(parts.size(0)):
        out[part].index_add_(0, index, parts[part])
    return out


class PairedEdgeAttention(torch.autograd.Function):
    """Edge part of an ET layer over :class:`EdgePairs` (self-loops excluded): per-atom sums
    ``(m (N, D), vec_sum (N, 3, D))`` of the scalar and vector messages.

    Inputs: the layer; per atom ``q, k (N, D)`` (heads side by side), the values
    ``v (parts, N, D)`` part-major (``s``, ``gate_vec``, ``gate_dir``, each with the heads side
    by side; without ``gate_vec`` when ``vec`` is ``None``: zero vectors) and ``vec (N, 3, D)``
    or ``None``; per pair the pre-activations of the ``dk`` filter ``(P, D)`` and of the ``dv``
    filter ``(parts, P, D)`` (``None`` when the layer has no such filter) and the cosine cutoff
    ``(P,)``; the layout. Returns the gradients of ``q, k, v, vec`` and both pre-activations.

    Every per-edge operand is a contiguous ``(E, D)`` block (part-major values, the vector
    components first): PyTorch's CPU kernels run such operands as one flat loop, and were 2-4x
    slower on the column slices of ``(E, parts * D)`` rows, or on operands whose innermost run
    is one head (per-head quantities are therefore expanded to ``(E, D)`` before they
    multiply). The direction term of the vector messages and its gradient are sparse products
    with :meth:`EdgePairs.direction_sum` and its transpose (one pass, no ``(E, 3, D)`` tensor).
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)  # bf16 autocast: in f32
    def forward(
        ctx: Any,
        layer: EquivariantMultiHeadAttention,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        vec: Tensor | None,
        pre_k: Tensor | None,
        pre_v: Tensor | None,
        cutoff: Tensor,
        pairs: EdgePairs,
    ) -> tuple[Tensor, Tensor]:
        heads, hidden, rows = layer.num_heads, layer.hidden_channels, pairs.rows
        num_pairs, edges, parts = pairs.num_pairs, 2 * pairs.num_pairs, v.size(0)
        dk = None if pre_k is None else layer.act(pre_k)
        dv = None if pre_v is None else layer.act(pre_v)
        q_i = q.index_select(0, pairs.target)
        k_j = k.index_select(0, pairs.source)
        qk = q_i * k_j
        weighted = qk if dk is None else (qk.view(2, num_pairs, hidden) * dk).view(edges, hidden)
        attn_pre = weighted.view(edges, heads, hidden // heads).sum(dim=-1)
        attn_act = layer.attn_activation(attn_pre)
        cut = cutoff.repeat(2).unsqueeze(1)
        v_j = _gather(v, pairs.source)
        if layer.vector_cutoff:
            attn, v_scaled = attn_act, v_j * cut
        else:
            attn, v_scaled = attn_act * cut, v_j
        attn_full = _per_channel(attn, hidden)
        values = v_scaled
        if dv is not None:
            halves = (parts, 2, num_pairs, hidden)
            values = (v_scaled.view(halves) * dv.unsqueeze(1)).view(parts, edges, hidden)
        index = pairs.sum_index
        m = q.new_zeros(rows, hidden).index_add_(0, index, values[0] * attn_full)
        # Vector sums component-major, (3, rows, D): each component one contiguous block.
        direction_sum, _ = pairs.direction_matrices()
        vec_sum = torch.mm(direction_sum, values[-1]).view(3, rows, hidden)
        vec_j = None
        if vec is not None:
            vec_j = _gather(vec.transpose(0, 1).contiguous(), pairs.source)
            for c in range(3):
                vec_sum[c].index_add_(0, index, vec_j[c] * values[1])
        ctx.layer, ctx.pairs = layer, pairs
        ctx.save_for_backward(
            q_i, k_j, qk, dk, dv, attn_pre, attn_act, attn_full, v_scaled, values, vec_j, pre_k,
            pre_v, cut,
        )  # fmt: skip
        num_atoms = pairs.num_atoms
        return m[:num_atoms], vec_sum[:, :num_atoms].transpose(0, 1).contiguous()

    @staticmethod
    @once_differentiable
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx: Any, grad_m: Tensor, grad_vec_sum: Tensor) -> tuple[Tensor | None, ...]:
        layer, pairs = ctx.layer, ctx.pairs
        (q_i, k_j, qk, dk, dv, attn_pre, attn_act, attn_full) = ctx.saved_tensors[:8]
        (v_scaled, values, vec_j, pre_k, pre_v, cut) = ctx.saved_tensors[8:]
        heads, hidden, num_atoms = layer.num_heads, layer.hidden_channels, pairs.num_atoms
        num_pairs, edges, parts = pairs.num_pairs, 2 * pairs.num_pairs, values.size(0)
        if pairs.rows > num_atoms:  # the spare row's messages were dropped: zero gradient
            grad_m = torch.cat([grad_m, grad_m.new_zeros(1, hidden)])
            grad_vec_sum = torch.cat([grad_vec_sum, grad_vec_sum.new_zeros(1, 3, hidden)])
        index = pairs.sum_index
        g_m = grad_m.index_select(0, index)
        g_sum = grad_vec_sum.transpose(0, 1).contiguous()  # component-major, as the forward's
        # Gradients of the value parts (s, gate_vec, gate_dir), written into one buffer.
        g_values = values.new_empty(values.shape)
        _, direction_gather = pairs.direction_matrices()
        torch.mm(direction_gather, g_sum.view(-1, hidden), out=g_values[-1])
        grad_vec = None
        if vec_j is not None:
            g_vector = _gather(g_sum, index)
            g_gate_vec = torch.mul(g_vector[0], vec_j[0], out=g_values[1])
            for c in (1, 2):
                g_gate_vec.addcmul_(g_vector[c], vec_j[c])
            g_vec_j = g_vector.mul_(values[1])
            grad_vec = _scatter(g_vec_j, pairs.source, num_atoms).transpose(0, 1).contiguous()
        torch.mul(g_m, attn_full, out=g_values[0])
        g_attn = (g_m * values[0]).view(edges, heads, hidden // heads).sum(dim=-1)
        grad_pre_v = None
        if dv is not None:
            g_halves = g_values.view(parts, 2, num_pairs, hidden)
            v_halves = v_scaled.view(parts, 2, num_pairs, hidden)
            g_dv = torch.mul(g_halves[:, 0], v_halves[:, 0]).addcmul_(
                g_halves[:, 1], v_halves[:, 1]
            )
            grad_pre_v = activation_backward(layer.act, pre_v, dv, g_dv)
            g_values.view(parts, 2, num_pairs, hidden).mul_(dv.unsqueeze(1))
        if layer.vector_cutoff:
            g_values.mul_(cut)
        else:
            g_attn = g_attn * cut
        grad_v = _scatter(g_values, pairs.source, num_atoms)
        g_pre = activation_backward(layer.attn_activation, attn_pre, attn_act, g_attn)
        g_pre = _per_channel(g_pre, hidden)
        g_qk = g_pre
        grad_pre_k = None
        if dk is not None:
            g_halves, qk_halves = g_pre.view(2, num_pairs, hidden), qk.view(2, num_pairs, hidden)
            g_dk = torch.mul(g_halves[0], qk_halves[0]).addcmul_(g_halves[1], qk_halves[1])
            grad_pre_k = activation_backward(layer.act, pre_k, dk, g_dk)
            g_qk = (g_pre.view(2, num_pairs, hidden) * dk).view(edges, hidden)
        grad_q = g_qk.new_zeros(num_atoms, hidden).index_add_(0, pairs.target, g_qk * k_j)
        grad_k = g_qk.new_zeros(num_atoms, hidden).index_add_(0, pairs.source, g_qk * q_i)
        return None, grad_q, grad_k, grad_v, grad_vec, grad_pre_k, grad_pre_v, None, None


def _per_channel(per_head: Tensor, hidden: int) -> Tensor:
    """``(E, H)`` values repeated over each head's channels: ``(E, D)``, contiguous."""
    edges, heads = per_head.shape
    return per_head.unsqueeze(-1).expand(edges, heads, hidden // heads).reshape(edges, hidden)

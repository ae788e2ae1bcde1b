"""The edge work of one ET attention layer, in cache-sized chunks of edges (CPU fast path).

Per edge, an ET layer filters gathered atom features by distance filters (an activation of
``rbf @ W + b``) and sums the messages into the centre atom. Written as whole-edge-list torch
operations, each step writes an ``(E, 3 * D)`` tensor: at paper size (D = 256, ~16k edges for
32 molecules) ~50 MB, some thirty times per layer in forward and backward. On the CPU these
steps are bound by memory traffic and, above all, by page faults: glibc serves allocations that
large with fresh ``mmap`` calls and returns them on free, so each is faulted in and zeroed again
(169,000 minor faults per paper-size layer step). Done in chunks of a few hundred edges, whose
~1 MiB intermediates stay in the cache and are recycled by the allocator, a paper-size layer's
forward + backward ran 1.9x faster (docs/PERFORMANCE.md; with glibc's thresholds raised by
``mallopt`` the plain path catches up, and at small sizes the plain path is faster, see
:func:`worth_chunking`).

:class:`ChunkedEdgeAttention` is an autograd function over the edge part of a layer after the
filters' matrix products (attention, filters' activations, messages, aggregation). Its forward
walks the edges chunk by chunk and keeps only the two per-atom sums; its backward recomputes
each chunk's forward and applies the hand-written derivatives of the same equations,
accumulating into per-atom gradients and the filters' pre-activation gradients. Apart from its
inputs, nothing of size ``E x D`` is kept between forward and backward.

It is first-order only (``once_differentiable``): force training, which differentiates the
forces again, runs the plain path (:meth:`EquivariantMultiHeadAttention._use_chunks` excludes
edge geometry that requires grad).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from molssl.encoders.activations import ShiftedSoftplus

if TYPE_CHECKING:
    from molssl.encoders.et_layers import EquivariantMultiHeadAttention

#: Floats per ``(chunk, 3 * D)`` intermediate: 2**18 (1 MiB in float32) fits a core's L2 cache
#: and stays below glibc's mmap threshold, so chunks reuse the same memory.
CHUNK_FLOATS = 1 << 18

#: Below this many floats per ``(E, 3 * D)`` tensor (16 MiB in float32) the plain path is as
#: fast (allocations that size are recycled by glibc) and skips the backward's recomputation.
MIN_CHUNKED_FLOATS = 1 << 22


def chunk_edges(hidden_channels: int) -> int:
    """Edges per chunk for a layer of width ``hidden_channels``."""
    return max(32, CHUNK_FLOATS // (3 * hidden_channels))


def worth_chunking(num_edges: int, hidden_channels: int) -> bool:
    """Whether the edge tensors of a layer are large enough for the chunked path to pay."""
    return num_edges * 3 * hidden_channels >= MIN_CHUNKED_FLOATS


def activation_backward(
    module: nn.Module, pre: Tensor, act: Tensor, grad: Tensor, out: Tensor | None = None
) -> Tensor:
    """``grad * f'(pre)`` for the activation ``f = module`` with ``act = f(pre)``, written into
    ``out`` when given."""
    if isinstance(module, nn.SiLU):
        result = torch.ops.aten.silu_backward(grad, pre)
    elif isinstance(module, nn.Tanh):
        result = torch.ops.aten.tanh_backward(grad, act)
    elif isinstance(module, nn.Sigmoid):
        result = torch.ops.aten.sigmoid_backward(grad, act)
    elif isinstance(module, ShiftedSoftplus):
        result = grad * torch.sigmoid(pre)
    elif isinstance(module, nn.GELU):
        result = torch.ops.aten.gelu_backward(grad, pre, approximate=module.approximate)
    else:
        with torch.enable_grad():
            leaf = pre.detach().requires_grad_(True)
            (result,) = torch.autograd.grad(module(leaf), leaf, grad)
    if out is None:
        return result
    return out.copy_(result)


class _Chunk:
    """The forward quantities of one chunk of edges (recomputed in the backward)."""

    def __init__(
        self,
        layer: EquivariantMultiHeadAttention,
        atoms: tuple[Tensor, Tensor, Tensor, Tensor | None],
        edges: tuple[Tensor | None, Tensor | None, Tensor, Tensor, Tensor, Tensor],
    ) -> None:
        """``atoms``: ``(q, k, v, vec)``; ``edges``: the chunk's ``(pre_k, pre_v, cutoff, unit,
        source, target)``."""
        q, k, v, vec = atoms
        pre_k, pre_v, cutoff, unit, source, target = edges
        heads, head_dim = layer.num_heads, layer.head_dim
        size = source.numel()
        self.source, self.target = source, target
        self.pre_k, self.pre_v = pre_k, pre_v
        self.cutoff, self.unit = cutoff, unit
        self.q_i = q.index_select(0, target)
        self.k_j = k.index_select(0, source)
        qk = self.q_i * self.k_j
        if pre_k is not None:
            self.dk = layer.act(pre_k).view(size, heads, head_dim)
            self.qk = qk
            qk = qk * self.dk
        self.attn_pre = qk.sum(dim=-1)
        self.attn_act = layer.attn_activation(self.attn_pre)
        self.v_j = v.index_select(0, source)
        if layer.vector_cutoff:
            self.attn = self.attn_act
            self.v_scaled = self.v_j * cutoff[:, None, None]
        else:
            self.attn = self.attn_act * cutoff[:, None]
            self.v_scaled = self.v_j
        values = self.v_scaled
        if pre_v is not None:
            self.dv = layer.act(pre_v).view(size, heads, -1)
            values = values * self.dv
        # Zero vectors (vec None, the first layer): the values lack gate_vec, which only
        # multiplies them, and there is no vec_j * gate_vec term.
        self.s, self.gate_dir = values[..., :head_dim], values[..., -head_dim:]
        self.gate_vec = None if vec is None else values[..., head_dim : 2 * head_dim]
        self.vec_j = (
            None if vec is None else vec.index_select(0, source).view(size, 3, heads, head_dim)
        )

    def messages(self) -> tuple[Tensor, Tensor]:
        """Scalar ``(C, D)`` and vector ``(C, 3, D)`` messages of the chunk's edges."""
        size = self.source.numel()
        scalar = (self.s * self.attn.unsqueeze(2)).view(size, -1)
        vector = self.gate_dir.unsqueeze(1) * self.unit[:, :, None, None]
        if self.vec_j is not None:
            vector = torch.addcmul(vector, self.vec_j, self.gate_vec.unsqueeze(1))
        return scalar, vector.reshape(size, 3, -1)


class ChunkedEdgeAttention(torch.autograd.Function):
    """Edge part of an ET layer: ``(m (N, D), vec_sum (N, 3, D))`` from per-atom ``q, k, v,
    vec``, the filters' pre-activations ``pre_k (E, D)`` and ``pre_v (E, 3 * D)`` (``None``
    where the layer has no such filter) and the edge geometry, chunk by chunk (see the module
    docstring). With zero vectors (``vec`` None) ``v`` and ``pre_v`` lack the ``gate_vec``
    part: ``(N, H, 2 d)`` and ``(E, 2 D)``.

    The filter projections stay outside (one large matrix product per layer is faster than one
    per chunk); the function returns their gradients. ``cutoff`` and ``unit`` must not require
    grad.
    """

    @staticmethod
    def forward(
        ctx: Any,
        layer: EquivariantMultiHeadAttention,
        chunk: int,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        vec: Tensor | None,
        pre_k: Tensor | None,
        pre_v: Tensor | None,
        cutoff: Tensor,
        unit: Tensor,
        source: Tensor,
        target: Tensor,
    ) -> tuple[Tensor, Tensor]:
        num_atoms, hidden = q.size(0), layer.hidden_channels
        m = q.new_zeros(num_atoms, hidden)
        vec_sum = q.new_zeros(num_atoms, 3, hidden)
        inputs = (q, k, v, vec, pre_k, pre_v, cutoff, unit, source, target)
        for _, edges in _chunked(layer, chunk, inputs):
            scalar, vector = edges.messages()
            m.index_add_(0, edges.target, scalar)
            vec_sum.index_add_(0, edges.target, vector)
        ctx.layer, ctx.chunk = layer, chunk
        ctx.save_for_backward(q, k, v, vec, pre_k, pre_v, cutoff, unit, source, target)
        return m, vec_sum

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_m: Tensor, grad_vec_sum: Tensor) -> tuple[Tensor | None, ...]:
        layer, chunk = ctx.layer, ctx.chunk
        q, k, v, vec, pre_k, pre_v, cutoff, unit, source, target = ctx.saved_tensors
        heads, head_dim = layer.num_heads, layer.head_dim
        grad_q, grad_k = torch.zeros_like(q), torch.zeros_like(k)
        grad_v = torch.zeros_like(v)
        grad_vec = None if vec is None else torch.zeros_like(vec)
        grad_pre_k = torch.empty_like(pre_k) if pre_k is not None else None
        grad_pre_v = torch.empty_like(pre_v) if pre_v is not None else None
        grad_m = grad_m.view(-1, heads, head_dim)
        grad_vec_sum = grad_vec_sum.view(-1, 3, heads, head_dim)
        inputs = (q, k, v, vec, pre_k, pre_v, cutoff, unit, source, target)
        for part, e in _chunked(layer, chunk, inputs):
            size = e.source.numel()
            g_scalar = grad_m.index_select(0, e.target)
            g_vector = grad_vec_sum.index_select(0, e.target)
            # Vector message vec_j * gate_vec + gate_dir * unit.
            g_gate_dir = (g_vector * e.unit[:, :, None, None]).sum(dim=1)
            # Scalar message s * attn.
            g_s = g_scalar * e.attn.unsqueeze(2)
            g_attn = (g_scalar * e.s).sum(dim=-1)
            if grad_vec is None:
                g_values = torch.cat([g_s, g_gate_dir], dim=2)
            else:
                g_vec_j = (g_vector * e.gate_vec.unsqueeze(1)).view(size, 3, -1)
                grad_vec.index_add_(0, e.source, g_vec_j)
                g_gate_vec = (g_vector * e.vec_j).sum(dim=1)
                g_values = torch.cat([g_s, g_gate_vec, g_gate_dir], dim=2)
            if grad_pre_v is not None:
                g_dv = (g_values * e.v_scaled).view(size, -1)
                activation_backward(layer.act, e.pre_v, e.dv.view(size, -1), g_dv, grad_pre_v[part])
                g_values = g_values * e.dv
            if layer.vector_cutoff:
                g_values = g_values * e.cutoff[:, None, None]
            else:
                g_attn = g_attn * e.cutoff[:, None]
            grad_v.index_add_(0, e.source, g_values)
            g_pre = activation_backward(layer.attn_activation, e.attn_pre, e.attn_act, g_attn)
            g_pre = g_pre.unsqueeze(2)
            if grad_pre_k is not None:
                g_qk = g_pre * e.dk
                g_dk = (g_pre * e.qk).view(size, -1)
                activation_backward(layer.act, e.pre_k, e.dk.view(size, -1), g_dk, grad_pre_k[part])
            else:
                g_qk = g_pre.expand(-1, -1, head_dim)
            grad_q.index_add_(0, e.target, g_qk * e.k_j)
            grad_k.index_add_(0, e.source, g_qk * e.q_i)
        return (
            None, None, grad_q, grad_k, grad_v, grad_vec, grad_pre_k, grad_pre_v,
            None, None, None, None,
        )  # fmt: skip


def _chunked(
    layer: EquivariantMultiHeadAttention, chunk: int, inputs: tuple[Tensor | None, ...]
) -> Iterator[tuple[slice, _Chunk]]:
    """The chunks of edges in order: each one's slice of the edge list and its quantities.

    ``inputs``: ``(q, k, v, vec, pre_k, pre_v, cutoff, unit, source, target)``; the first four
    are per atom, the others per edge and get sliced.
    """
    atoms, per_edge = inputs[:4], inputs[4:]
    num_edges = per_edge[-1].numel()
    for lo in range(0, num_edges, chunk):
        part = slice(lo, lo + chunk)
        edges = tuple(None if tensor is None else tensor[part] for tensor in per_edge)
        yield part, _Chunk(layer, atoms, edges)  # type: ignore[arg-type]

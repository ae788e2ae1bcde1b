"""Building blocks of the equivariant transformer (see :mod:`molssl.encoders.et`).

Edge geometry with safe zero-length vectors, TorchMD-NET's neighbour embedding, and one
equivariant multi-head attention layer (Thölke & De Fabritiis, ICLR 2022), in plain torch with
``index_add`` aggregation over edge lists.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from molssl.encoders.activations import activation as make_activation
from molssl.encoders.et_edges import ChunkedEdgeAttention, chunk_edges, worth_chunking
from molssl.encoders.et_pairs import EdgePairs, PairedEdgeAttention
from molssl.encoders.radial import CosineCutoff

DistanceInfluence = Literal["keys", "values", "both", "none"]


def edge_geometry(pos: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
    """Lengths and unit directions of the edge vectors ``pos[source] - pos[target]``.

    Zero-length vectors (self-loops, coincident atoms) get length 0 and direction 0 with finite
    gradients: the square root and the division only ever see the non-zero entries.

    Args:
        pos: Atom positions ``(N, 3)``.
        edge_index: ``(2, E)``, row 0 = source (neighbour j), row 1 = target (centre i).

    Returns:
        ``(distances (E,), unit_vectors (E, 3))``.
    """
    vectors = pos.index_select(0, edge_index[0]) - pos.index_select(0, edge_index[1])
    squared = (vectors * vectors).sum(dim=-1)
    nonzero = squared > 0
    safe_length = torch.where(nonzero, squared, torch.ones_like(squared)).sqrt()
    distances = torch.where(nonzero, safe_length, torch.zeros_like(squared))
    unit = torch.where(nonzero.unsqueeze(-1), vectors / safe_length.unsqueeze(-1), 0.0)
    return distances, unit


def sum_messages(messages: Tensor, target: Tensor, num_nodes: int) -> Tensor:
    """Sum edge messages ``(E, ...)`` into their target atoms: ``(num_nodes, ...)``.

    ``index_add`` rather than ``scatter``: it takes the 1-D index as is (``scatter`` broadcasts
    it to the message shape), and its first and second derivatives are ``index_select`` and
    ``index_add`` again, which made the double backward of force training 15-40% faster on
    CPU in ``benchmarks/et_throughput.py``.
    """
    return messages.new_zeros((num_nodes, *messages.shape[1:])).index_add(0, target, messages)


class NeighborEmbedding(nn.Module):
    """Initial scalars mixed with a distance-weighted sum of the neighbours' element embeddings.

    ``x_i <- W_c [x_i, sum_j emb(z_j) * (W_r rbf(r_ij)) * f_cut(r_ij)]`` over neighbours
    ``j != i``.
    """

    def __init__(
        self,
        hidden_channels: int,
        num_rbf: int,
        cutoff_lower: float,
        cutoff_upper: float,
        max_z: int,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(max_z, hidden_channels)
        self.distance_proj = nn.Linear(num_rbf, hidden_channels)
        self.combine = nn.Linear(2 * hidden_channels, hidden_channels)
        self.cutoff = CosineCutoff(cutoff_lower, cutoff_upper)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier weights, zero biases, as in TorchMD-NET."""
        self.embedding.reset_parameters()
        for linear in (self.distance_proj, self.combine):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(
        self, z: Tensor, x: Tensor, edge_index: Tensor, distances: Tensor, rbf: Tensor
    ) -> Tensor:
        """Return updated scalars ``(N, D)``."""
        not_self = edge_index[0] != edge_index[1]
        source, target = edge_index[0][not_self], edge_index[1][not_self]
        weight = self.distance_proj(rbf[not_self]) * self.cutoff(distances[not_self]).unsqueeze(1)
        messages = self.embedding(z).index_select(0, source) * weight
        neighbours = sum_messages(messages, target, x.size(0))
        return self.combine(torch.cat([x, neighbours], dim=1))

    def forward_pairs(self, z: Tensor, x: Tensor, pairs: EdgePairs) -> Tensor:
        """:meth:`forward` over edges laid out as pairs (the distance weights once per pair)."""
        weight = self.distance_proj(pairs.rbf) * self.cutoff(pairs.distances).unsqueeze(1)
        embedded = self.embedding(z).index_select(0, pairs.source)
        width = embedded.size(1)
        messages = (embedded.view(2, pairs.num_pairs, width) * weight).view(embedded.shape)
        neighbours = sum_messages(messages, pairs.sum_index, pairs.rows)[: x.size(0)]
        return self.combine(torch.cat([x, neighbours], dim=1))


class EquivariantMultiHeadAttention(nn.Module):
    """One ET layer: multi-head attention updating scalar and vector features.

    For edge ``j -> i`` with distance ``r``, RBF features ``f`` and unit direction ``d``:
    ``a = act_attn(sum_head_dim(q_i * k_j * dk(f))) * f_cut(r)``;
    ``v_j * dv(f)`` is split per head into ``(s, g1, g2)``; the scalar message is ``a * s`` and
    the vector message is ``vec_j * g1 + g2 * d``. After aggregation the scalar sum ``m`` is
    projected to ``(o1, o2, o3)`` and ``dx = <U1 vec, U2 vec> * o2 + o3``,
    ``dvec = U3 vec * o1 + sum(vector messages)``, with ``U1, U2, U3`` bias-free linear maps
    over channels (which keep ``vec`` equivariant).

    On the CPU, when the edge geometry does not require grad (everything but force training)
    and the edge tensors are large (:func:`~molssl.encoders.et_edges.worth_chunking`), the edge
    part runs in chunks of :attr:`edge_chunk` edges
    (:class:`~molssl.encoders.et_edges.ChunkedEdgeAttention`: the same equations, about twice
    as fast at paper size); set :attr:`edge_chunk` to ``None`` for the plain path everywhere.
    """

    def __init__(
        self,
        hidden_channels: int,
        num_rbf: int,
        distance_influence: DistanceInfluence,
        num_heads: int,
        activation: str,
        attn_activation: str,
        cutoff_lower: float,
        cutoff_upper: float,
        vector_cutoff: bool = False,
    ) -> None:
        super().__init__()
        if hidden_channels % num_heads != 0:
            raise ValueError(
                f"hidden_channels ({hidden_channels}) must be divisible by num_heads ({num_heads})"
            )
        self.hidden_channels = hidden_channels
        self.num_heads = num_heads
        self.head_dim = hidden_channels // num_heads
        self.distance_influence = distance_influence
        self.vector_cutoff = vector_cutoff
        self.edge_chunk: int | None = chunk_edges(hidden_channels)

        self.layernorm = nn.LayerNorm(hidden_channels)
        self.act = make_activation(activation)
        self.attn_activation = make_activation(attn_activation)
        self.cutoff = CosineCutoff(cutoff_lower, cutoff_upper)

        self.q_proj = nn.Linear(hidden_channels, hidden_channels)
        self.k_proj = nn.Linear(hidden_channels, hidden_channels)
        self.v_proj = nn.Linear(hidden_channels, 3 * hidden_channels)
        self.o_proj = nn.Linear(hidden_channels, 3 * hidden_channels)
        self.vec_proj = nn.Linear(hidden_channels, 3 * hidden_channels, bias=False)
        self.dk_proj = (
            nn.Linear(num_rbf, hidden_channels) if distance_influence in ("keys", "both") else None
        )
        self.dv_proj = (
            nn.Linear(num_rbf, 3 * hidden_channels)
            if distance_influence in ("values", "both")
            else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier weights, zero biases, as in TorchMD-NET."""
        self.layernorm.reset_parameters()
        for linear in (self.q_proj, self.k_proj, self.v_proj, self.o_proj, self.vec_proj):
            nn.init.xavier_uniform_(linear.weight)
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)
        for linear in (self.dk_proj, self.dv_proj):
            if linear is not None:
                nn.init.xavier_uniform_(linear.weight)
                nn.init.zeros_(linear.bias)

    def forward(
        self,
        x: Tensor,
        vec: Tensor | None,
        edge_index: Tensor,
        distances: Tensor,
        rbf: Tensor,
        unit_vectors: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Residual updates ``(dx (N, D), dvec (N, 3, D))``.

        ``vec=None`` stands for zero vectors (the first layer's input): every term that
        multiplies them is then skipped rather than computed as zero, the same result for
        about a third less edge work in that layer.
        """
        q, k, v = self._project(x, vec)
        m, vec_sum = self._messages(q, k, v, vec, edge_index, distances, rbf, unit_vectors)
        return self._update(m, vec_sum, vec)

    def forward_pairs(
        self, x: Tensor, vec: Tensor | None, pairs: EdgePairs
    ) -> tuple[Tensor, Tensor]:
        """:meth:`forward` over edges laid out as undirected pairs (:mod:`~molssl.encoders.
        et_pairs`): each distance filter once per pair of atoms, self-loops as per-atom terms,
        the values laid out part by part (``s``, ``gate_vec``, ``gate_dir``)."""
        x = self.layernorm(x)
        q, k = self.q_proj(x), self.k_proj(x)
        parts = (0, 2) if vec is None else (0, 1, 2)
        # Values and the dv filter part-major, (parts, N, D) and (parts, P, D): the layout the
        # pair kernels run fastest on (see PairedEdgeAttention).
        v = self._by_part(self.v_proj.weight, self.v_proj.bias, parts, x)
        dk, dv = self.dk_proj, self.dv_proj
        pre_k = None if dk is None else F.linear(pairs.rbf, dk.weight, dk.bias)
        pre_v = None if dv is None else self._by_part(dv.weight, dv.bias, parts, pairs.rbf)
        m, vec_sum = PairedEdgeAttention.apply(
            self, q, k, v, vec, pre_k, pre_v, self.cutoff(pairs.distances), pairs
        )
        if pairs.self_loops:
            rbf = pairs.rbf_self
            filter_k = None if dk is None else self.act(F.linear(rbf, dk.weight, dk.bias))
            filter_v = None
            if dv is not None:
                filter_v = self.act(self._by_part(dv.weight, dv.bias, parts, rbf))
            m, vec_sum = self._add_self_loops(q, k, v, vec, filter_k, filter_v, m, vec_sum)
        return self._update(m, vec_sum, vec)

    def _by_part(self, weight: Tensor, bias: Tensor, parts: tuple[int, ...], x: Tensor) -> Tensor:
        """A value projection (per head ``s, gate_vec, gate_dir``) of ``x (M, C)`` part-major:
        ``(len(parts), M, D)``, each part's heads side by side, keeping the ``parts`` listed."""
        heads, head_dim = self.num_heads, self.head_dim
        weight = weight.view(heads, 3, head_dim, -1).transpose(0, 1)[list(parts)]
        bias = bias.view(heads, 3, head_dim).transpose(0, 1)[list(parts)]
        weight = weight.reshape(len(parts), self.hidden_channels, -1).transpose(1, 2)
        batched = x.expand(len(parts), *x.shape)
        return torch.baddbmm(bias.reshape(len(parts), 1, -1), batched, weight)

    def _project(self, x: Tensor, vec: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys ``(N, H, d)`` and values ``(N, H, 3 d)`` of the normalised scalars;
        with zero vectors (``vec`` None) the values lack their ``gate_vec`` part ``(N, H, 2 d)``."""
        num_atoms, heads, head_dim = x.size(0), self.num_heads, self.head_dim
        x = self.layernorm(x)
        q = self.q_proj(x).reshape(num_atoms, heads, head_dim)
        k = self.k_proj(x).reshape(num_atoms, heads, head_dim)
        v = self.v_proj(x).reshape(num_atoms, heads, 3 * head_dim)
        if vec is None:
            v = v.view(num_atoms, heads, 3, head_dim)[:, :, ::2].reshape(num_atoms, heads, -1)
        return q, k, v

    def _value_filter(self, zero_vectors: bool) -> tuple[Tensor, Tensor]:
        """Weight and bias of the ``dv`` filter; with zero vectors (``vec`` None) without the
        rows of ``gate_vec``, which only multiplies them."""
        weight, bias = self.dv_proj.weight, self.dv_proj.bias
        if zero_vectors:
            heads, head_dim = self.num_heads, self.head_dim
            weight = weight.view(heads, 3, head_dim, -1)[:, ::2].reshape(-1, weight.size(1))
            bias = bias.view(heads, 3, head_dim)[:, ::2].reshape(-1)
        return weight, bias

    def _add_self_loops(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        vec: Tensor | None,
        filter_k: Tensor | None,
        filter_v: Tensor | None,
        m: Tensor,
        vec_sum: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Add every atom's message to itself (:meth:`forward_pairs`' layout: part-major values
        ``(parts, N, D)``): distance 0 (one filter row, ``(1, D)`` and ``(parts, 1, D)``, for all
        atoms), no direction (its ``gate_dir`` term is zero)."""
        num_atoms, hidden = q.size(0), self.hidden_channels
        cutoff = self.cutoff(q.new_zeros(1))
        qk = q * k if filter_k is None else q * k * filter_k
        attn = self.attn_activation(qk.view(num_atoms, self.num_heads, -1).sum(dim=-1))
        values = v
        if self.vector_cutoff:
            values = values * cutoff
        else:
            attn = attn * cutoff
        if filter_v is not None:
            values = values * filter_v
        scalar = values[0].view(num_atoms, self.num_heads, -1) * attn.unsqueeze(2)
        m = m + scalar.view(num_atoms, hidden)
        if vec is not None:
            vec_sum = vec_sum + vec * values[1].unsqueeze(1)
        return m, vec_sum

    def _update(self, m: Tensor, vec_sum: Tensor, vec: Tensor | None) -> tuple[Tensor, Tensor]:
        """The residual updates from the summed scalar and vector messages."""
        o1, o2, o3 = torch.split(self.o_proj(m), self.hidden_channels, dim=1)
        if vec is None:
            # vec_proj acts on zeros here: its gradient is zero, as the full computation gives
            # it, rather than missing (DDP expects every parameter in the graph, and AdamW's
            # weight decay treats a zero gradient and no gradient differently).
            return o3 + self.vec_proj.weight.sum() * 0.0, vec_sum
        vec1, vec2, vec3 = torch.split(self.vec_proj(vec), self.hidden_channels, dim=-1)
        dx = (vec1 * vec2).sum(dim=1) * o2 + o3
        dvec = vec3 * o1.unsqueeze(1) + vec_sum
        return dx, dvec

    def _use_chunks(self, q: Tensor, distances: Tensor, unit_vectors: Tensor) -> bool:
        return (
            self.edge_chunk is not None
            and not torch.compiler.is_compiling()
            and q.device.type == "cpu"
            and not (distances.requires_grad or unit_vectors.requires_grad)
            and worth_chunking(distances.numel(), self.hidden_channels)
        )

    def _messages(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        vec: Tensor | None,
        edge_index: Tensor,
        distances: Tensor,
        rbf: Tensor,
        unit_vectors: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Per-atom sums of the scalar ``(N, D)`` and vector ``(N, 3, D)`` messages, through
        :class:`ChunkedEdgeAttention` where :meth:`_use_chunks` says so."""
        if self._use_chunks(q, distances, unit_vectors):
            pre_k = None if self.dk_proj is None else self.dk_proj(rbf)
            pre_v = None
            if self.dv_proj is not None:
                pre_v = F.linear(rbf, *self._value_filter(vec is None))
            return ChunkedEdgeAttention.apply(
                self, self.edge_chunk, q, k, v, vec, pre_k, pre_v, self.cutoff(distances),
                unit_vectors, edge_index[0], edge_index[1],
            )  # fmt: skip
        num_atoms, heads, head_dim = q.size(0), self.num_heads, self.head_dim
        source, target = edge_index[0], edge_index[1]
        attn = q.index_select(0, target) * k.index_select(0, source)
        if self.dk_proj is not None:
            attn = attn * self.act(self.dk_proj(rbf)).reshape(-1, heads, head_dim)
        attn = self.attn_activation(attn.sum(dim=-1))
        cutoff = self.cutoff(distances).unsqueeze(1)
        # Per head, the values are (s, gate_vec, gate_dir); with zero vectors gate_vec, which
        # only multiplies them, is neither gathered nor filtered.
        parts = 3 if vec is not None else 2
        v_j = v.index_select(0, source)
        if self.vector_cutoff:
            # Scaling the values (not only the attention) takes the vector messages to zero at
            # the cutoff too, which keeps energies continuous there.
            v_j = v_j * cutoff.unsqueeze(2)
        else:
            attn = attn * cutoff
        if self.dv_proj is not None:
            filters = self.act(F.linear(rbf, *self._value_filter(vec is None)))
            v_j = v_j * filters.reshape(-1, heads, parts * head_dim)
        scalar_msg = (v_j[..., :head_dim] * attn.unsqueeze(2)).reshape(-1, self.hidden_channels)
        gate_dir = v_j[..., -head_dim:].unsqueeze(1) * unit_vectors[:, :, None, None]
        if vec is None:
            vector_msg = gate_dir
        else:
            gate_vec = v_j[..., head_dim : 2 * head_dim].unsqueeze(1)
            vec_j = vec.index_select(0, source).reshape(-1, 3, heads, head_dim)
            vector_msg = vec_j * gate_vec + gate_dir
        vector_msg = vector_msg.reshape(-1, 3, self.hidden_channels)

        return sum_messages(scalar_msg, target, num_atoms), sum_messages(
            vector_msg, target, num_atoms
        )

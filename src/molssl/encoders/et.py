"""TorchMD-NET's equivariant transformer (ET), the 3D encoder of UniCorn, Frad and Coord.

Architecture as published in Thölke & De Fabritiis, "Equivariant Transformers for Neural Network
based Molecular Potentials", ICLR 2022 (``torchmdnet/models/torchmd_et.py``), written here in
plain torch: no compiled extension, messages summed with ``index_add`` over edge lists, so
one code path serves CPU and CUDA and any mix of molecule sizes in a batch.

Per atom the model carries invariant scalars ``x`` (N, D) and equivariant vectors ``vec``
(N, 3, D), starting at zero. Each layer attends over the neighbours within the cutoff (the atom
itself included, as in the published model) and returns residual updates for both.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.utils import scatter

from molssl.chem.radius import radius_graph_and_dropped
from molssl.encoders.base import Encoder, EncoderOutput
from molssl.encoders.et_edges import worth_chunking
from molssl.encoders.et_layers import (
    DistanceInfluence,
    EquivariantMultiHeadAttention,
    NeighborEmbedding,
    edge_geometry,
)
from molssl.encoders.et_pairs import edge_pairs
from molssl.encoders.radial import radial_basis
from molssl.encoders.vector_norm import vector_norm


class EquivariantTransformer(Encoder):
    """TorchMD-NET equivariant transformer over a PyG batch of 3D molecules.

    Defaults are UniCorn's (paper Table 8): 8 layers, 8 heads, 256 channels, 64 exponential-normal
    RBFs, 5 Å cosine cutoff.

    Args:
        hidden_channels: Width ``D`` of scalar and vector features.
        num_layers: Number of attention layers.
        num_heads: Attention heads per layer; must divide ``hidden_channels``.
        num_rbf: Number of radial basis functions.
        cutoff_lower: Interactions shorter than this are dropped (0 keeps all).
        cutoff_upper: Neighbour radius; the cosine envelope reaches 0 here.
        max_z: Size of the element embedding; every atomic number must be below it.
        max_num_neighbors: At most this many nearest neighbours per atom (plus itself);
            ``None`` for no limit. An atom with more neighbours within the cutoff keeps the
            nearest ones (ties: lower index), as the published ET does, and the rest are
            dropped from the graph: the encoder counts them (:attr:`dropped_neighbour_edges`
            of :attr:`neighbour_edges`, over all its forward passes) and warns once, with the
            first batch's count. Dense molecules reach the default 32 within 5 Å (53 of 25,478
            edges on the first 50 NCI molecules, one seeded conformer each, are dropped);
            TorchMD-NET's current code raises instead of cutting (docs/FIDELITY.md).
        rbf_trainable: Learn the RBF means and widths.
        activation: Activation in the distance filters (``"silu"``, ``"ssp"``, ...).
        attn_activation: Activation applied to attention scores (ET uses no softmax).
        neighbor_embedding: Mix each atom's embedding with its neighbours' before the layers.
        distance_influence: Where RBF features modulate attention: keys, values, both or none.
        layernorm_on_vec: ``"whitened"`` normalises the output vectors (Coord/Frad/UniCorn
            pre-training configs), ``None`` leaves them as they are (TorchMD-NET default).
        reduce: How atom scalars pool into the molecule embedding, ``"sum"`` or ``"mean"``.
        rbf_type: ``"expnorm"`` (published ET) or ``"gauss"``.
        vector_cutoff: Also scale the vector messages by the cutoff envelope, which makes the
            output continuous at the cutoff (a later TorchMD-NET option; off in the paper).
        compile_layers: Run the attention layers through ``torch.compile`` (dynamic shapes, one
            graph shared by all layers): their many element-wise edge operations become a few
            fused loops, ~1.6x faster training steps on the CPU (``benchmarks/et_reference.py``),
            for a one-off compilation of tens of seconds to a few minutes (cached on disk by
            PyTorch). Needs a C++ compiler on the CPU, Triton on CUDA. Force training (the
            coordinates require grad, a double backward) runs the layers uncompiled.

    Input: a ``Batch`` (or single ``Data``) with ``z`` (N,) atomic numbers, ``pos`` (N, 3) and,
    for a batch, ``batch`` (N,) molecule index.
    Output: :class:`EncoderOutput` with ``node`` (N, D), ``vec`` (N, 3, D), ``graph`` (B, D).
    """

    def __init__(
        self,
        hidden_channels: int = 256,
        num_layers: int = 8,
        num_heads: int = 8,
        num_rbf: int = 64,
        cutoff_lower: float = 0.0,
        cutoff_upper: float = 5.0,
        max_z: int = 100,
        max_num_neighbors: int | None = 32,
        rbf_trainable: bool = True,
        activation: str = "silu",
        attn_activation: str = "silu",
        neighbor_embedding: bool = True,
        distance_influence: DistanceInfluence = "both",
        layernorm_on_vec: Literal["whitened"] | None = None,
        reduce: Literal["sum", "mean"] = "sum",
        rbf_type: Literal["expnorm", "gauss"] = "expnorm",
        vector_cutoff: bool = False,
        compile_layers: bool = False,
    ) -> None:
        super().__init__()
        if distance_influence not in ("keys", "values", "both", "none"):
            raise ValueError(
                f"distance_influence must be 'keys', 'values', 'both' or 'none', "
                f"got {distance_influence!r}"
            )
        if reduce not in ("sum", "mean"):
            raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
        if num_layers < 1 or hidden_channels < 1:
            raise ValueError("num_layers and hidden_channels must be >= 1")
        if max_num_neighbors is not None and max_num_neighbors < 1:
            raise ValueError(f"max_num_neighbors must be >= 1 or None, got {max_num_neighbors}")
        self.hidden_channels = hidden_channels
        self.out_dim = hidden_channels
        self.num_layers = num_layers
        self.cutoff_lower = cutoff_lower
        self.cutoff_upper = cutoff_upper
        self.max_z = max_z
        self.max_num_neighbors = max_num_neighbors
        self.reduce = reduce
        self.compile_layers = compile_layers
        self.skip_zero_vectors = True
        #: Run the layers on undirected edge pairs where that is the fast path (see
        #: :meth:`_use_pairs`); ``False`` for the per-edge path everywhere.
        self.pair_edges = True
        #: Neighbour edges within the cutoff seen by every forward pass, and those the cap left out.
        self.neighbour_edges = 0
        self.dropped_neighbour_edges = 0
        self._warned_dropped = False

        self.embedding = nn.Embedding(max_z, hidden_channels)
        self.distance_expansion = radial_basis(
            rbf_type, cutoff_lower, cutoff_upper, num_rbf, rbf_trainable
        )
        self.neighbor_embedding = (
            NeighborEmbedding(hidden_channels, num_rbf, cutoff_lower, cutoff_upper, max_z)
            if neighbor_embedding
            else None
        )
        self.attention_layers = nn.ModuleList(
            EquivariantMultiHeadAttention(
                hidden_channels,
                num_rbf,
                distance_influence,
                num_heads,
                activation,
                attn_activation,
                cutoff_lower,
                cutoff_upper,
                vector_cutoff,
            )
            for _ in range(num_layers)
        )
        self.out_norm = nn.LayerNorm(hidden_channels)
        self.out_norm_vec = vector_norm(layernorm_on_vec, hidden_channels)

    def reset_parameters(self) -> None:
        """Re-initialise every parameter as TorchMD-NET does."""
        self.embedding.reset_parameters()
        self.distance_expansion.reset_parameters()
        if self.neighbor_embedding is not None:
            self.neighbor_embedding.reset_parameters()
        for layer in self.attention_layers:
            layer.reset_parameters()
        self.out_norm.reset_parameters()
        if self.out_norm_vec is not None:
            self.out_norm_vec.reset_parameters()

    def build_edges(self, pos: Tensor, batch: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Neighbour edges within the cutoff (same molecule only) plus one self-loop per atom.

        Returns:
            ``edge_index (2, E)`` (row 0 source j, row 1 target i), ``distances (E,)`` and
            ``unit_vectors (E, 3)`` pointing from target to source.
        """
        neighbours, dropped = radius_graph_and_dropped(
            pos.detach(),
            batch=batch,
            cutoff=self.cutoff_upper,
            max_num_neighbors=self.max_num_neighbors,
            loop=False,
        )
        self._count_dropped(int(dropped), neighbours.size(1))
        atoms = torch.arange(pos.size(0), device=pos.device)
        edge_index = torch.cat([neighbours, torch.stack([atoms, atoms])], dim=1)
        distances, unit_vectors = edge_geometry(pos, edge_index)
        if self.cutoff_lower > 0:
            keep = distances >= self.cutoff_lower
            edge_index, distances, unit_vectors = (
                edge_index[:, keep],
                distances[keep],
                unit_vectors[keep],
            )
        return edge_index, distances, unit_vectors

    def _count_dropped(self, dropped: int, kept: int) -> None:
        """Adds one batch to the neighbour counts; warns the first time edges were dropped."""
        self.neighbour_edges += kept + dropped
        self.dropped_neighbour_edges += dropped
        if dropped == 0 or self._warned_dropped:
            return
        self._warned_dropped = True
        warnings.warn(
            f"EquivariantTransformer: max_num_neighbors={self.max_num_neighbors} dropped "
            f"{dropped} of {kept + dropped} neighbour edges within {self.cutoff_upper} A in this "
            "batch (atoms with more neighbours keep the nearest ones). Shown once; the running "
            "counts are the encoder's dropped_neighbour_edges and neighbour_edges. Raise "
            "max_num_neighbors, or set it to null, to keep every edge.",
            UserWarning,
            stacklevel=3,
        )

    def forward(self, data: Batch | Data) -> EncoderOutput:
        """Encode a batch of molecules; see the class docstring for shapes."""
        z, pos, batch, num_graphs = self._unpack(data)
        edge_index, distances, unit_vectors = self.build_edges(pos, batch)
        force_training = torch.is_grad_enabled() and pos.requires_grad
        compiled = self.compile_layers and not force_training
        x = self.embedding(z)
        # Zero vectors: the first layer skips the terms they carry (``skip_zero_vectors=False``
        # computes them, as the code before did; the benchmarks compare the two).
        vec: Tensor | None = (
            None if self.skip_zero_vectors else x.new_zeros(x.size(0), 3, x.size(1))
        )
        if self._use_pairs(pos, distances.numel(), compiled or force_training):
            pairs = edge_pairs(edge_index, distances, unit_vectors, x.size(0))
            pairs.rbf = self.distance_expansion(pairs.distances)
            pairs.rbf_self = self.distance_expansion(distances.new_zeros(1))
            if self.neighbor_embedding is not None:
                x = self.neighbor_embedding.forward_pairs(z, x, pairs)
            for layer in self.attention_layers:
                dx, dvec = layer.forward_pairs(x, vec, pairs)
                x = x + dx
                vec = dvec if vec is None else vec + dvec
        else:
            rbf = self.distance_expansion(distances)
            if self.neighbor_embedding is not None:
                x = self.neighbor_embedding(z, x, edge_index, distances, rbf)
            run = _compiled_layer() if compiled else _run_layer
            for layer in self.attention_layers:
                dx, dvec = run(layer, x, vec, edge_index, distances, rbf, unit_vectors)
                x = x + dx
                vec = dvec if vec is None else vec + dvec
        x = self.out_norm(x)
        if self.out_norm_vec is not None:
            vec = self.out_norm_vec(vec)
        graph = scatter(x, batch, dim=0, dim_size=num_graphs, reduce=self.reduce)
        return EncoderOutput(node=x, graph=graph, vec=vec)

    def _use_pairs(self, pos: Tensor, num_edges: int, other_path: bool) -> bool:
        """Whether the layers run on edge pairs (:mod:`~molssl.encoders.et_pairs`): with
        :attr:`pair_edges` on, on the CPU, unless the layers are compiled, forces are trained
        (the pair path is first-order) or the edge tensors are large enough for chunks."""
        if not self.pair_edges or other_path or pos.device.type != "cpu":
            return False
        chunk = self.attention_layers[0].edge_chunk
        return chunk is None or not worth_chunking(num_edges, self.hidden_channels)

    def _unpack(self, data: Batch | Data) -> tuple[Tensor, Tensor, Tensor, int]:
        """Check and return ``z``, ``pos``, the molecule index of each atom and the count."""
        z, pos = getattr(data, "z", None), getattr(data, "pos", None)
        if z is None or pos is None:
            raise ValueError(
                "EquivariantTransformer needs 'z' (atomic numbers) and 'pos' (3D positions) "
                "on the batch; featurize molecules with a conformer"
            )
        if z.dim() != 1 or z.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"'z' must be a 1-D integer tensor, got {z.dtype} {tuple(z.shape)}")
        if pos.dim() != 2 or pos.size(1) != 3 or pos.size(0) != z.size(0):
            raise ValueError(
                f"'pos' must have shape ({z.size(0)}, 3) to match 'z', got {tuple(pos.shape)}"
            )
        if pos.dtype != self.embedding.weight.dtype:
            raise ValueError(
                f"'pos' is {pos.dtype} but the encoder's parameters are "
                f"{self.embedding.weight.dtype}; cast one to the other"
            )
        if z.numel() == 0:
            raise ValueError("the batch holds no atoms")
        if int(z.min()) < 0 or int(z.max()) >= self.max_z:
            raise ValueError(
                f"atomic numbers must lie in [0, {self.max_z}); got {int(z.min())}..{int(z.max())}"
            )
        batch = getattr(data, "batch", None)
        if batch is None:
            batch = torch.zeros_like(z, dtype=torch.long)
            num_graphs = 1
        else:
            num_graphs = int(getattr(data, "num_graphs", None) or int(batch.max()) + 1)
        return z.long(), pos, batch, num_graphs

    def extra_repr(self) -> str:
        return f"out_dim={self.out_dim}, cutoff={self.cutoff_upper}, reduce={self.reduce!r}"


def _run_layer(layer: nn.Module, *inputs: Tensor | None) -> tuple[Tensor, Tensor]:
    """One attention layer's residual updates from its ``(x, vec, edge_index, distances, rbf,
    unit_vectors)`` (the function ``compile_layers`` compiles)."""
    return layer(*inputs)


_COMPILED_LAYER: Callable[..., tuple[Tensor, Tensor]] | None = None


def _compiled_layer() -> Callable[..., tuple[Tensor, Tensor]]:
    """:func:`_run_layer` compiled once per process: the layers of every encoder share it (one
    graph for the first layer, whose zero ``vec`` needs no grad, one for the others)."""
    global _COMPILED_LAYER
    if _COMPILED_LAYER is None:
        _COMPILED_LAYER = torch.compile(_run_layer, dynamic=True)
    return _COMPILED_LAYER

"""The official TorchMD-NET equivariant transformer as a benchmark-only reference.

TorchMD-NET is never a dependency of molssl. Its ET (``torchmdnet/models/torchmd_et.py``) is
plain torch; only its neighbour search needs a compiled or NVIDIA-Warp kernel, which this
module does not use: the reference model gets molssl's edge list (same pairs, same self-loops),
so that both models compute the same function and only the layers are compared.

Where it comes from, in this order:

1. an installed ``torchmdnet`` package (``pip install torchmd-net-cpu``; check first that it does
   not bring a CUDA build of torch or another torch version into your environment);
2. a source checkout named by ``TORCHMD_NET_SRC`` (the folder that holds ``torchmdnet/``)::

       git clone https://github.com/torchmd/torchmd-net /tmp/torchmd-net
       git -C /tmp/torchmd-net checkout 833c077      # the commit our figures used
       export TORCHMD_NET_SRC=/tmp/torchmd-net

   Its ``torchmdnet.extensions.ops`` (the Warp neighbour kernels) is replaced by a stub when
   ``warp`` is not importable; nothing else is installed or changed.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path

import torch
from torch import Tensor, nn

from molssl.encoders.et import EquivariantTransformer

ENV_VAR = "TORCHMD_NET_SRC"


def _stub_extension_ops() -> None:
    """Stand in for the Warp neighbour kernels (unused: :class:`SharedEdges` replaces them)."""

    def get_neighbor_pairs_kernel(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the reference ET runs on molssl's edges (SharedEdges)")

    ops = types.ModuleType("torchmdnet.extensions.ops")
    ops.get_neighbor_pairs_kernel = get_neighbor_pairs_kernel  # type: ignore[attr-defined]
    sys.modules["torchmdnet.extensions.ops"] = ops


def load_torchmd_et(source: str | os.PathLike[str] | None = None) -> type[nn.Module]:
    """The ``TorchMD_ET`` class, from an installed package or a source checkout.

    Args:
        source: Folder holding ``torchmdnet/``; default ``$TORCHMD_NET_SRC``.

    Raises:
        ImportError: If neither an installed package nor a source folder provides it.
    """
    if "torchmdnet.models.torchmd_et" in sys.modules:
        return sys.modules["torchmdnet.models.torchmd_et"].TorchMD_ET
    source = source or os.environ.get(ENV_VAR)
    if importlib.util.find_spec("torchmdnet") is None:
        if not source or not (Path(source) / "torchmdnet" / "models" / "torchmd_et.py").is_file():
            raise ImportError(
                f"TorchMD-NET not found: install torchmd-net-cpu or set {ENV_VAR} to a checkout"
            )
        sys.path.insert(0, str(Path(source).resolve()))
    if importlib.util.find_spec("warp") is None:
        _stub_extension_ops()
    return importlib.import_module("torchmdnet.models.torchmd_et").TorchMD_ET


class SharedEdges(nn.Module):
    """The reference's distance module replaced by molssl's edges: ``(edge_index, distances,
    edge vectors pos[source] - pos[target])``, which ``TorchMD_ET.forward`` normalises itself."""

    def __init__(self, encoder: EquivariantTransformer) -> None:
        super().__init__()
        self.encoder = [encoder]  # a list, so that the encoder's weights are not registered twice

    def forward(
        self, pos: Tensor, batch: Tensor, box: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        edge_index, distances, _ = self.encoder[0].build_edges(pos, batch)
        vectors = pos.index_select(0, edge_index[0]) - pos.index_select(0, edge_index[1])
        return edge_index, distances, vectors


def reference_like(encoder: EquivariantTransformer, source: str | None = None) -> nn.Module:
    """A ``TorchMD_ET`` with ``encoder``'s hyper-parameters, weights and edges.

    ``encoder`` must use the reference's output (``layernorm_on_vec=None``) and its defaults
    for what TorchMD-NET cannot express otherwise.
    """
    if encoder.out_norm_vec is not None:
        raise ValueError("the reference ET has no vector norm: use layernorm_on_vec=None")
    return _reference_layers(encoder, source)


def _reference_layers(encoder: EquivariantTransformer, source: str | None) -> nn.Module:
    """``TorchMD_ET`` with ``encoder``'s hyper-parameters, weights and edges (its output vector
    norm, if any, left out)."""
    torchmd_et = load_torchmd_et(source)
    layer = encoder.attention_layers[0]
    basis = encoder.distance_expansion
    reference = torchmd_et(
        hidden_channels=encoder.hidden_channels,
        num_layers=encoder.num_layers,
        num_rbf=basis.num_rbf,
        rbf_type="expnorm" if hasattr(basis, "means") else "gauss",
        trainable_rbf=basis.trainable,
        activation=_activation_name(layer.act),
        attn_activation=_activation_name(layer.attn_activation),
        neighbor_embedding=encoder.neighbor_embedding is not None,
        num_heads=layer.num_heads,
        distance_influence=layer.distance_influence,
        cutoff_lower=encoder.cutoff_lower,
        cutoff_upper=encoder.cutoff_upper,
        max_z=encoder.max_z,
        max_num_neighbors=encoder.max_num_neighbors or 32,  # unused: SharedEdges replaces it
        vector_cutoff=layer.vector_cutoff,
        dtype=encoder.embedding.weight.dtype,
    )
    # Its radial basis ignores ``dtype`` (float32 parameters): cast everything alike.
    reference.to(device=encoder.embedding.weight.device, dtype=encoder.embedding.weight.dtype)
    copy_weights(encoder, reference)
    reference.distance = SharedEdges(encoder)
    return reference


class WithVectorNorm(nn.Module):
    """``TorchMD_ET`` followed by an output vector norm, with ``TorchMD_ET``'s call and return
    signature, so that ``TorchMD_Net`` takes it as its representation model.

    Upstream TorchMD-NET has no vector norm; the Coord/Frad/UniCorn lineage's fork of it adds
    ``--layernorm-on-vec whitened`` after the last layer, and encoders pre-trained with it need it
    to compute what they were trained to compute.
    """

    def __init__(self, reference: nn.Module, vector_norm: nn.Module) -> None:
        super().__init__()
        self.reference = reference
        self.vector_norm = vector_norm

    def reset_parameters(self) -> None:
        """TorchMD-NET's initialisation of the layers, and the norm's own."""
        self.reference.reset_parameters()
        self.vector_norm.reset_parameters()

    def forward(
        self,
        z: Tensor,
        pos: Tensor,
        batch: Tensor,
        box: Tensor | None = None,
        q: Tensor | None = None,
        s: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        x, vec, z, pos, batch = self.reference(z, pos, batch, box=box, q=q, s=s)
        return x, self.vector_norm(vec), z, pos, batch


def reference_with_vector_norm(
    encoder: EquivariantTransformer, source: str | None = None
) -> nn.Module:
    """Like :func:`reference_like`, for an encoder with ``layernorm_on_vec`` set: its layers in
    ``TorchMD_ET`` and a copy of its vector norm after them (:class:`WithVectorNorm`)."""
    if encoder.out_norm_vec is None:
        return reference_like(encoder, source)
    reference = _reference_layers(encoder, source)
    return WithVectorNorm(reference, copy.deepcopy(encoder.out_norm_vec))


def _activation_name(module: nn.Module) -> str:
    names = {"SiLU": "silu", "ShiftedSoftplus": "ssp", "Tanh": "tanh", "Sigmoid": "sigmoid"}
    return names[type(module).__name__]


def copy_weights(encoder: EquivariantTransformer, reference: nn.Module) -> None:
    """Load ``encoder``'s parameters into ``reference`` (the modules share their names)."""
    ours = dict(encoder.state_dict())
    theirs = reference.state_dict()
    missing = [name for name in theirs if name not in ours and not name.startswith("distance.")]
    if missing:
        raise KeyError(f"no molssl weights for reference parameters {missing}")
    with torch.no_grad():
        for name, value in theirs.items():
            if name in ours:
                value.copy_(ours[name])


def reference_outputs(reference: nn.Module, batch: object) -> tuple[Tensor, Tensor]:
    """``(x (N, D), vec (N, 3, D))`` of the reference for a PyG batch."""
    x, vec, *_ = reference(batch.z, batch.pos, batch.batch)
    return x, vec

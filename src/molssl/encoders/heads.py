"""Output heads on top of an :class:`~molssl.encoders.base.EncoderOutput`.

- :class:`GatedEquivariantBlock`: PaiNN's gated block (Schütt et al., ICML 2021), the building
  piece of TorchMD-NET's equivariant output modules.
- :class:`EquivariantVectorHead`: one 3-vector per atom (denoising targets, forces).
- :class:`EquivariantScalarHead`: one scalar per atom, pooled to one per molecule (energies,
  QM9 properties), with optional standardisation and per-element reference values.
- :class:`MLPHead`: a 2-layer MLP on the molecule embedding (MoleculeNet fine-tuning).

Every head is called as ``head(output, batch)`` where ``batch`` is the PyG ``Batch`` (or
``Data``) the encoder consumed; heads that do not need it accept ``None``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.utils import scatter

from molssl.encoders.activations import activation as make_activation
from molssl.encoders.base import EncoderOutput


def _safe_vector_norm(vec: Tensor) -> Tensor:
    """Norm over the spatial axis of ``(N, 3, C)`` vectors, with zero gradient at zero vectors.

    ``torch.norm`` has an undefined (NaN) gradient at 0; atoms with no neighbour inside the
    cutoff have exactly zero vector features, so the square root only sees non-zero entries.
    """
    squared = (vec * vec).sum(dim=1)
    nonzero = squared > 0
    safe = torch.where(nonzero, squared, torch.ones_like(squared)).sqrt()
    return torch.where(nonzero, safe, torch.zeros_like(squared))


def _require_vec(output: EncoderOutput, head: str) -> Tensor:
    if output.vec is None:
        raise ValueError(
            f"{head} needs equivariant vector features (EncoderOutput.vec); "
            "use it with a 3D equivariant encoder such as EquivariantTransformer"
        )
    return output.vec


class GatedEquivariantBlock(nn.Module):
    """Gated equivariant block: scalars gate linear maps of the vectors.

    ``s' , g = MLP([s, ||U1 v||])``; ``v' = g * (U2 v)``; optionally ``s' = act(s')``.

    Args:
        hidden_channels: Input channels of scalars and vectors.
        out_channels: Output channels of scalars and vectors.
        intermediate_channels: Width of the gating MLP (default ``hidden_channels``).
        activation: Activation name for the MLP (and the optional scalar output activation).
        scalar_activation: Apply the activation to the output scalars.

    Shapes:
        ``x (N, hidden)``, ``v (N, 3, hidden)`` -> ``x' (N, out)``, ``v' (N, 3, out)``.
    """

    def __init__(
        self,
        hidden_channels: int,
        out_channels: int,
        intermediate_channels: int | None = None,
        activation: str = "silu",
        scalar_activation: bool = False,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        intermediate = intermediate_channels or hidden_channels
        self.vec1_proj = nn.Linear(hidden_channels, hidden_channels, bias=False)
        self.vec2_proj = nn.Linear(hidden_channels, out_channels, bias=False)
        self.update_net = nn.Sequential(
            nn.Linear(2 * hidden_channels, intermediate),
            make_activation(activation),
            nn.Linear(intermediate, 2 * out_channels),
        )
        self.act = make_activation(activation) if scalar_activation else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier weights, zero biases, as in TorchMD-NET."""
        nn.init.xavier_uniform_(self.vec1_proj.weight)
        nn.init.xavier_uniform_(self.vec2_proj.weight)
        for layer in (self.update_net[0], self.update_net[2]):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Return gated ``(scalars, vectors)``; see the class docstring for shapes."""
        vec_norm = _safe_vector_norm(self.vec1_proj(v))
        scalars, gates = torch.split(
            self.update_net(torch.cat([x, vec_norm], dim=-1)), self.out_channels, dim=-1
        )
        vectors = gates.unsqueeze(1) * self.vec2_proj(v)
        if self.act is not None:
            scalars = self.act(scalars)
        return scalars, vectors


class GatedOutputNetwork(nn.Module):
    """TorchMD-NET's equivariant output network: hidden -> hidden/2 -> ``out_channels`` gated
    blocks (``out_channels > 1``: TorchMD-NET's multi-output form, the first block shared)."""

    def __init__(self, hidden_channels: int, activation: str, out_channels: int = 1) -> None:
        super().__init__()
        if hidden_channels < 2:
            raise ValueError(f"hidden_channels must be at least 2, got {hidden_channels}")
        self.output_network = nn.ModuleList(
            [
                GatedEquivariantBlock(
                    hidden_channels,
                    hidden_channels // 2,
                    activation=activation,
                    scalar_activation=True,
                ),
                GatedEquivariantBlock(hidden_channels // 2, out_channels, activation=activation),
            ]
        )

    def reset_parameters(self) -> None:
        """Re-initialise both gated blocks."""
        for block in self.output_network:
            block.reset_parameters()

    def zero_output_layer(self) -> None:
        """Zero the last block's last linear layer (weights and bias): the network then
        outputs 0 scalars and 0 vectors, and the first optimiser step trains that layer only."""
        last = self.output_network[-1].update_net[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def _run(self, output: EncoderOutput, head: str) -> tuple[Tensor, Tensor]:
        x, v = output.node, _require_vec(output, head)
        for block in self.output_network:
            x, v = block(x, v)
        return x.squeeze(-1), v.squeeze(-1)


class EquivariantVectorHead(GatedOutputNetwork):
    """One equivariant 3-vector per atom (coordinate-noise prediction, forces).

    Args:
        hidden_channels: Encoder width ``D``.
        activation: Activation name inside the gated blocks.

    Shapes:
        ``output.node (N, D)``, ``output.vec (N, 3, D)`` -> ``(N, 3)``.
    """

    def __init__(self, hidden_channels: int, activation: str = "silu") -> None:
        super().__init__(hidden_channels, activation)

    def forward(self, output: EncoderOutput, batch: Batch | Data | None = None) -> Tensor:
        """Per-atom vectors ``(N, 3)``; ``batch`` is unused and accepted for a uniform call."""
        return self._run(output, "EquivariantVectorHead")[1]


class EquivariantScalarHead(GatedOutputNetwork):
    """One invariant scalar per atom, pooled to one per molecule.

    ``per_atom = std * s_i (+ atomref[z_i])``; ``molecule = reduce(per_atom) + mean``. ``mean``
    and ``std`` are buffers (saved in checkpoints) so a model trained on standardised targets
    predicts in the original units; ``atomref`` holds per-element reference values (e.g. QM9
    atomisation offsets) indexed by atomic number.

    Args:
        hidden_channels: Encoder width ``D``.
        activation: Activation name inside the gated blocks.
        reduce: ``"sum"`` (extensive targets such as energies) or ``"mean"``.
        mean: Target mean added to each molecule's output.
        std: Target standard deviation multiplying each atom's output.
        atomref: Optional per-element values of shape ``(max_z,)``; needs ``batch.z``.
        outputs: Scalars per atom and molecule ``T``; above 1 the gated blocks are shared by
            the outputs (TorchMD-NET's multi-output form) and ``atomref`` cannot be given.

    Shapes:
        ``output.node (N, D)``, ``output.vec (N, 3, D)``, ``batch.batch (N,)`` -> ``(B,)``
        (``(B, T)`` for several outputs); :meth:`per_atom` gives the ``(N,)`` (``(N, T)``) atom
        contributions.
    """

    mean: Tensor
    std: Tensor
    atomref: Tensor | None

    def __init__(
        self,
        hidden_channels: int,
        activation: str = "silu",
        reduce: Literal["sum", "mean"] = "sum",
        mean: float = 0.0,
        std: float = 1.0,
        atomref: list[float] | None = None,
        outputs: int = 1,
    ) -> None:
        super().__init__(hidden_channels, activation, out_channels=outputs)
        if outputs > 1 and atomref is not None:
            raise ValueError("atomref is per element of one target: give it with outputs=1")
        if reduce not in ("sum", "mean"):
            raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
        self.reduce = reduce
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))
        self.register_buffer(
            "atomref", None if atomref is None else torch.tensor(atomref, dtype=torch.float32)
        )

    def set_standardization(self, mean: float, std: float) -> None:
        """Set the target statistics (e.g. from the training split) after construction."""
        if not std > 0:
            raise ValueError(f"std must be positive, got {std}")
        self.mean.fill_(float(mean))
        self.std.fill_(float(std))

    def per_atom(self, output: EncoderOutput, batch: Batch | Data | None = None) -> Tensor:
        """Scaled atom contributions ``(N,)`` including atom references when set."""
        scalars = self._run(output, "EquivariantScalarHead")[0] * self.std
        if self.atomref is not None:
            z = getattr(batch, "z", None)
            if z is None:
                raise ValueError("EquivariantScalarHead with atomref needs 'z' on the batch")
            if int(z.max()) >= self.atomref.numel():
                raise ValueError(
                    f"atomref covers atomic numbers below {self.atomref.numel()}, "
                    f"got {int(z.max())}"
                )
            scalars = scalars + self.atomref.to(scalars.dtype)[z]
        return scalars

    def forward(self, output: EncoderOutput, batch: Batch | Data | None = None) -> Tensor:
        """Per-molecule scalars ``(B,)``; ``batch`` may be ``None`` for a single molecule."""
        atoms = self.per_atom(output, batch)
        index = getattr(batch, "batch", None)
        if index is None:
            index = torch.zeros(atoms.size(0), dtype=torch.long, device=atoms.device)
        pooled = scatter(atoms, index, dim=0, dim_size=output.graph.size(0), reduce=self.reduce)
        return pooled + self.mean


class MLPHead(nn.Module):
    """Two-layer MLP on the molecule embedding: ``Linear -> act -> dropout -> Linear``.

    Args:
        in_dim: Encoder ``out_dim``.
        out_dim: Number of outputs (tasks, or classes for a classifier).
        hidden_dim: Width of the hidden layer (default ``in_dim``).
        dropout: Dropout probability after the activation.
        activation: Activation name.

    Shapes:
        ``output.graph (B, in_dim)`` -> ``(B, out_dim)``.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 1,
        hidden_dim: int | None = None,
        dropout: float = 0.0,
        activation: str = "silu",
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        hidden = hidden_dim or in_dim
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            make_activation(activation),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, output: EncoderOutput, batch: Batch | Data | None = None) -> Tensor:
        """Per-molecule outputs ``(B, out_dim)``; ``batch`` is unused."""
        return self.net(output.graph)

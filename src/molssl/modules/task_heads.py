"""Task heads of fine-tuning: one output per task and molecule, before de-standardisation.

UniCorn (Section 4, "Fine-tuning") keeps the pre-trained 3D encoder and swaps the head per task
family:

- MoleculeNet: a 2-layer MLP on the pooled molecule embedding (:class:`PooledMLPHead`);
- QM9, MD17, MD22: TorchMD-NET's equivariant output network, one scalar per atom summed over
  the molecule (:class:`EquivariantScalarsHead`; energies for MD, with forces = -dE/dpos taken by
  :class:`~molssl.modules.finetune.FinetuneModule`);
- QM9's dipole moment and electronic spatial extent: TorchMD-NET's heads that build them from
  atomic contributions and positions (:class:`PropertyHead` around
  :class:`~molssl.encoders.property_heads.DipoleMomentHead` and
  :class:`~molssl.encoders.property_heads.SpatialExtentHead`).

Heads return raw outputs of shape ``(B, T)``: logits for classification, standardised values for
regression (the module multiplies by the training targets' std and adds their mean).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.utils import scatter

from molssl.encoders.base import EncoderOutput
from molssl.encoders.heads import EquivariantScalarHead, MLPHead
from molssl.encoders.property_heads import DipoleMomentHead, SpatialExtentHead

__all__ = [
    "HEAD_KINDS",
    "EquivariantScalarsHead",
    "PooledMLPHead",
    "PropertyHead",
    "build_task_head",
]

HeadKind = Literal["mlp", "equivariant", "dipole", "spatial_extent"]
Pool = Literal["sum", "mean", "encoder"]
#: Head kinds :func:`build_task_head` knows.
HEAD_KINDS: tuple[str, ...] = ("mlp", "equivariant", "dipole", "spatial_extent")
#: The kinds that compute one physical property from positions (one task each).
PROPERTY_HEADS = {"dipole": DipoleMomentHead, "spatial_extent": SpatialExtentHead}
_POOLS = ("sum", "mean", "encoder")
#: Initialisations of the equivariant head's last layer (:class:`EquivariantScalarsHead`).
OUTPUT_INITS = ("zero", "xavier")


def _molecule_index(output: EncoderOutput, batch: Batch) -> Tensor:
    index = getattr(batch, "batch", None)
    if index is None:
        return torch.zeros(output.node.size(0), dtype=torch.long, device=output.node.device)
    return index


class PooledMLPHead(nn.Module):
    """Pools the encoder's atom features per molecule, then a 2-layer MLP (one output per task).

    Args:
        in_dim: Encoder ``out_dim``.
        num_tasks: Outputs per molecule.
        pool: ``"sum"`` or ``"mean"`` of ``output.node`` over each molecule's atoms, or
            ``"encoder"`` to take the encoder's own ``output.graph``.
        hidden_dim: Hidden width (default ``in_dim``).
        dropout: Dropout after the hidden activation.
        activation: Hidden activation.

    Shapes:
        ``output.node (N, D)``, ``batch.batch (N,)`` -> ``(B, num_tasks)``.
    """

    def __init__(
        self,
        in_dim: int,
        num_tasks: int,
        pool: Pool = "mean",
        hidden_dim: int | None = None,
        dropout: float = 0.0,
        activation: str = "silu",
    ) -> None:
        super().__init__()
        if pool not in _POOLS:
            raise ValueError(f"pool must be one of {_POOLS}, got {pool!r}")
        self.pool = pool
        self.mlp = MLPHead(in_dim, num_tasks, hidden_dim, dropout, activation)

    def forward(self, output: EncoderOutput, batch: Batch) -> Tensor:
        """Per-molecule outputs ``(B, num_tasks)``."""
        if self.pool != "encoder":
            pooled = scatter(
                output.node,
                _molecule_index(output, batch),
                dim=0,
                dim_size=output.graph.size(0),
                reduce=self.pool,
            )
            output = replace(output, graph=pooled)
        return self.mlp(output)


class EquivariantScalarsHead(nn.Module):
    """TorchMD-NET's equivariant output network with one scalar per task, pooled per molecule.

    Several tasks share the gated blocks, the last one giving ``T`` scalars per atom: TorchMD-NET's
    own multi-output form (``EquivariantScalar`` with ``out_channels=T``). With one network per
    task (``per_task=True``, the form before) the same UniCorn encoder fine-tuned on QM9's HOMO,
    LUMO and gap was 51% worse on validation than with the shared blocks, through TorchMD-NET's
    fine-tuning code (docs/RESULTS.md, "Cross-check through TorchMD-NET"). One task is the same
    network either way, with the same parameter names.

    Args:
        in_dim: Encoder ``out_dim`` (the encoder must give ``vec``: a 3D equivariant encoder).
        num_tasks: Outputs per molecule.
        pool: ``"sum"`` (extensive targets: energies, the QM9 default) or ``"mean"``.
        activation: Activation inside the gated blocks.
        per_task: One separate network per task instead of shared blocks.
        output_init: ``"zero"``: the last linear layer starts at zero, so that the head
            outputs 0 and the fine-tuned model starts as the training mean (standardised loss
            1); ``"xavier"``: TorchMD-NET's initialisation throughout, whose summed atom outputs
            start several target standard deviations off (standardised loss about 40 on QM9's
            HOMO, LUMO and gap). In 600 fine-tuning steps on 1,000 QM9 labels the zero start
            gave validation MAE 240 meV against 317 (docs/RESULTS.md, "The head's
            initialisation").

    Shapes:
        ``output.node (N, D)``, ``output.vec (N, 3, D)`` -> ``(B, num_tasks)``.
    """

    def __init__(
        self,
        in_dim: int,
        num_tasks: int,
        pool: Literal["sum", "mean"] = "sum",
        activation: str = "silu",
        per_task: bool = False,
        output_init: Literal["zero", "xavier"] = "zero",
    ) -> None:
        super().__init__()
        if pool not in ("sum", "mean"):
            raise ValueError(f"the equivariant head pools by 'sum' or 'mean', got {pool!r}")
        if output_init not in OUTPUT_INITS:
            raise ValueError(f"output_init must be one of {OUTPUT_INITS}, got {output_init!r}")
        self.num_tasks = num_tasks
        if per_task:
            heads = [EquivariantScalarHead(in_dim, activation, pool) for _ in range(num_tasks)]
        else:
            heads = [EquivariantScalarHead(in_dim, activation, pool, outputs=num_tasks)]
        self.heads = nn.ModuleList(heads)
        if output_init == "zero":
            for head in self.heads:
                head.zero_output_layer()

    def forward(self, output: EncoderOutput, batch: Batch) -> Tensor:
        """Per-molecule outputs ``(B, num_tasks)``."""
        outputs = [head(output, batch) for head in self.heads]
        if len(outputs) == 1:
            return outputs[0].reshape(-1, self.num_tasks)
        return torch.stack(outputs, dim=-1)


class PropertyHead(nn.Module):
    """One QM9 property from positions (``"dipole"``: mu, ``"spatial_extent"``: <R^2>), as
    the ``(B, 1)`` task output of fine-tuning.

    Args:
        kind: ``"dipole"`` or ``"spatial_extent"``.
        in_dim: Encoder ``out_dim`` (the dipole needs a 3D equivariant encoder's ``vec``).
        activation: Activation inside the head.

    Attributes:
        shift_by_mean: Whether the module may add the targets' mean to the output (not to a
            dipole's length, which must be able to reach 0).
    """

    def __init__(self, kind: str, in_dim: int, activation: str = "silu") -> None:
        super().__init__()
        if kind not in PROPERTY_HEADS:
            raise ValueError(f"kind must be one of {sorted(PROPERTY_HEADS)}, got {kind!r}")
        self.kind = kind
        self.head = PROPERTY_HEADS[kind](in_dim, activation=activation)
        self.shift_by_mean = bool(self.head.shift_by_mean)

    def forward(self, output: EncoderOutput, batch: Batch) -> Tensor:
        """Per-molecule outputs ``(B, 1)``."""
        return self.head(output, batch).unsqueeze(-1)


def build_task_head(
    kind: HeadKind,
    in_dim: int,
    num_tasks: int,
    pool: Pool = "mean",
    hidden_dim: int | None = None,
    dropout: float = 0.0,
    activation: str = "silu",
    output_init: Literal["zero", "xavier"] = "zero",
) -> nn.Module:
    """The head named ``kind`` (``"mlp"``, ``"equivariant"``, ``"dipole"`` or
    ``"spatial_extent"``); see the classes for arguments (``output_init``: the equivariant
    head's).

    Raises:
        ValueError: Unknown kind, ``num_tasks < 1``, or arguments the kind cannot take.
    """
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
    if kind == "mlp":
        return PooledMLPHead(in_dim, num_tasks, pool, hidden_dim, dropout, activation)
    if kind == "equivariant":
        if pool == "encoder":
            raise ValueError("the equivariant head pools atom scalars: pool must be sum or mean")
        return EquivariantScalarsHead(in_dim, num_tasks, pool, activation, output_init=output_init)
    if kind in PROPERTY_HEADS:
        if num_tasks != 1:
            raise ValueError(f"the {kind} head predicts one property: num_tasks must be 1")
        return PropertyHead(kind, in_dim, activation)
    raise ValueError(f"head must be one of {HEAD_KINDS}, got {kind!r}")

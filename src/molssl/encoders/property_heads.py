"""Heads that build a QM9 property from atomic contributions and the atoms' positions.

A scalar per atom summed over the molecule (:class:`~molssl.encoders.heads.EquivariantScalarHead`)
suits extensive properties; two QM9 targets have a known form in the positions instead, and
TorchMD-NET's output models (``torchmdnet/models/output_modules.py``: ``EquivariantDipoleMoment``
and ``ElectronicSpatialExtent``; Frad, ``fengshikun/FradNMI``, fine-tunes QM9 with the same
file) put that form into the head:

* :class:`DipoleMomentHead`, ``mu`` (D): the gated equivariant network gives each atom a
  charge ``q_i`` and a vector ``v_i``; the dipole vector is ``sum_i q_i (r_i - c) + v_i`` with
  ``c`` the centre of mass, and the prediction its length. Unlike TorchMD-NET, the charges are
  neutralised per molecule (``q_i - mean(q)``, ``neutral=True``): QM9 molecules carry no net
  charge, and only for a neutral molecule is ``sum_i q_i r_i`` the same from every origin, so
  the centre's choice no longer matters.
* :class:`SpatialExtentHead`, ``r2`` (a0²): an MLP gives each atom a weight ``w_i`` and the
  prediction is ``sum_i w_i |r_i - c|^2`` (TorchMD-NET's ``ElectronicSpatialExtent``, which
  its equivariant models also use).

Centre of mass: atomic masses from RDKit's periodic table (TorchMD-NET takes ASE's; both are
the IUPAC standard weights, equal for H, C, N, O and F to the digits either gives).
"""

from __future__ import annotations

import functools

import torch
from rdkit import Chem
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from molssl.encoders.activations import activation as make_activation
from molssl.encoders.base import EncoderOutput
from molssl.encoders.heads import GatedOutputNetwork

__all__ = ["DipoleMomentHead", "SpatialExtentHead", "atomic_masses", "centre_of_mass"]

#: Atomic numbers with a mass in :func:`atomic_masses` (RDKit's periodic table ends at 118).
_NUM_ELEMENTS = 119


@functools.cache
def _mass_table() -> tuple[float, ...]:
    table = Chem.GetPeriodicTable()
    return tuple(table.GetAtomicWeight(z) for z in range(_NUM_ELEMENTS))


def atomic_masses(z: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard atomic weights (u) of the atomic numbers ``z``, on ``z``'s device."""
    if z.numel() and (int(z.min()) < 1 or int(z.max()) >= _NUM_ELEMENTS):
        raise ValueError(f"atomic numbers must lie in [1, {_NUM_ELEMENTS}), got {z.tolist()[:8]}")
    return torch.tensor(_mass_table(), dtype=dtype, device=z.device)[z]


def _molecule_index(batch: Batch | Data, num_atoms: int, device: torch.device) -> Tensor:
    index = getattr(batch, "batch", None)
    return torch.zeros(num_atoms, dtype=torch.long, device=device) if index is None else index


def _sum_per_molecule(values: Tensor, index: Tensor, num_graphs: int) -> Tensor:
    shape = (num_graphs, *values.shape[1:])
    return values.new_zeros(shape).index_add_(0, index, values)


def centre_of_mass(batch: Batch | Data, num_graphs: int) -> Tensor:
    """Mass-weighted centre of each molecule, ``(B, 3)``, from ``batch.z`` and ``batch.pos``."""
    pos = batch.pos
    mass = atomic_masses(batch.z, pos.dtype).unsqueeze(-1)
    index = _molecule_index(batch, pos.size(0), pos.device)
    total = _sum_per_molecule(mass, index, num_graphs)
    return _sum_per_molecule(mass * pos, index, num_graphs) / total


def _positions(batch: Batch | Data | None, head: str) -> Tensor:
    if batch is None or getattr(batch, "pos", None) is None or getattr(batch, "z", None) is None:
        raise ValueError(f"{head} needs the batch's atom positions 'pos' and numbers 'z'")
    return batch.pos


class DipoleMomentHead(GatedOutputNetwork):
    """The molecular dipole moment from atomic charges, positions and atomic vectors.

    ``mu = | sum_i (q_i - neutral * mean_mol(q)) (r_i - c) + v_i |`` where ``(q_i, v_i)`` are
    the scalar and the vector output of TorchMD-NET's gated equivariant output network and
    ``c`` is the centre of mass. The dipole vector (:meth:`vector`) turns with the molecule;
    its length does not change.

    The module that holds this head must not add a target mean to the prediction (a length
    shifted by a constant could not reach 0): :attr:`shift_by_mean` is ``False``.

    Args:
        hidden_channels: Encoder width ``D`` (a 3D equivariant encoder: ``output.vec`` is read).
        activation: Activation inside the gated blocks.
        neutral: Neutralise the predicted charges per molecule (TorchMD-NET does not).

    Shapes:
        ``output.node (N, D)``, ``output.vec (N, 3, D)``, ``batch.pos (N, 3)``, ``batch.z (N,)``
        -> ``(B,)``; :meth:`vector` gives ``(B, 3)``.
    """

    shift_by_mean = False

    def __init__(
        self, hidden_channels: int, activation: str = "silu", neutral: bool = True
    ) -> None:
        super().__init__(hidden_channels, activation)
        self.neutral = bool(neutral)

    def vector(self, output: EncoderOutput, batch: Batch | Data | None) -> Tensor:
        """The dipole vectors ``(B, 3)``."""
        pos = _positions(batch, "DipoleMomentHead")
        charge, vec = self._run(output, "DipoleMomentHead")
        num_graphs = output.graph.size(0)
        index = _molecule_index(batch, pos.size(0), pos.device)
        if self.neutral:
            atoms = _sum_per_molecule(torch.ones_like(charge), index, num_graphs)
            charge = charge - (_sum_per_molecule(charge, index, num_graphs) / atoms)[index]
        relative = pos.to(charge.dtype) - centre_of_mass(batch, num_graphs).to(charge.dtype)[index]
        return _sum_per_molecule(charge.unsqueeze(-1) * relative + vec, index, num_graphs)

    def forward(self, output: EncoderOutput, batch: Batch | Data | None = None) -> Tensor:
        """Dipole moments ``(B,)``: the lengths of :meth:`vector`."""
        return torch.linalg.vector_norm(self.vector(output, batch), dim=-1)


class SpatialExtentHead(nn.Module):
    """The electronic spatial extent ``<R^2> = sum_i w_i |r_i - c|^2`` (TorchMD-NET).

    ``w_i`` comes from an MLP on the atom's invariant features (``Linear(D, D/2) -> act ->
    Linear(D/2, 1)``, Xavier weights, zero biases, as TorchMD-NET's), ``c`` is the centre of
    mass. The encoder's vector features take no part; they are tied into the graph with a zero
    weight, as TorchMD-NET's equivariant heads do, so that every encoder parameter has a
    gradient (distributed training checks for unused parameters).

    Args:
        hidden_channels: Encoder width ``D``.
        activation: Activation of the MLP.

    Shapes:
        ``output.node (N, D)``, ``batch.pos (N, 3)``, ``batch.z (N,)`` -> ``(B,)``.
    """

    shift_by_mean = True

    def __init__(self, hidden_channels: int, activation: str = "silu") -> None:
        super().__init__()
        if hidden_channels < 2:
            raise ValueError(f"hidden_channels must be at least 2, got {hidden_channels}")
        self.output_network = nn.Sequential(
            nn.Linear(hidden_channels, hidden_channels // 2),
            make_activation(activation),
            nn.Linear(hidden_channels // 2, 1),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier weights, zero biases (TorchMD-NET's initialisation)."""
        for layer in (self.output_network[0], self.output_network[2]):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, output: EncoderOutput, batch: Batch | Data | None = None) -> Tensor:
        """Spatial extents ``(B,)``."""
        pos = _positions(batch, "SpatialExtentHead")
        weight = self.output_network(output.node).squeeze(-1)
        num_graphs = output.graph.size(0)
        index = _molecule_index(batch, pos.size(0), pos.device)
        relative = pos.to(weight.dtype) - centre_of_mass(batch, num_graphs).to(weight.dtype)[index]
        extent = _sum_per_molecule(weight * relative.square().sum(-1), index, num_graphs)
        if output.vec is not None:
            extent = extent + 0.0 * output.vec.sum()
        return extent

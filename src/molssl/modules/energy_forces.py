"""Energies and forces ``F = -dE/dpos`` of a model, in training and in evaluation alike.

Forces are the negative gradient of the predicted energy with respect to the atom positions
(TorchMD-NET's ``derivative=True``), so they are conservative by construction. Training needs
``create_graph=True`` to differentiate a force loss; evaluation needs a gradient although
Lightning runs it under ``torch.inference_mode``, where no tensor can join an autograd graph.
:func:`energy_and_forces` handles both: under inference mode it copies the batch into
ordinary tensors and switches autograd back on for the force computation only.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor
from torch_geometric.data import Batch
from torch_geometric.utils import scatter

__all__ = ["energy_and_forces", "molecule_index", "per_molecule_sum"]


def molecule_index(batch: Batch) -> Tensor:
    """``batch.batch``, or zeros for a single molecule given as a ``Data``."""
    index = getattr(batch, "batch", None)
    return torch.zeros_like(batch.z) if index is None else index


def per_molecule_sum(per_atom: Tensor, batch: Batch, num_graphs: int) -> Tensor:
    """Sums ``(N, ...)`` atom values per molecule: ``(num_graphs, ...)``."""
    return scatter(per_atom, molecule_index(batch), dim=0, dim_size=num_graphs, reduce="sum")


def energy_and_forces(
    energy_of: Callable[[Batch], Tensor], batch: Batch, create_graph: bool = False
) -> tuple[Tensor, Tensor]:
    """Energies from ``energy_of(batch)`` and forces ``-dE/dpos`` ``(N, 3)``.

    Args:
        energy_of: The model's energy ``(B, 1)`` of a batch (differentiable in ``pos``).
        batch: Molecules with ``z`` and ``pos``; not modified.
        create_graph: Keep the graph of the forces (training with a force loss); otherwise
            both results are detached.
    """
    with torch.inference_mode(False), torch.enable_grad():
        # A clone of inference tensors is an ordinary tensor; otherwise a shallow copy keeps
        # the caller's batch free of the differentiable positions set below.
        batch = batch.clone() if batch.pos.is_inference() else copy.copy(batch)
        pos = batch.pos.detach().requires_grad_(True)
        batch.pos = pos
        energy = energy_of(batch)
        (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=create_graph)
    forces = -grad
    if not create_graph:
        energy, forces = energy.detach(), forces.detach()
    return energy, forces

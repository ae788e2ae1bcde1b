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
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Batch
from torch_geometric.utils import scatter

__all__ = ["energy_and_forces", "energy_force_losses", "molecule_index", "per_molecule_sum"]


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


def energy_force_losses(
    energy_of: Callable[[Batch], Tensor],
    batch: Batch,
    create_graph: bool,
    energy_weight: float,
    force_weight: float,
) -> tuple[Tensor, dict[str, Tensor], tuple[Tensor, ...]]:
    """``energy_weight * MSE(E) + force_weight * MSE(F)`` against ``batch.energy`` and
    ``batch.forces`` (the paper's 0.2 / 0.8), in the data's units.

    Returns:
        ``(loss, {"energy_loss", "force_loss"}, (energy, energy target, forces, force target))``.
    """
    energy, forces = energy_and_forces(energy_of, batch, create_graph=create_graph)
    target_energy = batch.energy.reshape(-1, 1).to(energy.dtype)
    target_forces = batch.forces.to(forces.dtype)
    parts = {
        "energy_loss": F.mse_loss(energy, target_energy),
        "force_loss": F.mse_loss(forces, target_forces),
    }
    loss = energy_weight * parts["energy_loss"] + force_weight * parts["force_loss"]
    return loss, parts, (energy, target_energy, forces, target_forces)

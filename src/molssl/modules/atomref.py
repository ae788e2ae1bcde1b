"""Per-element reference values of fine-tuning targets: QM9's free-atom energies.

An extensive energy ``E`` of a molecule is mostly the sum of its atoms' energies; a model then
learns the remainder (the atomisation energy) and adds ``sum_i atomref[z_i]`` back. TorchMD-NET
does this with its ``Atomref`` prior (``torchmdnet/priors.py``; Frad's QM9 energy fine-tuning,
``fengshikun/FradNMI`` ``examples/ET-QM9-FT-nt_dw_0.2_long.yaml`` with ``prior_model: Atomref``),
whose values for QM9 are the energies of the free atoms at the level of theory of QM9
(B3LYP/6-31G(2df,p)), published with the data set as ``atomref.txt`` and read by PyG's ``QM9``
(``torch_geometric.datasets.qm9.atomrefs``, in eV).

:data:`QM9_FREE_ATOM_ENERGIES` holds them in Hartree, for U0, U, H and G; the other QM9
targets have no reference (zero), as in PyG and TorchMD-NET. ``FinetuneModule(atomref="qm9")``
uses them; ``atomref=True`` instead takes the references that the datamodule fits by least
squares on the training split (:class:`~molssl.datamodules.qm9.QM9DataModule`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor
from torch_geometric.data import Data

from molssl.datamodules.qm9_raw import HARTREE_TO_MEV

__all__ = ["QM9_FREE_ATOM_ENERGIES", "qm9_atomref_table", "residual_statistics"]

#: QM9's ``atomref.txt``: energies (Hartree) of the free H, C, N, O and F atoms at 0 K (U0)
#: and at 298.15 K (U, H, G), by target name and atomic number.
QM9_FREE_ATOM_ENERGIES: dict[str, dict[int, float]] = {
    "U0": {1: -0.500273, 6: -37.846772, 7: -54.583861, 8: -75.064579, 9: -99.718730},
    "U": {1: -0.498857, 6: -37.845355, 7: -54.582445, 8: -75.063162, 9: -99.717314},
    "H": {1: -0.497912, 6: -37.844411, 7: -54.581501, 8: -75.062219, 9: -99.716370},
    "G": {1: -0.510927, 6: -37.861317, 7: -54.598897, 8: -75.079532, 9: -99.733544},
}


def qm9_atomref_table(task_names: Sequence[str], max_z: int) -> Tensor:
    """The free-atom energies (meV, molssl's QM9 unit) of the targets ``task_names``, as a
    ``(T, max_z)`` table indexed by atomic number; zero for targets without a reference.

    Raises:
        ValueError: If no target has a reference (``atomref="qm9"`` would then do nothing).
    """
    table = torch.zeros(len(task_names), max_z, dtype=torch.float64)
    for row, name in enumerate(task_names):
        for z, energy in QM9_FREE_ATOM_ENERGIES.get(name, {}).items():
            table[row, z] = energy * HARTREE_TO_MEV
    if not bool(table.any()):
        raise ValueError(
            f"atomref='qm9' has free-atom energies for {sorted(QM9_FREE_ATOM_ENERGIES)} only; "
            f"the targets are {list(task_names)}: use atomref=false for them"
        )
    return table


def residual_statistics(molecules: Iterable[Data], table: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and (population) std per target of ``y - sum_i table[:, z_i]`` over ``molecules``.

    Missing labels (NaN) are left out of their target's statistics; a std that is 0 or
    undefined becomes 1, as the datamodules' statistics do. Computed in float64.

    Args:
        molecules: ``Data`` with ``z`` and ``y`` ``(1, T)`` (e.g. a training split).
        table: ``(T, max_z)`` references.

    Returns:
        ``(mean, std)``, each ``(T,)`` float32.
    """
    table = table.to(torch.float64)
    residuals = []
    for data in molecules:
        reference = table[:, data.z].sum(dim=1)
        residuals.append(data.y.reshape(-1).to(torch.float64) - reference)
    if not residuals:
        raise ValueError("no training molecule to compute the residual statistics on")
    residual = torch.stack(residuals)
    labelled = ~torch.isnan(residual)
    count = labelled.sum(0).clamp(min=1)
    filled = torch.where(labelled, residual, torch.zeros_like(residual))
    mean = filled.sum(0) / count
    centred = torch.where(labelled, residual - mean, torch.zeros_like(residual))
    std = (centred.square().sum(0) / count).sqrt()
    std = torch.where((labelled.sum(0) > 1) & (std > 0), std, torch.ones_like(std))
    return mean.float(), std.float()

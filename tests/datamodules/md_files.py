"""Small sGDML ``.npz`` trajectories in the true layout, with physically consistent labels.

``write_sgdml(path, smiles, frames)`` embeds a real molecule with RDKit (ethanol by default),
displaces it randomly per frame, and labels every frame with a harmonic bond potential
``E = E0 + sum_bonds K (d - d0)^2`` (kcal/mol, Å) and its exact forces ``F = -dE/dR``, so a
test can recompute the energy of any loaded frame and check ``F = -dE/dR`` by finite
differences. Keys and dtypes as the sGDML files: ``z`` (N,) int, ``R`` (F, N, 3), ``E``
(F, 1) (or (F,)), ``F`` (F, N, 3), and string metadata ``name``, ``theory``, ``md5``,
``type``, ``r_unit``, ``e_unit``.

Other test modules (configs, fine-tuning) reuse this writer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rdkit import Chem
from rdkit.Chem import AllChem

__all__ = ["BOND_K", "E0", "HarmonicBonds", "write_sgdml"]

#: Bond force constant (kcal/mol/Å²) and energy offset (kcal/mol, about ethanol's MD17 value).
BOND_K = 300.0
E0 = -97_000.0


@dataclass
class HarmonicBonds:
    """The potential the labels come from.

    Attributes:
        bonds: ``(B, 2)`` atom pairs.
        rest: ``(B,)`` rest lengths (Å): the bond lengths of the embedded conformer.
    """

    bonds: np.ndarray
    rest: np.ndarray

    def energy_forces(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(F,)`` energies and ``(F, N, 3)`` forces of ``(F, N, 3)`` positions."""
        i, j = self.bonds[:, 0], self.bonds[:, 1]
        delta = positions[:, i] - positions[:, j]
        length = np.linalg.norm(delta, axis=-1)
        stretch = length - self.rest
        energy = E0 + BOND_K * (stretch**2).sum(-1)
        # dE/dr_i = 2 K stretch (r_i - r_j) / d; F = -dE/dR.
        grad = (2 * BOND_K * stretch / length)[..., None] * delta
        forces = np.zeros_like(positions)
        np.add.at(forces, (slice(None), i), -grad)
        np.add.at(forces, (slice(None), j), grad)
        return energy, forces


def write_sgdml(
    path: str | Path,
    smiles: str = "CCO",
    frames: int = 1100,
    name: str = "ethanol",
    theory: str = "DFT: PBE+TS",
    flat_energy: bool = False,
    nan_frames: tuple[int, ...] = (),
    amplitude: float = 0.05,
    seed: int = 0,
) -> HarmonicBonds:
    """Write a trajectory of ``smiles`` (hydrogens explicit) to ``path``.

    Args:
        frames: Number of frames.
        flat_energy: Write ``E`` as ``(F,)`` instead of the usual ``(F, 1)``.
        nan_frames: Frames whose first force component is set to NaN.
        amplitude: Standard deviation (Å) of the random displacement of every atom.
        seed: Seed of the embedding and of the displacements.

    Returns:
        The potential, to recompute energies and forces of any positions.
    """
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = seed + 1
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise RuntimeError(f"ETKDG failed on {smiles!r}")
    reference = mol.GetConformer().GetPositions()
    bonds = np.array([(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()])
    rest = np.linalg.norm(reference[bonds[:, 0]] - reference[bonds[:, 1]], axis=-1)
    potential = HarmonicBonds(bonds, rest)
    rng = np.random.default_rng(seed)
    positions = reference[None] + rng.normal(0.0, amplitude, size=(frames, *reference.shape))
    energy, forces = potential.energy_forces(positions)
    forces[list(nan_frames), 0, 0] = np.nan
    np.savez(
        path,
        z=np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.uint8),
        R=positions,
        E=energy if flat_energy else energy[:, None],
        F=forces,
        name=np.array(name),
        theory=np.array(theory),
        md5=np.array("0" * 32),
        type=np.array("d"),
        r_unit=np.array("Ang"),
        e_unit=np.array("kcal/mol"),
    )
    return potential

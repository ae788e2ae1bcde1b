"""MD17 and MD22 fine-tuning data: sGDML trajectories → frames with energy and forces.

Units (stated once at setup and in :meth:`~MDDataModule.stats`): positions Å, ``energy``
kcal/mol, ``forces`` kcal/mol/Å (the sGDML files' own units; other declared units are
converted by :func:`~molssl.datamodules.md_raw.read_sgdml`).

Each frame is a ``Data`` with ``z`` (N,), ``pos`` (N, 3) float32, ``energy`` (1, 1) float32,
``forces`` (N, 3) float32, ``mol_id`` (frame index in the file), ``smiles`` ``""``. Frames are
built on access from the trajectory arrays, so a 200k-frame MD17 file costs its arrays only.
``energy`` is float32 like every model output: at MD17's -1e5 kcal/mol that resolves about
0.008 kcal/mol; :meth:`~MDDataModule.target_statistics` uses the float64 energies.

Splits, seeded random: MD17 950 train / 50 validation / rest test (the paper's "1,000
samples, 50 for validation"); MD22 8:1:1. ``train_size`` / ``val_size`` take a count (int)
or a fraction (float).

A trajectory is named by ``path``, or by ``molecule`` + ``root``: the standard file names
(``aspirin`` → ``root/md17_aspirin.npz``, ``benzene`` → ``md17_benzene2017.npz``,
``Ac-Ala3-NHMe`` → ``root/md22_Ac-Ala3-NHMe.npz``, ...), then ``root/<prefix>_<molecule>.npz``
and ``root/<molecule>.npz``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch_geometric.data import Data

from molssl.datamodules.finetune_base import FinetuneDataModule, LoadedDataset, SampleTransform
from molssl.datamodules.md_raw import MD_UNITS, MDFormatError, MDTrajectory, read_sgdml
from molssl.datamodules.sized_splits import SplitSize, sized_random_split
from molssl.datamodules.splits import SplitIndices
from molssl.errors import UserError

__all__ = [
    "MD17_FILES",
    "MD22_FILES",
    "MD17DataModule",
    "MD22DataModule",
    "MDDataModule",
    "MDFrames",
    "trajectory_path",
]

#: Standard sGDML file names of the MD17 molecules (quantum-machine.org/gdml).
MD17_FILES: dict[str, tuple[str, ...]] = {
    "aspirin": ("md17_aspirin.npz",),
    "benzene": ("md17_benzene2017.npz", "md17_benzene.npz"),
    "ethanol": ("md17_ethanol.npz",),
    "malonaldehyde": ("md17_malonaldehyde.npz",),
    "naphthalene": ("md17_naphthalene.npz",),
    "salicylic_acid": ("md17_salicylic.npz",),
    "toluene": ("md17_toluene.npz",),
    "uracil": ("md17_uracil.npz",),
}
#: Standard sGDML file names of the MD22 molecules (spellings seen in the wild included).
MD22_FILES: dict[str, tuple[str, ...]] = {
    "ac_ala3_nhme": ("md22_Ac-Ala3-NHMe.npz",),
    "dha": ("md22_DHA.npz",),
    "stachyose": ("md22_stachyose.npz",),
    "at_at": ("md22_AT-AT.npz",),
    "at_at_cg_cg": ("md22_AT-AT-CG-CG.npz",),
    "buckyball_catcher": ("md22_buckyball-catcher.npz", "md22_buckyball_catcher.npz"),
    "double_walled_nanotube": (
        "md22_double-walled_nanotube.npz",
        "md22_dw_nanotube.npz",
        "md22_double_walled_nanotube.npz",
    ),
}


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def trajectory_path(
    molecule: str, root: str | os.PathLike[str], files: dict[str, tuple[str, ...]], prefix: str
) -> Path:
    """The trajectory file of ``molecule`` under ``root`` (see the module docstring).

    Raises:
        MDFormatError: ``missing_file``, listing every path tried.
    """
    base = Path(root)
    key = _normalise(molecule)
    aliases = {"salicylic": "salicylic_acid", "dw_nanotube": "double_walled_nanotube"}
    key = aliases.get(key, key)
    names = [*files.get(key, ()), f"{prefix}_{molecule}.npz", f"{molecule}.npz"]
    tried = [base / name for name in dict.fromkeys(names)]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    raise MDFormatError(
        f"no trajectory for {molecule!r}: tried {[str(p) for p in tried]}; known molecules: "
        f"{sorted(files)}; or pass path= to the .npz file",
        reason="missing_file",
    )


class MDFrames(Sequence[Data]):
    """The frames of a trajectory as ``Data`` built on access."""

    def __init__(self, trajectory: MDTrajectory) -> None:
        self.trajectory = trajectory
        self._z = torch.from_numpy(trajectory.z)

    def __len__(self) -> int:
        return len(self.trajectory.frame)

    @overload
    def __getitem__(self, index: int) -> Data: ...

    @overload
    def __getitem__(self, index: slice) -> list[Data]: ...

    def __getitem__(self, index: int | slice) -> Data | list[Data]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(f"frame {index} out of range for {len(self)} frames")
        t = self.trajectory
        i = int(index) % len(self)
        return Data(
            z=self._z.clone(),
            pos=torch.from_numpy(t.positions[i].copy()),
            energy=torch.tensor([[t.energy[i]]], dtype=torch.float32),
            forces=torch.from_numpy(t.forces[i].copy()),
            mol_id=torch.tensor(int(t.frame[i]), dtype=torch.long),
            smiles="",
            num_nodes=t.num_atoms,
        )


class MDDataModule(FinetuneDataModule):
    """Energy and force fine-tuning on one sGDML trajectory (see the module docstring).

    Args:
        path: The ``.npz`` file; when ``None``, found from ``molecule`` and ``root``.
        molecule: Molecule name (e.g. ``"aspirin"``), used with ``root``.
        root: Directory of the trajectory files.
        train_size, val_size: Split sizes, counts (int) or fractions (float).
        batch_size, num_workers, seed, split, eval_batch_size, transform: See
            :class:`~molssl.datamodules.finetune_base.FinetuneDataModule` (split:
            ``"random"``).
    """

    supported_splits = ("random",)
    dataset_name = "MD"
    file_prefix = "md"
    known_files: dict[str, tuple[str, ...]] = {}

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        molecule: str | None = None,
        root: str | os.PathLike[str] | None = None,
        train_size: SplitSize = 0.8,
        val_size: SplitSize = 0.1,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        split: str = "random",
        eval_batch_size: int | None = None,
        transform: SampleTransform | None = None,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            split=split,
            eval_batch_size=eval_batch_size,
            transform=transform,
        )
        if path is None and (molecule is None or root is None):
            raise UserError(f"{type(self).__name__}: pass path=, or molecule= and root=")
        self.path = None if path is None else Path(path)
        self.molecule = molecule
        self.root = root
        self.train_size = train_size
        self.val_size = val_size
        self.trajectory: MDTrajectory | None = None

    def resolve_path(self) -> Path:
        """The trajectory file this module reads."""
        if self.path is not None:
            return self.path
        assert self.molecule is not None and self.root is not None
        return trajectory_path(self.molecule, self.root, self.known_files, self.file_prefix)

    def _load(self) -> LoadedDataset:
        path = self.resolve_path()
        trajectory = read_sgdml(path)
        self.trajectory = trajectory
        name = trajectory.metadata.get("name", self.molecule or path.stem)
        units = dict(MD_UNITS)
        rank_zero_info(
            f"molssl {type(self).__name__}: {path}: {name!r}, {trajectory.num_atoms} atoms, "
            f"theory {trajectory.metadata.get('theory', 'not stated')}; units: positions "
            f"{units['positions']}, energy {units['energy']}, forces {units['forces']}"
        )
        info: dict[str, Any] = {
            "dataset": self.dataset_name,
            "molecule": name,
            "num_atoms": trajectory.num_atoms,
            "units": units,
            "metadata": dict(trajectory.metadata),
            "path": str(path),
        }
        return LoadedDataset(
            data=MDFrames(trajectory),  # type: ignore[arg-type]  # a lazy Sequence[Data]
            task_names=["energy"],
            task_type="energy_forces",
            read=trajectory.read,
            failures=trajectory.failures,
            origin=str(path),
            info=info,
        )

    def declared_tasks(self) -> tuple[str, list[str]]:
        """Energies and forces, one task."""
        return "energy_forces", ["energy"]

    def _split(self, n: int) -> SplitIndices:
        return sized_random_split(n, self.train_size, self.val_size, self.seed)

    def target_statistics(self) -> dict[str, torch.Tensor]:
        """Statistics of the TRAIN frames (float32 ``(1,)`` tensors, computed in float64).

        ``"mean"`` / ``"std"``: energy per atom (kcal/mol; std 1 when undefined), as the
        base class defines them; ``"energy_mean"`` / ``"energy_std"``: total energy;
        ``"force_rms"``: root mean square force component; ``"force_std"``: standard
        deviation of the force components (kcal/mol/Å).
        """
        self._require_setup()
        assert self.trajectory is not None and self.split_indices is not None
        train = self.split_indices.train
        energy = self.trajectory.energy[train]
        forces = self.trajectory.forces[train].astype(np.float64).reshape(-1)
        per_atom = energy / self.trajectory.num_atoms

        def one(value: float) -> torch.Tensor:
            return torch.tensor([value], dtype=torch.float32)

        def spread(values: np.ndarray) -> float:
            std = float(values.std()) if len(values) > 1 else 0.0
            return std if std > 0 else 1.0

        return {
            "mean": one(float(per_atom.mean())),
            "std": one(spread(per_atom)),
            "energy_mean": one(float(energy.mean())),
            "energy_std": one(spread(energy)),
            "force_rms": one(float(np.sqrt(np.mean(forces**2)))),
            "force_std": one(spread(forces)),
        }


class MD17DataModule(MDDataModule):
    """MD17 (Chmiela et al. 2017): one molecule's trajectory, 950 / 50 / rest by default."""

    dataset_name = "MD17"
    file_prefix = "md17"
    known_files = MD17_FILES

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        molecule: str | None = None,
        root: str | os.PathLike[str] | None = "data/md17",
        train_size: SplitSize = 950,
        val_size: SplitSize = 50,
        **kwargs: Any,
    ) -> None:
        # Only the defaults differ; the loader settings pass through unchanged.
        super().__init__(path, molecule, root, train_size, val_size, **kwargs)


class MD22DataModule(MDDataModule):
    """MD22 (Chmiela et al. 2023): one molecule's trajectory, 8:1:1 by default."""

    dataset_name = "MD22"
    file_prefix = "md22"
    known_files = MD22_FILES

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        molecule: str | None = None,
        root: str | os.PathLike[str] | None = "data/md22",
        train_size: SplitSize = 0.8,
        val_size: SplitSize = 0.1,
        **kwargs: Any,
    ) -> None:
        # Only the defaults differ; the loader settings pass through unchanged.
        super().__init__(path, molecule, root, train_size, val_size, **kwargs)

"""Small fine-tuning data sets from real molecules, for the FinetuneModule tests.

- :class:`DescriptorData`: RDKit's NCI molecules with one ETKDG+MMFF conformer each, labelled
  with RDKit descriptors (Crippen logP and TPSA for regression; logP above its median and "has
  a ring nitrogen" for classification, with some labels blanked to NaN as MoleculeNet has).
- :class:`ForceFieldFrames`: MD-like frames of one molecule (its MMFF minimum shaken with
  seeded Gaussian noise) labelled with MMFF94 energies (kcal/mol) and forces (kcal/mol/Å),
  which are exactly ``-dE/dpos`` of a real potential.

Both subclass :class:`~molssl.datamodules.finetune_base.FinetuneDataModule`, like the real
MoleculeNet, QM9 and MD datamodules.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from rdkit import Chem
from rdkit.Chem import Crippen, rdForceFieldHelpers, rdMolDescriptors
from torch_geometric.data import Data

from molssl.chem.conformers import ConformerOptions, embed_conformers
from molssl.chem.features import mol_from_smiles, mol_to_data
from molssl.datamodules.finetune_base import FinetuneDataModule, LoadedDataset
from tests.conftest import read_nci_smiles
from tests.modules.pretrain_fixtures import TINY_ENCODER_ARGS

#: Molecules of the descriptor data set (the first NCI lines that embed).
NUM_MOLECULES = 40
#: The pre-training tests' tiny equivariant transformer, so their checkpoints fit.
TINY_ET_ARGS = TINY_ENCODER_ARGS["molssl.encoders.EquivariantTransformer"]


@lru_cache(maxsize=1)
def _embedded_molecules() -> tuple[tuple[str, Chem.Mol], ...]:
    options = ConformerOptions(num_conformers=1, seed=0, max_optimize_iters=200)
    out: list[tuple[str, Chem.Mol]] = []
    for smiles in read_nci_smiles(3 * NUM_MOLECULES):
        mol = mol_from_smiles(smiles, max_heavy_atoms=30)
        out.append((smiles, embed_conformers(mol, options)))
        if len(out) == NUM_MOLECULES:
            break
    return tuple(out)


def descriptor_labels(mol: Chem.Mol, task: str) -> list[float]:
    """Labels of one molecule: ``[logP, TPSA]`` or ``[logP > 1.5, has ring N]``."""
    logp = Crippen.MolLogP(mol)
    if task == "regression":
        return [logp, rdMolDescriptors.CalcTPSA(mol)]
    ring_n = any(a.GetSymbol() == "N" and a.IsInRing() for a in mol.GetAtoms())
    return [float(logp > 1.5), float(ring_n)]


class DescriptorData(FinetuneDataModule):
    """NCI molecules labelled with RDKit descriptors (see the module docstring).

    Args:
        task: ``"regression"`` or ``"classification"``.
        num_molecules: How many of the embedded molecules to use.
        missing_every: Blank the second label of every ``missing_every``-th molecule (0: none).
        **kwargs: :class:`FinetuneDataModule` arguments (batch_size, seed, split, ...).
    """

    def __init__(
        self,
        task: str = "regression",
        num_molecules: int = NUM_MOLECULES,
        missing_every: int = 4,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.task = task
        self.num_molecules = num_molecules
        self.missing_every = missing_every

    def _load(self) -> LoadedDataset:
        data: list[Data] = []
        for index, (smiles, mol) in enumerate(_embedded_molecules()[: self.num_molecules]):
            sample = mol_to_data(mol, conf_id=0)
            labels = descriptor_labels(mol, self.task)
            if self.missing_every and index % self.missing_every == 1:
                labels[1] = float("nan")
            sample.y = torch.tensor([labels], dtype=torch.float32)
            sample.mol_id = torch.tensor(index)
            sample.smiles = smiles
            data.append(sample)
        names = ["logp", "tpsa"] if self.task == "regression" else ["lipophilic", "ring_n"]
        return LoadedDataset(data, names, self.task, read=len(data), origin="NCI descriptors")


def mmff_frames(smiles: str, num_frames: int, noise: float, seed: int) -> list[Data]:
    """Frames of ``smiles`` around its MMFF minimum with MMFF94 energies and forces."""
    mol = embed_conformers(mol_from_smiles(smiles), ConformerOptions(num_conformers=1, seed=seed))
    properties = rdForceFieldHelpers.MMFFGetMoleculeProperties(mol)
    field = rdForceFieldHelpers.MMFFGetMoleculeForceField(mol, properties)
    start = mol.GetConformer().GetPositions()
    rng = np.random.default_rng(seed)
    z = torch.tensor([atom.GetAtomicNum() for atom in mol.GetAtoms()])
    frames = []
    for index in range(num_frames):
        pos = start + rng.normal(scale=noise, size=start.shape)
        flat = pos.reshape(-1).tolist()
        energy = field.CalcEnergy(flat)
        forces = -np.asarray(field.CalcGrad(flat)).reshape(-1, 3)
        frames.append(
            Data(
                z=z,
                pos=torch.tensor(pos, dtype=torch.float32),
                energy=torch.tensor([[energy]], dtype=torch.float32),
                forces=torch.tensor(forces, dtype=torch.float32),
                mol_id=torch.tensor(index),
                smiles=smiles,
            )
        )
    return frames


class ForceFieldFrames(FinetuneDataModule):
    """MMFF94-labelled frames of one molecule (energy_forces; see the module docstring)."""

    def __init__(
        self, smiles: str = "CCO", num_frames: int = 30, noise: float = 0.05, **kwargs: object
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.smiles, self.num_frames, self.noise = smiles, num_frames, noise

    def _load(self) -> LoadedDataset:
        frames = mmff_frames(self.smiles, self.num_frames, self.noise, seed=0)
        return LoadedDataset(frames, ["energy"], "energy_forces", read=len(frames), origin="MMFF")


def brute_force_auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """ROC-AUC as the Mann-Whitney statistic over every (positive, negative) pair.

    Ties count one half; NaN labels are skipped; NaN when a class is absent.
    """
    keep = ~torch.isnan(labels)
    scores, labels = scores[keep].tolist(), labels[keep].tolist()
    positives = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    negatives = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    if not positives or not negatives:
        return float("nan")
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))

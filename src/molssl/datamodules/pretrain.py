"""``PretrainDataModule``: prepared molecules → per-sample views → PyG batches.

Each access to a training sample draws one of the molecule's stored conformers, builds its
``Data`` (:meth:`~molssl.datamodules.records.MoleculeRecord.to_data`), runs the pipeline's
views in ``order`` (torsion augmentation → coordinate noise → masks), then drops
``torsion_atoms`` / ``torsion_moving``, which only the torsion view reads and which cannot be
batched. Samples are collated by PyG into a ``Batch``.

Randomness comes from torch's global generator, which PyTorch reseeds per data-loader worker
and per epoch, so training samples get fresh views every time. Validation samples run the
same views (the denoising and masking losses need them) inside a forked generator seeded by
``(seed, mol_id)``: every validation pass sees exactly the same conformers, noise and masks,
and validation losses are comparable across epochs. Pre-training has no separate test set:
``test_dataloader`` serves the same held-out split.

The views come from the attached module (``trainer.lightning_module.pipeline_views()``) when
a trainer is attached, else from :meth:`PretrainDataModule.set_views` (scripts and tests).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import Dataset
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from molssl.chem.conformers import ConformerOptions
from molssl.datamodules.embedded import (
    MANIFEST_FILE,
    RECORDS_FILE,
    PreparedDataset,
    embedded_default,
    molecule_seed,
)
from molssl.datamodules.records import MoleculeRecord, PackedRecords, load_records
from molssl.datamodules.splits import random_split
from molssl.objectives.base import View

__all__ = ["PretrainDataModule", "PretrainDataset", "split_by_molecule"]

#: Keys the torsion view reads; (T, N) per molecule cannot be batched, so they go after views.
DROPPED_KEYS = ("torsion_atoms", "torsion_moving")


def _ordered(views: Sequence[View]) -> list[View]:
    for view in views:
        if not callable(view):
            raise TypeError(f"a view must be callable on a Data, got {type(view).__name__}")
    # Stable: views of equal order keep the order they were given in.
    return sorted(views, key=lambda view: getattr(view, "order", View.order))


class PretrainDataset(Dataset[Data]):
    """Samples of prepared molecules with the pipeline's views applied.

    Args:
        records: Prepared molecules (a list or :class:`~molssl.datamodules.records.PackedRecords`).
        indices: Positions in ``records`` that form this split.
        views: Per-sample views, applied in their ``order``.
        fixed_seed: ``None`` for fresh randomness on every access (training); an integer to
            make each sample's conformer choice and views a function of
            ``(fixed_seed, mol_id)`` (validation).
    """

    def __init__(
        self,
        records: Sequence[MoleculeRecord],
        indices: Sequence[int],
        views: Sequence[View] = (),
        fixed_seed: int | None = None,
    ) -> None:
        self.records = records
        self.indices = np.asarray(indices, dtype=np.int64)
        self.views = _ordered(views)
        self.fixed_seed = fixed_seed

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Data:
        record = self.records[int(self.indices[index])]
        if self.fixed_seed is None:
            return self._sample(record)
        # fork_rng restores the global generator afterwards, so training randomness in the
        # same process is untouched by validation.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(molecule_seed(self.fixed_seed, record.mol_id))
            return self._sample(record)

    def _sample(self, record: MoleculeRecord) -> Data:
        conformer = 0
        if record.num_conformers > 1:
            conformer = int(torch.randint(record.num_conformers, ()))
        data = record.to_data(conformer)
        for view in self.views:
            data = view(data)
        for key in DROPPED_KEYS:
            if key in data:
                del data[key]
        return data


def split_by_molecule(
    smiles: Sequence[str], val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split of record positions, by molecule.

    Records with the same canonical SMILES (a molecule listed twice in the source) go to the
    same side, so validation never scores a molecule the model trained on. The distinct
    molecules are split by :func:`~molssl.datamodules.splits.random_split`.

    Returns:
        Sorted ``(train, val)`` position arrays, disjoint and together covering every record.
        ``val`` holds about ``val_fraction`` of the distinct molecules, at least one when
        ``val_fraction > 0``.

    Raises:
        ValueError: ``val_fraction`` outside ``[0, 1)``, or too few molecules for both sides.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    unique, group = np.unique(np.asarray(smiles, dtype=str), return_inverse=True)
    split = random_split(len(unique), (1.0 - val_fraction, val_fraction, 0.0), seed)
    if val_fraction > 0 and (len(split.val) == 0 or len(split.train) == 0):
        raise ValueError(
            f"{len(unique)} distinct molecule(s) cannot be split into training and "
            f"validation with val_fraction={val_fraction}; use more molecules"
        )
    is_val = np.zeros(len(unique), dtype=bool)
    is_val[split.val] = True
    positions = np.arange(len(group))
    return positions[~is_val[group]], positions[is_val[group]]


class PretrainDataModule(LightningDataModule):
    """Pre-training data: the embedded NCI default or a prepared records file.

    Args:
        root: ``None`` for the embedded default (RDKit's bundled NCI molecules, prepared on
            first use and cached); else a ``.npz`` written by
            :func:`~molssl.datamodules.records.save_records`, or a directory holding
            ``records.npz`` (and optionally ``manifest.json``), such as a cache entry.
        num_molecules: Size of the embedded default (lines of the NCI file read; unused
            with ``root``).
        num_conformers: Conformers prepared per molecule of the embedded default; each
            training access draws one.
        batch_size: Molecules per batch.
        num_workers: Data-loader worker processes (views run in them).
        val_fraction: Share of molecules held out for validation (and ``test``).
        seed: Seed of the split and of the fixed validation views.
        cache_dir: Cache root of the embedded default (default ``$MOLSSL_CACHE`` or
            ``~/.cache/molssl``).
        prepare_workers: Processes for the first-use preparation (default: one per core for
            large sets).
    """

    def __init__(
        self,
        root: str | None = None,
        num_molecules: int = 2000,
        num_conformers: int = 1,
        batch_size: int = 32,
        num_workers: int = 0,
        val_fraction: float = 0.05,
        seed: int = 0,
        cache_dir: str | None = None,
        prepare_workers: int | None = None,
    ) -> None:
        super().__init__()
        if num_molecules < 1:
            raise ValueError(f"num_molecules must be >= 1, got {num_molecules}")
        if num_conformers < 1:
            raise ValueError(f"num_conformers must be >= 1, got {num_conformers}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.save_hyperparameters()
        self._explicit_views: list[View] = []
        self.records: Sequence[MoleculeRecord] | None = None
        self.manifest: dict[str, Any] = {}
        self.train_dataset: PretrainDataset | None = None
        self.val_dataset: PretrainDataset | None = None

    # -- views ---------------------------------------------------------------------------

    def set_views(self, views: Sequence[View]) -> None:
        """Views to apply when no trainer with a ``pipeline_views()`` module is attached."""
        self._explicit_views = _ordered(views)
        for dataset in (self.train_dataset, self.val_dataset):
            if dataset is not None:
                dataset.views = list(self._explicit_views)

    @property
    def views(self) -> list[View]:
        """The ordered views the datasets apply: the attached module's, else ``set_views``."""
        trainer = self.trainer
        module = getattr(trainer, "lightning_module", None) if trainer is not None else None
        pipeline_views = getattr(module, "pipeline_views", None)
        if callable(pipeline_views):
            return _ordered(pipeline_views())
        return list(self._explicit_views)

    # -- data ----------------------------------------------------------------------------

    def _embedded(self) -> PreparedDataset:
        options = ConformerOptions(num_conformers=self.hparams.num_conformers)
        return embedded_default(
            n=self.hparams.num_molecules,
            options=options,
            cache_dir=self.hparams.cache_dir,
            workers=self.hparams.prepare_workers,
        )

    def _load(self) -> tuple[Sequence[MoleculeRecord], dict[str, Any], str]:
        """Records, manifest and a description of where they came from."""
        root = self.hparams.root
        if root is None:
            prepared = self._embedded()
            origin = "cache" if prepared.from_cache else "prepared into"
            return (
                prepared.records,
                prepared.manifest,
                f"embedded NCI ({origin} {prepared.directory})",
            )
        path = Path(root).expanduser()
        if path.is_dir():
            path = path / RECORDS_FILE
        if path.suffix != ".npz" or not path.is_file():
            raise FileNotFoundError(
                f"PretrainDataModule root {root!r}: expected a records .npz written by "
                f"molssl.datamodules.records.save_records, or a directory holding {RECORDS_FILE}"
            )
        records = load_records(path)
        manifest_path = path.parent / MANIFEST_FILE
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
        return records, manifest, str(path)

    def prepare_data(self) -> None:
        """Prepare the embedded default into the cache (once, on the main process)."""
        if self.hparams.root is None:
            self._embedded()

    def setup(self, stage: str | None = None) -> None:
        """Load the records, split them by molecule, and give both splits the views."""
        if self.records is None:
            records, manifest, origin = self._load()
            if len(records) == 0:
                raise ValueError(f"no usable molecule in {origin}; see its manifest")
            smiles = (
                records.smiles
                if isinstance(records, PackedRecords)
                else [r.smiles for r in records]
            )
            train, val = split_by_molecule(smiles, self.hparams.val_fraction, self.hparams.seed)
            self.records, self.manifest = records, manifest
            self.train_dataset = PretrainDataset(records, train)
            self.val_dataset = PretrainDataset(records, val, fixed_seed=self.hparams.seed)
            rank_zero_info(self._describe(origin))
        views = self.views
        for dataset in (self.train_dataset, self.val_dataset):
            if dataset is not None:
                dataset.views = list(views)

    def _describe(self, origin: str) -> str:
        manifest = self.manifest
        text = f"molssl pre-training data: {origin}: {len(self.records or ())} molecules"
        if "read" in manifest:
            text += f" of {manifest['read']} read"
        reasons = manifest.get("failures_by_reason") or {}
        if manifest.get("failed"):
            detail = ", ".join(f"{reason} {count}" for reason, count in reasons.items())
            text += f", {manifest['failed']} failed ({detail})"
        train = len(self.train_dataset or ())
        val = len(self.val_dataset or ())
        return text + f"; split {train} train / {val} validation"

    def stats(self) -> dict[str, Any]:
        """Counts after :meth:`setup`: molecules, split sizes, failures by reason."""
        return {
            "molecules": len(self.records or ()),
            "train": len(self.train_dataset or ()),
            "val": len(self.val_dataset or ()),
            "read": self.manifest.get("read"),
            "failed": self.manifest.get("failed"),
            "failures_by_reason": dict(self.manifest.get("failures_by_reason") or {}),
        }

    # -- loaders -------------------------------------------------------------------------

    def _loader(self, dataset: PretrainDataset | None, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("PretrainDataModule: call setup() before asking for a loader")
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            num_workers=workers,
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches with fresh views."""
        return self._loader(self.train_dataset, shuffle=True)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """Held-out batches with fixed views; none when ``val_fraction`` is 0."""
        if self.val_dataset is not None and len(self.val_dataset) == 0:
            return []
        return self._loader(self.val_dataset, shuffle=False)

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        """Pre-training has no test set: the held-out validation split, fixed views."""
        return self.val_dataloader()

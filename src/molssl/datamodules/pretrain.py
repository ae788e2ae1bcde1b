"""``PretrainDataModule``: shards of prepared molecules → per-sample views → PyG batches.

The data are streamed (:class:`~molssl.datamodules.stream.ShardedStream`): from the shards
of a ``molssl prepare`` directory, or from records in memory (the embedded default, a
records ``.npz``) presented as one virtual shard per distinct molecule. Validation is held out
by shard (:func:`~molssl.datamodules.partition.holdout_shards`), so never a training
molecule. Under DDP each rank streams its own block of every epoch, each loader worker its
own part of it; every rank yields the same number of training batches.

Each training sample draws one of the molecule's stored conformers, builds its ``Data``
(:meth:`~molssl.datamodules.records.MoleculeRecord.to_data`), runs the pipeline's views in
``order`` (torsion augmentation → coordinate noise → masks), then drops ``torsion_atoms`` /
``torsion_moving``, which only the torsion view reads and which cannot be batched. The
randomness is a function of ``(seed, epoch, rank, worker)``: fresh every epoch, reproducible
for a seed. Validation samples run the same views inside a generator seeded by
``(seed, mol_id)``: every validation pass sees exactly the same conformers, noise and masks,
and validation losses are comparable across epochs. Pre-training has no separate test set:
``test_dataloader`` serves the held-out shards.

Resume: every checkpoint holds the training stream's position
(:meth:`PretrainDataModule.state_dict`: epoch, batches consumed on each rank, the layout); a
run resumed from a mid-epoch checkpoint leaves out the molecules of the interrupted epoch's
consumed batches and yields the rest in the uninterrupted run's order
(:mod:`~molssl.datamodules.stream_position`).

The views come from the attached module (``trainer.lightning_module.pipeline_views()``) when
a trainer is attached, else from :meth:`PretrainDataModule.set_views` (scripts and tests).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, Dataset
from torch_geometric.data import Data

from molssl.chem.conformers import ConformerOptions
from molssl.datamodules.collate import collate_samples
from molssl.datamodules.embedded import (
    RECORDS_FILE,
    PreparedDataset,
    embedded_default,
    molecule_seed,
)
from molssl.datamodules.partition import holdout_shards
from molssl.datamodules.records import MoleculeRecord, PackedRecords, load_records
from molssl.datamodules.splits import random_split
from molssl.datamodules.stream import (
    DROPPED_KEYS,
    DiskShards,
    MemoryShards,
    ShardedStream,
    ShardSet,
    ordered_views,
    view_sample,
)
from molssl.datamodules.stream_position import StreamPosition
from molssl.errors import UserError
from molssl.objectives.base import View

__all__ = ["DROPPED_KEYS", "PretrainDataModule", "PretrainDataset", "split_by_molecule"]

# Lightning warns that an IterableDataset's __len__ "could be inaccurate" with several
# workers. ShardedStream splits its epoch by worker itself, and its length is exact.
warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")


class PretrainDataset(Dataset[Data]):
    """Map-style samples of records in memory with the pipeline's views applied.

    The data module streams (:class:`~molssl.datamodules.stream.ShardedStream`); this
    indexable form serves scripts that want sample ``i`` (benchmarks, inspection).

    Args:
        records: Prepared molecules (a list or :class:`~molssl.datamodules.records.PackedRecords`).
        indices: Positions in ``records`` that form this split.
        views: Per-sample views, applied in their ``order``.
        fixed_seed: ``None`` for fresh randomness on every access (torch's global generator);
            an integer to make each sample's conformer choice and views a function of
            ``(fixed_seed, mol_id)``.
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
        self.views = ordered_views(views)
        self.fixed_seed = fixed_seed

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Data:
        record = self.records[int(self.indices[index])]
        if self.fixed_seed is None:
            return view_sample(record, self.views)
        # fork_rng restores the global generator afterwards, so training randomness in the
        # same process is untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(molecule_seed(self.fixed_seed, record.mol_id))
            return view_sample(record, self.views)


def split_by_molecule(
    smiles: Sequence[str], val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split of record positions, by molecule.

    Records with the same canonical SMILES go to the same side. (The data module holds out
    by shard instead; in memory a shard is one distinct molecule, so the effect is the same.)

    Returns:
        Sorted ``(train, val)`` position arrays, disjoint and together covering every record.

    Raises:
        ValueError: ``val_fraction`` outside ``[0, 1)``, or too few molecules for both sides.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"val_fraction must be in [0, 1), got {val_fraction}")
    unique, group = np.unique(np.asarray(smiles, dtype=str), return_inverse=True)
    split = random_split(len(unique), (1.0 - val_fraction, val_fraction, 0.0), seed)
    if val_fraction > 0 and (len(split.val) == 0 or len(split.train) == 0):
        raise UserError(
            f"{len(unique)} distinct molecule(s) cannot be split into training and "
            f"validation with val_fraction={val_fraction}; use more molecules"
        )
    is_val = np.zeros(len(unique), dtype=bool)
    is_val[split.val] = True
    positions = np.arange(len(group))
    return positions[~is_val[group]], positions[is_val[group]]


class PretrainDataModule(LightningDataModule):
    """Pre-training data: a ``molssl prepare`` directory, or the embedded NCI default.

    Args:
        root: ``None`` for the embedded default (RDKit's bundled NCI molecules, prepared on
            first use and cached); a ``molssl prepare`` output directory (``manifest.json``
            and shards), streamed; or a records ``.npz`` (or a directory holding
            ``records.npz``, such as a cache entry), loaded into memory.
        num_molecules: Size of the embedded default (lines of the NCI file read; unused
            with ``root``).
        num_conformers: Conformers prepared per molecule of the embedded default; each
            training sample draws one.
        batch_size: Molecules per batch.
        num_workers: Data-loader worker processes per rank (views run in them).
        val_fraction: Share of shards held out for validation (and ``test``): at least one
            when positive. In memory a shard is one distinct molecule.
        seed: Seed of the hold-out, the epoch orders, the shuffle buffers and the views.
        cache_dir: Cache root of the embedded default (default ``$MOLSSL_CACHE`` or
            ``~/.cache/molssl``).
        prepare_workers: Processes for the first-use preparation (default: one per core for
            large sets).
        shuffle_buffer: Records in each training worker's shuffle buffer (on top of the
            per-epoch shard shuffle); 0 or 1 turns it off.
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
        shuffle_buffer: int = 10_000,
    ) -> None:
        super().__init__()
        if num_molecules < 1:
            raise UserError(f"num_molecules must be >= 1, got {num_molecules}")
        if num_conformers < 1:
            raise UserError(f"num_conformers must be >= 1, got {num_conformers}")
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise UserError(f"num_workers must be >= 0, got {num_workers}")
        if not 0.0 <= val_fraction < 1.0:
            raise UserError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if shuffle_buffer < 0:
            raise UserError(f"shuffle_buffer must be >= 0, got {shuffle_buffer}")
        self.save_hyperparameters()
        self._explicit_views: list[View] = []
        self.shards: ShardSet | None = None
        #: The records when they are in memory (embedded default, ``.npz``); ``None`` when
        #: streamed from disk.
        self.records: Sequence[MoleculeRecord] | None = None
        self.manifest: dict[str, Any] = {}
        self.train_dataset: ShardedStream | None = None
        self.val_dataset: ShardedStream | None = None
        self._resume_position: StreamPosition | None = None

    # -- views ---------------------------------------------------------------------------

    def set_views(self, views: Sequence[View]) -> None:
        """Views to apply when no trainer with a ``pipeline_views()`` module is attached."""
        self._explicit_views = ordered_views(views)
        for dataset in (self.train_dataset, self.val_dataset):
            if dataset is not None:
                dataset.views = list(self._explicit_views)

    @property
    def views(self) -> list[View]:
        """The ordered views the streams apply: the attached module's, else ``set_views``."""
        trainer = self.trainer
        module = getattr(trainer, "lightning_module", None) if trainer is not None else None
        pipeline_views = getattr(module, "pipeline_views", None)
        if callable(pipeline_views):
            return ordered_views(pipeline_views())
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

    def _load(self) -> tuple[ShardSet, PackedRecords | None, dict[str, Any], str]:
        """Shards, the records if in memory, the manifest, and where they came from."""
        root = self.hparams.root
        if root is None:
            prepared = self._embedded()
            origin = "cache" if prepared.from_cache else "prepared into"
            records = prepared.records
            return (
                MemoryShards(records, records.smiles),
                records,
                prepared.manifest,
                f"embedded NCI ({origin} {prepared.directory})",
            )
        if "://" in str(root):  # object storage or HTTP: a prepared directory, streamed
            from molssl.datamodules.shards import load_manifest

            return DiskShards.from_manifest(root), None, load_manifest(root), str(root)
        path = Path(root).expanduser()
        if path.is_dir() and not (path / RECORDS_FILE).is_file():
            from molssl.datamodules.shards import load_manifest

            return DiskShards.from_manifest(path), None, load_manifest(path), str(path)
        if path.is_dir():
            path = path / RECORDS_FILE
        if path.suffix != ".npz" or not path.is_file():
            raise UserError(
                f"PretrainDataModule root {root!r}: expected a `molssl prepare` directory "
                f"(manifest.json and shards), a records .npz written by "
                f"molssl.datamodules.records.save_records, or a directory holding {RECORDS_FILE}"
            )
        records = load_records(path)
        manifest_path = path.parent / "manifest.json"
        manifest: dict[str, Any] = {}
        if manifest_path.is_file():
            manifest = json.loads(manifest_path.read_text())
        return MemoryShards(records, records.smiles), records, manifest, str(path)

    def prepare_data(self) -> None:
        """Prepare the embedded default into the cache (once, on the main process)."""
        if self.hparams.root is None:
            self._embedded()

    def setup(self, stage: str | None = None) -> None:
        """Find the shards, hold out validation shards, and give both streams the views."""
        if self.shards is None:
            shards, records, manifest, origin = self._load()
            if sum(shards.counts) == 0:
                raise UserError(f"no usable molecule in {origin}; see its manifest")
            hp = self.hparams
            # Empty shards (every molecule of a shard failed) hold nothing to split.
            nonempty = np.flatnonzero(np.asarray(shards.counts) > 0)
            try:
                train, val = holdout_shards(len(nonempty), hp.val_fraction, hp.seed)
            except UserError as error:
                raise UserError(f"{origin}: {error}") from None
            train, val = nonempty[train], nonempty[val]
            common = {"seed": hp.seed, "batch_size": hp.batch_size}
            self.train_dataset = ShardedStream(
                shards, train, training=True, shuffle_buffer=hp.shuffle_buffer, **common
            )
            self.val_dataset = ShardedStream(shards, val, training=False, **common)
            self.shards, self.records, self.manifest = shards, records, manifest
            rank_zero_info(self._describe(origin))
        views = self.views
        for dataset in (self.train_dataset, self.val_dataset):
            if dataset is not None:
                dataset.views = list(views)

    def _describe(self, origin: str) -> str:
        manifest = self.manifest
        text = f"molssl pre-training data: {origin}: {self._count('molecules')} molecules"
        if "read" in manifest:
            text += f" of {manifest['read']} read"
        reasons = manifest.get("failures_by_reason") or {}
        if manifest.get("failed"):
            detail = ", ".join(f"{reason} {count}" for reason, count in reasons.items())
            text += f", {manifest['failed']} failed ({detail})"
        shards = "" if isinstance(self.shards, MemoryShards) else " (by shard)"
        return (
            text + f"; split {self._count('train')} train / {self._count('val')} "
            f"validation{shards}, shuffle buffer {self.hparams.shuffle_buffer}"
        )

    def _count(self, what: str) -> int:
        if what == "molecules":
            return int(sum(self.shards.counts)) if self.shards is not None else 0
        dataset = self.train_dataset if what == "train" else self.val_dataset
        return dataset.num_records if dataset is not None else 0

    def stats(self) -> dict[str, Any]:
        """Counts after :meth:`setup`: molecules, split sizes, shards, failures by reason."""
        return {
            "molecules": self._count("molecules"),
            "train": self._count("train"),
            "val": self._count("val"),
            "shards": len(self.shards.counts) if self.shards is not None else 0,
            "val_shards": len(self.val_dataset.shard_ids) if self.val_dataset is not None else 0,
            "read": self.manifest.get("read"),
            "failed": self.manifest.get("failed"),
            "failures_by_reason": dict(self.manifest.get("failures_by_reason") or {}),
        }

    # -- loaders -------------------------------------------------------------------------

    def _distribute(self) -> None:
        # The trainer's strategy knows the rank and world size once it is set up; without a
        # trainer this process is the whole world.
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        for dataset in (self.train_dataset, self.val_dataset):
            if dataset is not None:
                dataset.set_distributed(rank, world)

    def _loader(self, dataset: ShardedStream | None) -> DataLoader:
        if dataset is None:
            raise RuntimeError("PretrainDataModule: call setup() before asking for a loader")
        self._distribute()
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            num_workers=workers,
            # Persistent workers keep their copy of the stream, whose epoch counts up.
            persistent_workers=workers > 0,
            collate_fn=collate_samples,  # Batch.from_data_list's batches, faster
        )

    def train_dataloader(self) -> DataLoader:
        """This rank's training batches; the epoch follows the trainer's (resume included).

        After :meth:`load_state_dict` of a checkpoint saved mid-epoch, the first pass leaves
        out the batches the interrupted run had consumed (see :meth:`state_dict`).
        """
        loader = self._loader(self.train_dataset)
        if self.trainer is not None and self.train_dataset is not None:
            epoch = self.trainer.current_epoch
            self.train_dataset.set_epoch(epoch, self._resume_skip(epoch, len(loader)))
        return loader

    # -- resume --------------------------------------------------------------------------

    def _position(self, epoch: int, batches: int) -> StreamPosition:
        dataset = self.train_dataset
        assert dataset is not None
        hp = self.hparams
        return StreamPosition(
            epoch=epoch,
            batches=batches,
            world_size=dataset.world_size,
            num_workers=hp.num_workers,
            batch_size=hp.batch_size,
            seed=hp.seed,
            shuffle_buffer=hp.shuffle_buffer,
            num_records=dataset.num_records,
        )

    def state_dict(self) -> dict[str, Any]:
        """The training stream's position, saved by Lightning in every checkpoint.

        ``{"stream_position": ...}`` (:class:`~molssl.datamodules.stream_position.StreamPosition`):
        the trainer's epoch, the training batches this rank consumed in it (every rank has
        the same count) and the layout that fixes the epoch's order. Empty outside ``fit``.
        """
        trainer = self.trainer
        fit_loop = getattr(trainer, "fit_loop", None)
        if fit_loop is None or self.train_dataset is None:
            return {}
        consumed = fit_loop.epoch_loop.batch_progress.current.processed
        position = self._position(trainer.current_epoch, consumed)
        return {"stream_position": position.to_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keeps the checkpoint's stream position for the next :meth:`train_dataloader`."""
        saved = state_dict.get("stream_position")
        self._resume_position = None if saved is None else StreamPosition.from_dict(saved)

    def _resume_skip(self, epoch: int, epoch_batches: int) -> int:
        """Batches of ``epoch`` to leave out: the saved position's, when it applies exactly."""
        saved, self._resume_position = self._resume_position, None
        if saved is None or saved.epoch != epoch or not 0 < saved.batches < epoch_batches:
            return 0
        differences = saved.layout_differences(self._position(epoch, saved.batches))
        if differences:
            rank_zero_warn(
                f"PretrainDataModule: the checkpoint stopped epoch {epoch} after {saved.batches} "
                f"batches, but the stream's layout changed ({', '.join(differences)}), so the "
                "molecules already seen cannot be left out: the rest of the epoch is drawn "
                "from the start of the new order (some molecules of this epoch twice, others "
                "not at all)"
            )
            return 0
        rank_zero_info(
            f"PretrainDataModule: resuming epoch {epoch} after {saved.batches} of "
            f"{epoch_batches} batches; the molecules of those batches are left out"
        )
        # Lightning warns that a mid-epoch resume repeats data unless the loader is stateful;
        # this data module continues the epoch itself.
        warnings.filterwarnings(
            "ignore", message="You're resuming from a checkpoint that ended before the epoch"
        )
        return saved.batches

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """Held-out batches with fixed views; none when ``val_fraction`` is 0."""
        if self.val_dataset is not None and self.val_dataset.num_records == 0:
            return []
        return self._loader(self.val_dataset)

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        """Pre-training has no test set: the held-out validation shards, fixed views."""
        return self.val_dataloader()

"""``FinetuneDataModule``: the shared base of every fine-tuning data set.

A subclass reads its files once (:meth:`FinetuneDataModule._load`), returning every usable
molecule as a PyG ``Data`` together with the failures, the number of entries read, the task
names and the task type; it may choose its split (:meth:`FinetuneDataModule._split`, seeded
random 8:1:1 by default). The base keeps the ``Data`` list in memory, checks the split, prints
one summary line, and serves the loaders, :meth:`~FinetuneDataModule.stats` and the
train-split :meth:`~FinetuneDataModule.target_statistics` that the fine-tuning module turns
into buffers.

Per-molecule ``Data`` keys (the contract with the fine-tuning module): ``z``, ``pos`` (one
conformer, Å), ``mol_id`` (0-d long), ``smiles`` (str, ``""`` if unknown), and either ``y``
``(1, T)`` float with NaN for a missing label (``classification`` / ``regression``) or
``energy`` ``(1, 1)`` and ``forces`` ``(N, 3)`` (``energy_forces``).
"""

from __future__ import annotations

import abc
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import Dataset
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.transforms import BaseTransform

from molssl.datamodules.embedded import Failure
from molssl.datamodules.splits import SplitIndices, random_split
from molssl.errors import UserError
from molssl.objectives.base import View

__all__ = [
    "TASK_TYPES",
    "FinetuneDataModule",
    "FinetuneDataset",
    "LoadedDataset",
    "SampleTransform",
    "check_split",
]

TASK_TYPES = ("classification", "regression", "energy_forces")
#: A per-sample transform of the fine-tuning data. A function, or an instance of a
#: :class:`~molssl.objectives.View` or PyG ``BaseTransform`` subclass: naming the two classes
#: lets a config give one by ``class_path`` (``molssl.objectives.RemoveHydrogens``).
SampleTransform = Callable[[Data], Data] | View | BaseTransform
_MAX_LISTED_FAILURES = 10


@dataclass
class LoadedDataset:
    """What a subclass's :meth:`FinetuneDataModule._load` returns.

    Attributes:
        data: One ``Data`` per usable molecule, in source order.
        task_names: Target names, ``T`` of them (``["energy"]`` for ``energy_forces``).
        task_type: One of :data:`TASK_TYPES`.
        read: Entries read from the source, failed ones included (``ok + failed == read``).
        failures: Entries dropped, each with its line, reason code and message.
        origin: Where the data came from (file, cache entry), for the summary line.
        info: Anything else worth reporting in :meth:`FinetuneDataModule.stats` (cache
            directory, units, ...).
    """

    data: list[Data]
    task_names: list[str]
    task_type: str
    read: int
    failures: list[Failure] = field(default_factory=list)
    origin: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task_type not in TASK_TYPES:
            raise ValueError(f"task_type must be one of {TASK_TYPES}, got {self.task_type!r}")
        if not self.task_names:
            raise ValueError("a fine-tuning data set needs at least one task name")
        if len(self.data) + len(self.failures) != self.read:
            raise ValueError(
                f"{len(self.data)} usable + {len(self.failures)} failed entries do not add up "
                f"to the {self.read} read"
            )


class FinetuneDataset(Dataset[Data]):
    """The molecules of one split: positions into a shared list of ``Data``.

    Args:
        data: Every usable molecule.
        indices: Positions in ``data`` forming this split.
        transform: Optional per-sample transform, applied to a copy (the stored ``Data``
            never changes).
    """

    def __init__(
        self,
        data: Sequence[Data],
        indices: Sequence[int] | np.ndarray,
        transform: SampleTransform | None = None,
    ) -> None:
        self.data = data
        self.indices = np.asarray(indices, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Data:
        sample = self.data[int(self.indices[index])]
        if self.transform is None:
            # Collation concatenates into new tensors, so the stored sample is never changed.
            return sample
        return self.transform(sample.clone())


def check_split(split: SplitIndices, n: int, complete: bool = True) -> SplitIndices:
    """Validate a split of ``range(n)``: int64 arrays, in range, disjoint, covering everything.

    ``complete=False`` lets the three parts leave molecules out (a label budget that uses a
    subset of the training split).

    Raises:
        ValueError: Naming what is wrong.
    """
    parts = SplitIndices(*(np.asarray(part, dtype=np.int64).reshape(-1) for part in split))
    joined = np.concatenate(parts)
    if len(joined) and (joined.min() < 0 or joined.max() >= n):
        raise ValueError(
            f"split indices must lie in [0, {n}), got [{joined.min()}, {joined.max()}]"
        )
    if len(np.unique(joined)) != len(joined):
        raise ValueError("split indices overlap: a molecule is in two splits (or twice in one)")
    if complete and len(joined) != n:
        raise ValueError(f"the split covers {len(joined)} of {n} molecules")
    return parts


class FinetuneDataModule(LightningDataModule, abc.ABC):
    """Base of the fine-tuning data modules (MoleculeNet, QM9, MD17/MD22).

    Args:
        batch_size: Molecules per training batch.
        num_workers: Data-loader worker processes.
        seed: Split seed (and seed of the training shuffle order).
        split: Name of the split scheme; the subclass says which names it accepts
            (``"random"`` is understood by the default :meth:`_split`).
        split_fractions: Train, validation and test fractions of the default random split.
        eval_batch_size: Molecules per validation / test batch (default ``batch_size``).
        transform: Optional per-sample transform (e.g.
            :class:`molssl.chem.graph.AddGraphRelations`).

    After :meth:`setup`: :attr:`task_type`, :attr:`task_names`, :attr:`data`,
    :attr:`split_indices`, :meth:`stats`, :meth:`target_statistics` and the loaders.
    """

    #: Split names the subclass accepts, checked in ``__init__``; ``None``: checked later, by
    #: :meth:`_split`.
    supported_splits: tuple[str, ...] | None = None
    #: Whether the split may leave molecules out of all three parts (subsets drawn from a
    #: standard split, e.g. QM9's label budgets); otherwise it must cover every molecule.
    split_may_leave_out: bool = False

    def __init__(
        self,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        split: str = "random",
        split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
        eval_batch_size: int | None = None,
        transform: SampleTransform | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        if eval_batch_size is not None and eval_batch_size < 1:
            raise UserError(f"eval_batch_size must be >= 1, got {eval_batch_size}")
        if num_workers < 0:
            raise UserError(f"num_workers must be >= 0, got {num_workers}")
        fractions = tuple(float(f) for f in split_fractions)
        if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
            raise UserError(
                "split_fractions must be 3 non-negative numbers summing to 1, got "
                f"{split_fractions!r}"
            )
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.split = str(split)
        if self.supported_splits is not None and self.split not in self.supported_splits:
            raise UserError(_unsupported_split(type(self).__name__, split, self.supported_splits))
        self.split_fractions: tuple[float, float, float] = fractions  # type: ignore[assignment]
        self.transform = transform
        self.data: list[Data] = []
        self.loaded: LoadedDataset | None = None
        self.split_indices: SplitIndices | None = None
        self.train_dataset: FinetuneDataset | None = None
        self.val_dataset: FinetuneDataset | None = None
        self.test_dataset: FinetuneDataset | None = None

    # -- what subclasses provide ---------------------------------------------------------

    @abc.abstractmethod
    def _load(self) -> LoadedDataset:
        """Read the source once; every usable molecule as a ``Data``, failures with reasons."""

    def _split(self, n: int) -> SplitIndices:
        """Split positions ``0..n-1`` of :attr:`data` (default: seeded random split).

        Subclasses override it for scaffold splits or fixed-size splits; :attr:`data` is
        already loaded when it is called.
        """
        if self.split != "random":
            raise UserError(
                f"{type(self).__name__}: unknown split {self.split!r}; this data set supports "
                "'random'"
            )
        return random_split(n, self.split_fractions, self.seed)

    def declared_tasks(self) -> tuple[str, list[str]] | None:
        """``(task type, task names)`` known before :meth:`setup` (``None``: not before).

        Read cheaply (a CSV's header, the constructor's arguments), so that the model can take
        its number of tasks from the data before anything is prepared
        (:mod:`molssl.task_link`). Subclasses that know them override this.
        """
        return None

    # -- setup ---------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Load (once), split, and build the three split datasets."""
        if self.loaded is not None:
            return
        loaded = self._load()
        if not loaded.data:
            raise UserError(
                f"{type(self).__name__}: no usable molecule in {loaded.origin or 'the source'} "
                f"({loaded.read} read, {len(loaded.failures)} failed: "
                f"{_describe_reasons(loaded.failures)})"
            )
        self.data = loaded.data
        self.loaded = loaded
        split = check_split(
            self._split(len(self.data)), len(self.data), complete=not self.split_may_leave_out
        )
        empty = [name for name, part in zip(split._fields, split, strict=True) if len(part) == 0]
        if empty:
            # An empty validation split leaves nothing to pick the checkpoint with.
            raise UserError(
                f"{type(self).__name__}: the {self.split} split of {len(self.data)} molecules "
                f"(fractions {self.split_fractions}) leaves {' and '.join(empty)} empty; use "
                "more molecules, other fractions or another split"
            )
        self.split_indices = split
        self.train_dataset = FinetuneDataset(self.data, split.train, self.transform)
        self.val_dataset = FinetuneDataset(self.data, split.val, self.transform)
        self.test_dataset = FinetuneDataset(self.data, split.test, self.transform)
        rank_zero_info(self.describe())

    def _require_setup(self) -> LoadedDataset:
        if self.loaded is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() first")
        return self.loaded

    @property
    def task_type(self) -> str:
        """``"classification"``, ``"regression"`` or ``"energy_forces"`` (after setup)."""
        return self._require_setup().task_type

    @property
    def task_names(self) -> list[str]:
        """Names of the ``T`` targets (after setup)."""
        return list(self._require_setup().task_names)

    @property
    def num_tasks(self) -> int:
        """``T``, the number of targets (after setup)."""
        return len(self._require_setup().task_names)

    # -- reporting -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts after :meth:`setup`.

        Keys: ``read``, ``ok``, ``failed``, ``failures_by_reason`` (counts, most frequent
        first), ``failed_lines_by_reason`` (source line numbers per reason), ``failures``
        (one dict per failure: mol_id, line, smiles, reason, message), ``train``, ``val``,
        ``test`` (split sizes), ``task_type``, ``task_names``, plus the subclass's ``info``.
        """
        loaded = self._require_setup()
        lines: dict[str, list[int]] = {}
        for failure in loaded.failures:
            lines.setdefault(failure.reason, []).append(failure.line)
        return {
            **loaded.info,
            "read": loaded.read,
            "ok": len(loaded.data),
            "failed": len(loaded.failures),
            "failures_by_reason": dict(Counter(f.reason for f in loaded.failures).most_common()),
            "failed_lines_by_reason": lines,
            "failures": [asdict(f) for f in loaded.failures],
            "train": len(self.train_dataset or ()),
            "val": len(self.val_dataset or ()),
            "test": len(self.test_dataset or ()),
            "task_type": loaded.task_type,
            "task_names": list(loaded.task_names),
        }

    def describe(self) -> str:
        """The one-line summary printed at setup (counts, failures with lines, split sizes)."""
        loaded = self._require_setup()
        text = (
            f"molssl {type(self).__name__}: {loaded.origin}: {len(loaded.data)} of "
            f"{loaded.read} molecules usable"
        )
        if loaded.failures:
            text += f", {len(loaded.failures)} dropped with their labels ("
            text += _describe_reasons(loaded.failures) + ")"
        split = self.split_indices
        if split is not None:
            text += (
                f"; {self.split} split {len(split.train)} train / {len(split.val)} val / "
                f"{len(split.test)} test (seed {self.seed})"
            )
        return text + f"; {loaded.task_type}, {len(loaded.task_names)} task(s)"

    # -- targets -------------------------------------------------------------------------

    def train_targets(self) -> torch.Tensor:
        """``(n_train, T)`` float64 labels of the training split, NaN where missing."""
        self._require_setup()
        assert self.split_indices is not None
        rows = [self.data[int(i)].y.reshape(-1) for i in self.split_indices.train]
        if not rows:
            return torch.empty(0, self.num_tasks, dtype=torch.float64)
        return torch.stack(rows).to(torch.float64)

    def target_statistics(self) -> dict[str, torch.Tensor]:
        """Target statistics over the TRAIN split only (float32 tensors).

        * ``regression``: ``"mean"`` and ``"std"`` ``(T,)`` over the labelled molecules of
          each task (NaN-aware; population std). A task with no train label gets mean 0;
          a std that is 0 or undefined (fewer than two labels) becomes 1, so dividing by
          it is always safe. ``"count"`` ``(T,)``: labelled train molecules per task.
        * ``classification``: ``"positive_fraction"`` ``(T,)`` (share of labels equal to 1
          among the labelled train molecules; NaN for a task with no train label) and
          ``"count"``.
        * ``energy_forces``: ``"mean"`` ``(1,)``, the mean energy per atom, and ``"std"``
          ``(1,)``, the std of the energy per atom (1 if undefined), over the train frames;
          ``"force_rms"`` ``(1,)``: root mean square force component.
        """
        loaded = self._require_setup()
        if loaded.task_type == "energy_forces":
            return self._energy_statistics()
        targets = self.train_targets()
        labelled = ~torch.isnan(targets)
        count = labelled.sum(0).to(torch.float64)
        filled = torch.where(labelled, targets, torch.zeros_like(targets))
        safe_count = count.clamp(min=1)
        mean = filled.sum(0) / safe_count
        if loaded.task_type == "classification":
            positive = torch.where(count > 0, mean, torch.full_like(mean, float("nan")))
            return {"positive_fraction": positive.float(), "count": count.float()}
        centred = torch.where(labelled, targets - mean, torch.zeros_like(targets))
        std = (centred.pow(2).sum(0) / safe_count).sqrt()
        std = torch.where((count > 1) & (std > 0), std, torch.ones_like(std))
        return {"mean": mean.float(), "std": std.float(), "count": count.float()}

    def _energy_statistics(self) -> dict[str, torch.Tensor]:
        assert self.split_indices is not None
        train = [self.data[int(i)] for i in self.split_indices.train]
        per_atom = torch.tensor(
            [float(d.energy.reshape(-1)[0]) / int(d.num_nodes) for d in train], dtype=torch.float64
        )
        forces = torch.cat([d.forces.reshape(-1).to(torch.float64) for d in train])
        mean = per_atom.mean() if len(per_atom) else torch.tensor(0.0, dtype=torch.float64)
        std = per_atom.std(unbiased=False) if len(per_atom) > 1 else torch.tensor(1.0)
        std = std if float(std) > 0 else torch.tensor(1.0)
        force_rms = forces.pow(2).mean().sqrt() if len(forces) else torch.tensor(1.0)
        return {
            "mean": mean.reshape(1).float(),
            "std": std.reshape(1).float(),
            "force_rms": force_rms.reshape(1).float(),
        }

    # -- loaders -------------------------------------------------------------------------

    def _loader(self, dataset: FinetuneDataset | None, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for a loader")
        generator = torch.Generator().manual_seed(self.seed) if train else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            generator=generator,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches (order seeded by ``seed``)."""
        return self._loader(self.train_dataset, train=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in split order."""
        return self._loader(self.val_dataset, train=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in split order."""
        return self._loader(self.test_dataset, train=False)


def _unsupported_split(name: str, split: str, supported: tuple[str, ...]) -> str:
    if supported == ("random",):
        return f"{name} supports split='random' only, got {split!r}"
    return f"unknown split {split!r}; choose one of {supported}"


def _describe_reasons(failures: Sequence[Failure]) -> str:
    lines: dict[str, list[int]] = {}
    for failure in failures:
        lines.setdefault(failure.reason, []).append(failure.line)
    parts = []
    for reason, numbers in sorted(lines.items(), key=lambda item: -len(item[1])):
        shown = ", ".join(str(n) for n in numbers[:_MAX_LISTED_FAILURES])
        more = f", +{len(numbers) - _MAX_LISTED_FAILURES} more" if len(numbers) > 10 else ""
        parts.append(f"{reason} {len(numbers)}: line {shown}{more}")
    return "; ".join(parts) or "none"

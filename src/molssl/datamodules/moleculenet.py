"""``MoleculeNetDataModule``: a MoleculeNet CSV → RDKit conformers (cached) → labelled batches.

Reading: the CSV's SMILES column and label columns (a preset of a standard file, see
:mod:`~molssl.datamodules.moleculenet_presets`, or free-form ``smiles_column`` /
``target_columns`` / ``task_type``); a blank cell is a missing label (NaN in ``y``). Data
row ``i`` (0-based, blank lines included) is molecule ``mol_id = i``.

Preparation (once): every SMILES is parsed, given hydrogens and one seeded ETKDGv3 (+ MMFF94)
conformer by :func:`~molssl.datamodules.embedded.prepare_records` (per-molecule seed
:func:`~molssl.datamodules.embedded.molecule_seed` ``(conformer_seed, mol_id)``, so the result
does not depend on ``prepare_workers``). Molecules that fail (invalid SMILES, unsupported
element, failed embedding, empty line, ...) are dropped together with their labels; their
reasons and CSV line numbers go into the cache manifest, :meth:`stats` and the summary line
printed at setup. The prepared records land in ``cache_dir`` (default ``$MOLSSL_CACHE`` or
``~/.cache/molssl``) under ``moleculenet/<file>-<key>``, the key hashing the file's
content, the columns and task type, the conformer settings, the heavy-atom limit, the record
format, RDKit's version and the chemistry code; an entry is written atomically.

Splits of the usable molecules (``split_fractions``, 8:1:1 by default):

* ``"scaffold"`` (default): the deterministic MoleculeNet / chemprop scaffold split of
  :func:`~molssl.datamodules.splits.scaffold_split`: Bemis-Murcko scaffold sets, largest
  first (ties: the set seen first in the file first), filling train, then validation, then
  test. It is the SAME for every ``seed``; the seed only changes the training batch order
  (and, through ``seed_everything``, the model's initialisation), which is how "scaffold
  split, 3 seeds" is usually reported.
* ``"seeded_scaffold"``: largest first as above, but scaffold sets of equal size are ordered
  by a permutation drawn from ``seed``, so different seeds give different (still
  largest-first) splits. Only ties move, so the splits stay close: on FreeSolv (642
  molecules) the test sets of seeds 0, 1 and 2 share 57 to 59 of their 65 molecules.
  (DeepChem's ``ScaffoldSplitter`` breaks such ties the other way, last-seen first; this is
  one reason published scaffold numbers differ.)
* ``"balanced_scaffold"``: chemprop's balanced scaffold split, seeded: scaffold sets in a
  seeded random order (big sets first), for splits that really differ between seeds.
* ``"random"``: seeded uniform random split.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import rdkit
import torch
from torch_geometric.data import Data

from molssl.chem.conformers import ConformerOptions
from molssl.datamodules.embedded import (
    Failure,
    _file_sha256,
    _load_entry,
    _write_entry,
    chemistry_code_sha256,
    default_cache_dir,
    prepare_records,
)
from molssl.datamodules.finetune_base import FinetuneDataModule, LoadedDataset, SampleTransform
from molssl.datamodules.moleculenet_csv import LabelTable, read_label_table
from molssl.datamodules.moleculenet_presets import get_preset
from molssl.datamodules.records import (
    RECORD_FORMAT_VERSION,
    MoleculeRecord,
    PackedRecords,
    pack_records,
)
from molssl.datamodules.splits import (
    SplitIndices,
    random_split,
    scaffold_sets,
    scaffold_split,
)
from molssl.errors import UserError
from molssl.modules.pretrain import _hparams_come_from_config

__all__ = ["SPLITS", "MoleculeNetDataModule", "seeded_scaffold_split"]

SPLITS = ("scaffold", "seeded_scaffold", "balanced_scaffold", "random")
_TASK_TYPES = ("classification", "regression")


def seeded_scaffold_split(
    smiles: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> SplitIndices:
    """Largest-first scaffold split whose equal-size scaffold sets are ordered by ``seed``.

    Same filling rule as :func:`~molssl.datamodules.splits.scaffold_split`: a set goes to
    train if it still fits in ``fractions[0] * n``, else to validation if it fits in
    ``fractions[1] * n``, else to test.
    """
    n = len(smiles)
    sets = list(scaffold_sets(smiles).values())
    shuffled = [sets[i] for i in np.random.default_rng(seed).permutation(len(sets))]
    ordered = sorted(shuffled, key=lambda members: -len(members))  # stable: ties stay shuffled
    limits = (fractions[0] * n, fractions[1] * n)
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for members in ordered:
        if len(parts[0]) + len(members) <= limits[0]:
            parts[0].extend(members)
        elif len(parts[1]) + len(members) <= limits[1]:
            parts[1].extend(members)
        else:
            parts[2].extend(members)
    return SplitIndices(*(np.array(sorted(part), dtype=np.int64) for part in parts))


def _record_data(record: MoleculeRecord, labels: np.ndarray) -> Data:
    def tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        # A copy, so the Data list does not keep the packed arrays alive.
        return torch.tensor(np.ascontiguousarray(array), dtype=dtype)

    return Data(
        z=tensor(record.z, torch.long),
        x=tensor(record.x, torch.long),
        edge_index=tensor(record.edge_index, torch.long),
        edge_attr=tensor(record.edge_attr, torch.long),
        pos=tensor(record.conformers[0], torch.float32),
        y=tensor(labels, torch.float32).reshape(1, -1),
        smiles=record.smiles,
        mol_id=torch.tensor(record.mol_id, dtype=torch.long),
        num_nodes=record.num_atoms,
    )


class MoleculeNetDataModule(FinetuneDataModule):
    """A MoleculeNet CSV as a fine-tuning data module (see the module docstring).

    Args:
        path: The ``.csv`` or ``.csv.gz`` file.
        preset: A standard file's name (``bbbp``, ``tox21``, ``toxcast``, ``sider``,
            ``clintox``, ``hiv``, ``muv``, ``bace``, ``bace_regression``, ``esol``,
            ``freesolv``, ``lipophilicity``) giving the columns and task type.
        smiles_column: SMILES column (overrides the preset; default ``"smiles"``).
        target_columns: Label columns in task order (overrides the preset; ``None`` without
            a preset means every other column).
        task_type: ``"classification"`` (labels 0/1) or ``"regression"``; required without
            a preset.
        split: One of :data:`SPLITS`.
        split_fractions: Train, validation, test fractions.
        seed: Split seed (see the module docstring for what it changes) and training order.
        batch_size: Molecules per training batch.
        eval_batch_size: Molecules per validation / test batch (default ``batch_size``).
        num_workers: Data-loader worker processes.
        cache_dir: Cache root (default ``$MOLSSL_CACHE`` or ``~/.cache/molssl``).
        prepare_workers: Processes for the one-time preparation (default: one per core for
            files of more than a few hundred molecules).
        conformer_seed: Seed of the RDKit conformers.
        optimize_conformers: Relax conformers with MMFF94.
        max_heavy_atoms: Larger molecules are dropped as ``too_many_atoms``; ``None``: no limit.
        progress: Show a progress bar while preparing.
        transform: Optional per-sample transform.
    """

    supported_splits = SPLITS

    def __init__(
        self,
        path: str,
        preset: str | None = None,
        smiles_column: str | None = None,
        target_columns: Sequence[str] | None = None,
        task_type: str | None = None,
        split: str = "scaffold",
        split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        cache_dir: str | None = None,
        prepare_workers: int | None = None,
        conformer_seed: int = 0,
        optimize_conformers: bool = True,
        max_heavy_atoms: int | None = 150,
        progress: bool = True,
        transform: SampleTransform | None = None,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            split=split,
            split_fractions=split_fractions,
            eval_batch_size=eval_batch_size,
            transform=transform,
        )
        # From a config, the transform is its class_path entry, which `molssl test --ckpt`
        # needs when the run's config.yaml is gone; a transform object built in Python is not
        # a hyper-parameter (it would be pickled into the checkpoint).
        self.save_hyperparameters(ignore=[] if _hparams_come_from_config() else ["transform"])
        chosen = get_preset(preset) if preset is not None else None
        self.preset = chosen.name if chosen is not None else None
        self.smiles_column = smiles_column or (chosen.smiles_column if chosen else "smiles")
        if target_columns is not None:
            if isinstance(target_columns, str):
                raise UserError("target_columns must be a list of column names, not a string")
            self.target_columns: list[str] | None = list(target_columns)
        else:
            columns = chosen.target_columns if chosen else None
            self.target_columns = list(columns) if columns is not None else None
        kind = task_type or (chosen.task_type if chosen else None)
        if kind not in _TASK_TYPES:
            raise UserError(
                f"task_type must be one of {_TASK_TYPES} (or give a preset), got {task_type!r}"
            )
        self.kind: str = kind
        self.path = Path(path).expanduser()
        self.cache_root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.prepare_workers = prepare_workers
        self.options = ConformerOptions(
            num_conformers=1, seed=conformer_seed, optimize=optimize_conformers
        )
        self.max_heavy_atoms = max_heavy_atoms
        self.progress = progress
        self._prepared: tuple[LabelTable, PackedRecords, dict[str, Any], Path, bool] | None = None

    # -- preparation and cache -----------------------------------------------------------

    def cache_fields(self) -> dict[str, Any]:
        """Everything the prepared molecules depend on; its hash names the cache entry."""
        return {
            "source_sha256": _file_sha256(self.path),
            "preset": self.preset,
            "smiles_column": self.smiles_column,
            "target_columns": self.target_columns,
            "task_type": self.kind,
            "options": asdict(self.options),
            "max_heavy_atoms": self.max_heavy_atoms,
            "record_format_version": RECORD_FORMAT_VERSION,
            "rdkit_version": rdkit.__version__,
            "chemistry_code_sha256": chemistry_code_sha256(),
        }

    def _prepare(self) -> tuple[LabelTable, PackedRecords, dict[str, Any], Path, bool]:
        if self._prepared is not None:
            return self._prepared
        table = read_label_table(
            self.path,
            self.smiles_column,
            self.target_columns,
            classification=self.kind == "classification",
        )
        fields = self.cache_fields()
        key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
        stem = self.path.name.split(".")[0] or "data"
        directory = self.cache_root / "moleculenet" / f"{stem}-{key[:16]}"
        cached = _load_entry(directory, key)
        if cached is not None and cached.manifest.get("read") == table.read:
            self._prepared = (table, cached.records, cached.manifest, directory, True)
            return self._prepared
        workers = self.prepare_workers
        if workers is None:
            workers = max(1, min(os.cpu_count() or 1, table.read // 250))
        start = time.perf_counter()
        preparation = prepare_records(
            table.smiles, self.options, workers, self.max_heavy_atoms, progress=self.progress
        )
        # prepare_records numbers lines of a plain list; give each failure its CSV line.
        failures = [replace(f, line=table.lines[f.mol_id]) for f in preparation.failures]
        manifest = {
            "cache_key": key,
            "source": str(self.path.resolve()),
            **fields,
            "task_names": table.task_names,
            "read": table.read,
            "ok": len(preparation.records),
            "failed": len(failures),
            "failures_by_reason": preparation.failures_by_reason(),
            "failures": [asdict(f) for f in failures],
            "workers": workers,
            "seconds": round(time.perf_counter() - start, 3),
        }
        packed = pack_records(preparation.records)
        _write_entry(directory, packed, manifest)
        self._prepared = (table, packed, manifest, directory, False)
        return self._prepared

    def declared_tasks(self) -> tuple[str, list[str]]:
        """The task type and the label columns (every non-SMILES column when none are named).

        Reads the CSV (not its molecules), so a missing column is reported now.
        """
        if self.target_columns is not None:
            return self.kind, list(self.target_columns)
        table = read_label_table(
            self.path,
            self.smiles_column,
            self.target_columns,
            classification=self.kind == "classification",
        )
        return self.kind, list(table.task_names)

    def prepare_data(self) -> None:
        """Prepare the conformers into the cache (Lightning calls this on one process)."""
        self._prepare()

    # -- FinetuneDataModule --------------------------------------------------------------

    def _load(self) -> LoadedDataset:
        table, records, manifest, directory, from_cache = self._prepare()
        data = [_record_data(record, table.labels[record.mol_id]) for record in records]
        if len(records):
            kept = table.labels[np.asarray([record.mol_id for record in records])]
            for name, column in zip(table.task_names, kept.T, strict=True):
                if np.isnan(column).all():
                    raise UserError(
                        f"{self.path}, column {name!r}: none of the {len(records)} usable "
                        "molecules has a label (the rows that have one failed); a task without "
                        "labels can be neither trained nor evaluated"
                    )
        failures = [Failure(**failure) for failure in manifest["failures"]]
        origin = f"{self.path} ({'cache' if from_cache else 'prepared into'} {directory})"
        return LoadedDataset(
            data=data,
            task_names=list(table.task_names),
            task_type=self.kind,
            read=table.read,
            failures=failures,
            origin=origin,
            info={
                "source": str(self.path),
                "preset": self.preset,
                "cache_entry": str(directory),
                "from_cache": from_cache,
            },
        )

    def _split(self, n: int) -> SplitIndices:
        fractions = self.split_fractions
        if self.split == "random":
            return random_split(n, fractions, self.seed)
        smiles = [sample.smiles for sample in self.data]
        if self.split == "seeded_scaffold":
            return seeded_scaffold_split(smiles, fractions, self.seed)
        balanced = self.split == "balanced_scaffold"
        return scaffold_split(smiles, fractions, balanced=balanced, seed=self.seed)

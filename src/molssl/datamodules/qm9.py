"""QM9 fine-tuning data: the raw gdb9 files or qm9pack's CSVs → ``Data`` with the 12 targets.

Two layouts (``layout="auto"`` tells them apart by the files in ``root``):

* ``raw`` (see :mod:`molssl.datamodules.qm9_raw`): ``root/gdb9.sdf``, ``root/gdb9.sdf.csv``,
  ``root/uncharacterized.txt``, or each path given on its own; bonds from the SDF.
* ``qm9pack`` (see :mod:`molssl.datamodules.sources.qm9pack`): ``root/qm9_part{1,2,3}.csv``
  as the ``qm9pack`` package ships them, DFT coordinates with a SMILES per row; the graph is
  the SMILES's, placed on the coordinates only where the two agree (else a counted failure).
  ``root="qm9pack"`` reads the installed package's own files (``pip install qm9pack``).

* Targets (``targets``, default all 12, in the paper's order): mu (D), alpha (a0³), homo,
  lumo, gap (meV), r2 (a0²), zpve, U0, U, H, G (meV), Cv (cal/(mol K)). Energies are
  converted from Hartree with 1 Ha = 27,211.386 meV. ``y`` is float32 ``(1, T)``: at the
  magnitude of U0 (about 1.1e7 meV) float32 resolves 1 meV; the statistics are computed in
  float64.
* The 3,054 uncharacterized molecules are excluded (failure reason ``uncharacterized``);
  molecules RDKit cannot sanitise are kept with relaxed sanitisation by default (see
  :mod:`molssl.datamodules.qm9_parse`), counted under ``relaxed`` in :meth:`stats`.
* Split: seeded (``split_seed``, default ``seed``) random 110,000 / 10,000 / rest on the full
  set (130,000 molecules or more, so the paper's sizes hold whether or not a few hundred
  unsanitisable molecules are dropped); on a smaller file the same proportions
  (110/130.831 and 10/130.831, at least one validation and one test molecule).
* Label budgets: ``train_size`` (the labelled molecules used, a count or a fraction of the
  training split) is drawn from that training split by ``seed``; ``val_size`` / ``test_size``
  draw from the validation / test split by ``split_seed``, so every seed and every
  pre-training arm of an experiment is selected and scored on the same molecules. A count is
  an ``int``, a fraction a ``float`` in [0, 1], also from the command line
  (:data:`~molssl.datamodules.sized_splits.SplitSize`).
* ``atomref=True``: per-element reference values fitted by least squares on the TRAIN split
  for the extensive energies (U0, U, H, G; zero for the other targets), exposed as
  ``target_statistics()["atomref"]`` ``(max_z + 1, T)`` indexed by atomic number; ``"mean"``
  and ``"std"`` are then those of the residual ``y - sum_i atomref[z_i]``, which is what a head
  computing ``sum_i (std * s_i + atomref[z_i]) + mean`` needs.
* Labels join the SDF by ``gdb_k`` name. An SDF molecule without a label row is a recorded
  failure ``missing_label`` (so ``ok + failed == read``); a label row whose molecule is not in
  the SDF is no entry read, so not a failure, but it is counted. :meth:`stats` has both:
  ``molecules_without_label`` / ``label_rows_without_molecule`` with up to five
  ``..._examples`` (``{"id": "gdb_k", "line": n}``: SDF line / CSV line), and the setup
  summary line names them.
* The parse is cached (npz + JSON, :mod:`molssl.datamodules.qm9_cache`).

Each ``Data``: ``z``, ``x``, ``edge_index``, ``edge_attr`` (:mod:`molssl.chem.features`),
``pos`` (Å, DFT geometry), ``y`` (1, T), ``mol_id`` (``k - 1`` for ``gdb_k``), ``smiles``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
from torch_geometric.data import Data

from molssl.datamodules.finetune_base import FinetuneDataModule, LoadedDataset, SampleTransform
from molssl.datamodules.qm9_cache import load_or_parse_qm9, load_or_parse_qm9pack
from molssl.datamodules.qm9_parse import EXAMPLES_KEPT, QM9Parsed
from molssl.datamodules.qm9_raw import QM9_TARGET_UNITS, QM9_TARGETS, resolve_targets
from molssl.datamodules.sized_splits import SplitSize, resolve_size, sized_random_split
from molssl.datamodules.sources.packages import PACKAGE_INPUTS, package_input_files
from molssl.datamodules.splits import SplitIndices
from molssl.errors import UserError

__all__ = [
    "ATOMREF_TARGETS",
    "QM9_FULL_SIZE",
    "QM9_SPLIT_SIZES",
    "PackedQM9",
    "QM9DataModule",
    "element_counts",
    "fit_atomref",
]

#: Characterized molecules of the full QM9 (133,885 - 3,054).
QM9_FULL_SIZE = 130_831
#: The paper's train and validation sizes (the test split is the rest).
QM9_SPLIT_SIZES = (110_000, 10_000)
#: Targets that get a fitted per-element reference with ``atomref=True``.
ATOMREF_TARGETS = ("U0", "U", "H", "G")
# At or above this many molecules the paper's absolute sizes are used.
_FULL_SET_THRESHOLD = 130_000


class PackedQM9(Sequence[Data]):
    """The molecules of a parsed QM9 as a sequence of ``Data`` built on access.

    Args:
        arrays: The arrays of :class:`~molssl.datamodules.qm9_parse.QM9Parsed`.
        columns: Columns of ``arrays["y"]`` that become ``y``, in this order.
    """

    def __init__(self, arrays: dict[str, np.ndarray], columns: Sequence[int]) -> None:
        self.arrays = arrays
        self.columns = np.asarray(columns, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.arrays["mol_id"])

    @overload
    def __getitem__(self, index: int) -> Data: ...

    @overload
    def __getitem__(self, index: slice) -> list[Data]: ...

    def __getitem__(self, index: int | slice) -> Data | list[Data]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(f"molecule {index} out of range for {len(self)} molecules")
        i = int(index) % len(self)
        a = self.arrays
        a0, a1 = a["atom_ptr"][i], a["atom_ptr"][i + 1]
        e0, e1 = a["edge_ptr"][i], a["edge_ptr"][i + 1]
        return Data(
            z=torch.from_numpy(a["z"][a0:a1].astype(np.int64)),
            x=torch.from_numpy(a["x"][a0:a1].astype(np.int64)),
            edge_index=torch.from_numpy(a["edge_index"][:, e0:e1].astype(np.int64)),
            edge_attr=torch.from_numpy(a["edge_attr"][e0:e1].astype(np.int64)),
            pos=torch.from_numpy(a["pos"][a0:a1].copy()),
            y=torch.from_numpy(a["y"][i, self.columns].astype(np.float32)).reshape(1, -1),
            mol_id=torch.tensor(int(a["mol_id"][i]), dtype=torch.long),
            smiles=str(a["smiles"][i]),
            num_nodes=int(a1 - a0),
        )

    def targets(self, rows: np.ndarray | None = None) -> np.ndarray:
        """``(M, T)`` float64 selected targets of ``rows`` (all molecules when ``None``)."""
        y = self.arrays["y"][:, self.columns]
        return y if rows is None else y[np.asarray(rows, dtype=np.int64)]


def element_counts(z: np.ndarray, atom_ptr: np.ndarray, num_z: int) -> np.ndarray:
    """``(M, num_z)`` float64: how many atoms of each atomic number every molecule has."""
    molecule = np.repeat(np.arange(len(atom_ptr) - 1), np.diff(atom_ptr))
    counts = np.zeros((len(atom_ptr) - 1, num_z), dtype=np.float64)
    np.add.at(counts, (molecule, z.astype(np.int64)), 1.0)
    return counts


def fit_atomref(counts: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares per-element values ``ref`` with ``y ≈ counts @ ref`` (no intercept).

    Args:
        counts: ``(M, Z)`` element counts of the fitting molecules.
        y: ``(M, T)`` targets.

    Returns:
        ``(Z, T)`` float64; rows of elements absent from ``counts`` are 0.
    """
    present = counts.sum(0) > 0
    ref = np.zeros((counts.shape[1], y.shape[1]), dtype=np.float64)
    if present.any() and len(y):
        solution, *_ = np.linalg.lstsq(counts[:, present], y, rcond=None)
        ref[present] = solution
    return ref


class QM9DataModule(FinetuneDataModule):
    """QM9 from its raw files or qm9pack's CSVs (see the module docstring).

    Args:
        root: Directory holding ``gdb9.sdf``, ``gdb9.sdf.csv`` and ``uncharacterized.txt``
            (raw layout) or ``qm9_part{1,2,3}.csv`` (qm9pack layout); ``"qm9pack"``: the
            installed qm9pack package's files.
        layout: ``"auto"`` (by the files in ``root``), ``"raw"`` or ``"qm9pack"``.
        sdf_path, labels_path, uncharacterized_path: Override one file's path (raw layout).
        exclude_uncharacterized: Drop the molecules listed in ``uncharacterized.txt`` (raw
            layout; qm9pack has none of them).
        targets: Paper names of the targets (default: all 12), e.g. ``["homo"]``.
        on_sanitize_error: ``"relax"`` (keep, default) or ``"drop"`` (raw layout).
        atomref: Fit per-element reference energies on the train split.
        train_size: Labelled molecules used, drawn from the training split by ``seed``
            (count, or fraction of the training split; default all of it).
        val_size, test_size: Molecules used from the validation / test split, drawn by
            ``split_seed`` (default all).
        split_seed: Seed of the 110k / 10k / rest split and of the validation and test
            subsets (default ``seed``); fix it to compare seeds on the same molecules.
        cache_dir: Cache root (default ``$MOLSSL_CACHE`` or ``~/.cache/molssl``).
        use_cache: Read/write the parse cache.
        prepare_workers: Processes for the first parse.
        batch_size, num_workers, seed, split, eval_batch_size, transform: See
            :class:`~molssl.datamodules.finetune_base.FinetuneDataModule` (split: ``"random"``).
    """

    supported_splits = ("random",)

    def __init__(
        self,
        root: str | os.PathLike[str] | None = "data/qm9",
        layout: str = "auto",
        sdf_path: str | os.PathLike[str] | None = None,
        labels_path: str | os.PathLike[str] | None = None,
        uncharacterized_path: str | os.PathLike[str] | None = None,
        exclude_uncharacterized: bool = True,
        targets: Sequence[str] | None = None,
        on_sanitize_error: str = "relax",
        atomref: bool = False,
        train_size: SplitSize | None = None,
        val_size: SplitSize | None = None,
        test_size: SplitSize | None = None,
        split_seed: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        use_cache: bool = True,
        prepare_workers: int = 1,
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
        if on_sanitize_error not in ("relax", "drop"):
            raise UserError(
                f"on_sanitize_error must be 'relax' or 'drop', got {on_sanitize_error!r}"
            )
        if layout not in _LAYOUTS:
            raise UserError(f"layout must be one of {_LAYOUTS}, got {layout!r}")
        self.layout = _detect_layout(root, layout, sdf_path)
        self.qm9pack_files = _qm9pack_files(root) if self.layout == "qm9pack" else []
        base = Path(root) if root is not None and self.layout == "raw" else None

        def resolve(given: str | os.PathLike[str] | None, name: str) -> Path:
            if given is not None:
                return Path(given)
            if base is None:
                raise UserError(f"QM9DataModule: pass root or the path of {name}")
            return base / name

        raw = self.layout == "raw"
        self.sdf_path = resolve(sdf_path, "gdb9.sdf") if raw else None
        self.labels_path = resolve(labels_path, "gdb9.sdf.csv") if raw else None
        self.uncharacterized_path = (
            resolve(uncharacterized_path, "uncharacterized.txt")
            if exclude_uncharacterized and raw
            else None
        )
        self.targets = resolve_targets(targets)
        self.on_sanitize_error = on_sanitize_error
        self.atomref = bool(atomref)
        for name, size in (("train", train_size), ("val", val_size), ("test", test_size)):
            if size is not None:
                resolve_size(size, 1 << 62, f"{name}_size")  # type and sign, before any parse
        self.train_size = train_size
        self.val_size = val_size
        self.test_size = test_size
        self.split_seed = None if split_seed is None else int(split_seed)
        self.split_may_leave_out = any(
            size is not None for size in (train_size, val_size, test_size)
        )
        self.cache_dir = cache_dir
        self.use_cache = bool(use_cache)
        self.prepare_workers = int(prepare_workers)
        self.packed: PackedQM9 | None = None

    def declared_tasks(self) -> tuple[str, list[str]]:
        """Regression on the chosen targets."""
        return "regression", list(self.targets)

    def _parse(self) -> tuple[QM9Parsed, Path | None, bool]:
        if self.layout == "qm9pack":
            return load_or_parse_qm9pack(
                self.qm9pack_files,
                workers=self.prepare_workers,
                cache_dir=self.cache_dir,
                use_cache=self.use_cache,
            )
        assert self.sdf_path is not None and self.labels_path is not None
        return load_or_parse_qm9(
            self.sdf_path,
            self.labels_path,
            self.uncharacterized_path,
            self.on_sanitize_error,
            workers=self.prepare_workers,
            cache_dir=self.cache_dir,
            use_cache=self.use_cache,
        )

    def _load(self) -> LoadedDataset:
        parsed, directory, from_cache = self._parse()
        self.packed = PackedQM9(parsed.arrays, [QM9_TARGETS.index(t) for t in self.targets])
        reasons = Counter(f.reason for f in parsed.relaxed)
        unlabelled = [f for f in parsed.failures if f.reason == "missing_label"]
        info: dict[str, Any] = {
            "targets": list(self.targets),
            "units": {name: QM9_TARGET_UNITS[name] for name in self.targets},
            "relaxed": len(parsed.relaxed),
            "relaxed_by_reason": dict(reasons.most_common()),
            "relaxed_molecules": [asdict(f) for f in parsed.relaxed],
            "layout": self.layout,
            "on_sanitize_error": self.on_sanitize_error,
            "cache": None if directory is None else str(directory),
            "from_cache": from_cache,
            "molecules_without_label": len(unlabelled),
            "molecules_without_label_examples": [
                {"id": f"gdb_{f.mol_id + 1}", "line": f.line} for f in unlabelled[:EXAMPLES_KEPT]
            ],
            "label_rows_without_molecule": parsed.label_rows_without_molecule,
            "label_rows_without_molecule_examples": list(
                parsed.label_rows_without_molecule_examples
            ),
        }
        return LoadedDataset(
            data=self.packed,  # type: ignore[arg-type]  # a lazy Sequence[Data]
            task_names=list(self.targets),
            task_type="regression",
            read=parsed.read,
            failures=parsed.failures,
            origin=str(self.sdf_path or ", ".join(map(str, self.qm9pack_files))),
            info=info,
        )

    def describe(self) -> str:
        """The base summary line plus the label join in both directions (when not clean)."""
        info = self._require_setup().info
        text = super().describe()

        def examples(key: str, where: str) -> str:
            shown = ", ".join(f"{e['id']} ({where} line {e['line']})" for e in info[key])
            return shown + (", ..." if info[key.removesuffix("_examples")] > len(info[key]) else "")

        if info["molecules_without_label"]:
            text += (
                f"; {info['molecules_without_label']} SDF molecule(s) without a label row, "
                f"dropped as missing_label: {examples('molecules_without_label_examples', 'SDF')}"
            )
        if info["label_rows_without_molecule"]:
            text += (
                f"; {info['label_rows_without_molecule']} label row(s) without an SDF molecule, "
                "unused: " + examples("label_rows_without_molecule_examples", "CSV")
            )
        return text

    def _split(self, n: int) -> SplitIndices:
        split_seed = self.seed if self.split_seed is None else self.split_seed
        split = sized_random_split(n, *self._default_sizes(n), seed=split_seed)
        return SplitIndices(
            _subset(split.train, self.train_size, self.seed, "train_size"),
            _subset(split.val, self.val_size, split_seed, "val_size"),
            _subset(split.test, self.test_size, split_seed, "test_size"),
        )

    @staticmethod
    def _default_sizes(n: int) -> tuple[int, int]:
        if n >= _FULL_SET_THRESHOLD:
            return QM9_SPLIT_SIZES
        if n < 3:
            raise UserError(f"QM9DataModule: {n} molecule(s) cannot make three splits")
        n_val = max(1, n * QM9_SPLIT_SIZES[1] // QM9_FULL_SIZE)
        n_train = min(n * QM9_SPLIT_SIZES[0] // QM9_FULL_SIZE, n - n_val - 1)
        return n_train, n_val

    def train_targets(self) -> torch.Tensor:
        """``(n_train, T)`` float64 train labels, read from the packed arrays."""
        self._require_setup()
        assert self.packed is not None and self.split_indices is not None
        return torch.from_numpy(self.packed.targets(self.split_indices.train).copy())

    def target_statistics(self) -> dict[str, torch.Tensor]:
        """Train-split ``"mean"``, ``"std"``, ``"count"`` ``(T,)`` (float32), in the targets'
        units; with ``atomref=True`` also ``"atomref"`` ``(max_z + 1, T)``, and mean/std are
        those of the residual after the reference (see the module docstring)."""
        statistics = super().target_statistics()
        if not self.atomref:
            return statistics
        assert self.packed is not None and self.split_indices is not None
        arrays = self.packed.arrays
        counts = element_counts(arrays["z"], arrays["atom_ptr"], int(arrays["z"].max()) + 1)
        train = self.split_indices.train
        y = self.packed.targets(train)
        columns = [t for t, name in enumerate(self.targets) if name in ATOMREF_TARGETS]
        reference = np.zeros((counts.shape[1], len(self.targets)), dtype=np.float64)
        if columns:
            reference[:, columns] = fit_atomref(counts[train], y[:, columns])
        residual = y - counts[train] @ reference
        mean = residual.mean(0)
        std = residual.std(0)
        std = np.where((len(train) > 1) & (std > 0), std, 1.0)
        statistics["mean"] = torch.from_numpy(mean).float()
        statistics["std"] = torch.from_numpy(std).float()
        statistics["atomref"] = torch.from_numpy(reference).float()
        return statistics


_LAYOUTS = ("auto", "raw", "qm9pack")


def _qm9pack_files(root: str | os.PathLike[str] | None) -> list[Path]:
    """The three CSVs of the qm9pack layout: the installed package's, or ``root``'s."""
    if root is not None and str(root) == "qm9pack" and not Path(root).exists():
        return package_input_files("qm9pack")
    if root is None:
        raise UserError("QM9DataModule: layout 'qm9pack' needs root (a folder, or 'qm9pack')")
    return [Path(root) / name for name in PACKAGE_INPUTS["qm9pack"].files]


def _detect_layout(
    root: str | os.PathLike[str] | None, layout: str, sdf_path: str | os.PathLike[str] | None
) -> str:
    """``layout`` unless ``"auto"``; then qm9pack when ``root`` names it or holds its files."""
    if layout != "auto":
        return layout
    if root is None or sdf_path is not None:
        return "raw"
    if str(root) == "qm9pack" and not Path(root).exists():
        return "qm9pack"
    first = PACKAGE_INPUTS["qm9pack"].files[0]
    if (Path(root) / first).is_file() and not (Path(root) / "gdb9.sdf").is_file():
        return "qm9pack"
    return "raw"


def _subset(indices: np.ndarray, size: SplitSize | None, seed: int, name: str) -> np.ndarray:
    """``size`` of ``indices`` (a count, or a fraction of them) drawn by ``seed``, sorted.

    Raises:
        UserError: A count larger than the split it is drawn from.
    """
    if size is None:
        return indices
    count = resolve_size(size, len(indices), name)
    if count > len(indices):
        raise UserError(
            f"QM9DataModule: {name}={size} asks for more molecules than the {len(indices)} of "
            "the split it is drawn from"
        )
    chosen = np.random.default_rng(seed).permutation(len(indices))[:count]
    return np.sort(indices[chosen]).astype(np.int64)

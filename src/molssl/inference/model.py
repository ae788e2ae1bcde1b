"""``molssl.load``: a trained model for new molecules, from a checkpoint or a packaged name.

::

    import molssl

    model = molssl.load("runs/freesolv/version_0/checkpoints/last.ckpt")
    result = model.predict(["CCO", "c1ccccc1O", "not a smiles"])
    result.values        # (3, 1) array in the target's units; row 2 is NaN
    result.errors        # [None, None, "invalid_smiles: ..."]
    model.embed(["CCO", "c1ccccc1O"]).values   # (2, D), the 3D encoder's embeddings

Rows never shift: row ``i`` of the result is input ``i``. Molecules are featurised as the
model's training data were (:mod:`molssl.inference.inputs`), and predicted through Lightning's
prediction loop exactly as ``molssl predict`` does (:mod:`molssl.inference.runner`), so the
Python numbers and the command line's are the same. ``embed`` works for pre-training
checkpoints too, and gives what ``molssl embed`` gives.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lightning.pytorch import Callback

from molssl.chem.conformers import ConformerOptions
from molssl.datamodules.sources import SourceEntry
from molssl.errors import UserError
from molssl.inference.inputs import RowDataset, file_entries, smiles_entries
from molssl.inference.loading import LoadedCheckpoint, load_module
from molssl.inference.registry import resolve_checkpoint
from molssl.inference.runner import Mode, RowOutput, RowPredictor, predict_rows

__all__ = ["MolsslModel", "Predictions", "load"]


@dataclass
class Predictions:
    """Per-row results of :meth:`MolsslModel.predict` or :meth:`MolsslModel.embed`.

    Attributes:
        columns: Names of the value columns (the training targets; ``dim_0``, ... for
            embeddings).
        values: ``(rows, columns)`` float32; a row that could not be featurised is NaN.
        errors: ``None`` for a usable row, else ``"<reason>: <message>"``.
        ids: Each row's id.
        smiles: Each row's SMILES as given.
    """

    columns: list[str]
    values: np.ndarray
    errors: list[str | None]
    ids: list[str]
    smiles: list[str]

    def __len__(self) -> int:
        return len(self.errors)

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask of the rows that were predicted."""
        return np.array([error is None for error in self.errors], dtype=bool)


class UnsupportedCheckpointError(UserError):
    """A checkpoint that cannot do what was asked (a pre-training checkpoint has no targets)."""


class MolsslModel:
    """A trained molssl module with what it needs to featurise new molecules.

    Build it with :func:`load`.
    """

    def __init__(self, loaded: LoadedCheckpoint) -> None:
        self.loaded = loaded
        self.module = loaded.module
        data = loaded.data_args
        self.conformer_options = ConformerOptions(
            num_conformers=1,
            seed=int(data.get("conformer_seed", 0) or 0),
            optimize=bool(data.get("optimize_conformers", True)),
        )
        self.max_heavy_atoms: int | None = data.get("max_heavy_atoms", 150)

    @property
    def path(self) -> Path:
        """The checkpoint file."""
        return self.loaded.path

    @property
    def can_predict(self) -> bool:
        """Whether the module predicts targets (a fine-tuned module)."""
        return hasattr(self.module, "num_tasks") and hasattr(self.module, "task_names")

    @property
    def task_names(self) -> list[str]:
        """The training targets, in the order of the prediction columns."""
        self._require_task_head()
        return [str(name) for name in self.module.task_names]

    @property
    def task(self) -> str:
        """``"classification"``, ``"regression"`` or ``"energy_forces"``."""
        self._require_task_head()
        return str(self.module.task)

    def predict(
        self,
        smiles: Iterable[object],
        batch_size: int = 64,
        workers: int = 0,
        progress: bool = False,
        accelerator: str = "auto",
    ) -> Predictions:
        """Predicts the training targets of every molecule (see :class:`Predictions`).

        Classification gives the probability of each task's positive class, regression the
        value in the targets' units, energy_forces the energy.

        Raises:
            UnsupportedCheckpointError: A checkpoint without a task head (pre-training).
        """
        self._require_task_head()
        entries = smiles_entries(smiles)
        return self._run(entries, "predict", batch_size, workers, progress, accelerator)

    def embed(
        self,
        smiles: Iterable[object],
        batch_size: int = 64,
        workers: int = 0,
        progress: bool = False,
        accelerator: str = "auto",
    ) -> Predictions:
        """The per-molecule embedding of the model's 3D encoder (else its only encoder)."""
        entries = smiles_entries(smiles)
        return self._run(entries, "embed", batch_size, workers, progress, accelerator)

    def predict_file(
        self,
        path: str | os.PathLike[str],
        smiles_column: str | None = None,
        batch_size: int = 64,
        workers: int = 0,
        progress: bool = False,
        accelerator: str = "auto",
        callbacks: Sequence[Callback] = (),
    ) -> Predictions:
        """:meth:`predict` for the molecules of a file (``.csv``, ``.smi``, ``.sdf``, ...)."""
        self._require_task_head()
        entries = file_entries(path, smiles_column)
        return self._run(entries, "predict", batch_size, workers, progress, accelerator, callbacks)

    def _run(
        self,
        entries: Sequence[SourceEntry],
        mode: Mode,
        batch_size: int,
        workers: int,
        progress: bool,
        accelerator: str,
        callbacks: Sequence[Callback] = (),
    ) -> Predictions:
        dataset = RowDataset(
            entries, self.conformer_options, self.max_heavy_atoms, self.loaded.transforms
        )
        predictor = RowPredictor(self.module, mode)
        columns = (
            self.task_names if mode == "predict" else [f"dim_{i}" for i in range(predictor.width)]
        )
        if not entries:
            return Predictions(columns, np.zeros((0, len(columns)), np.float32), [], [], [])
        outputs = predict_rows(
            predictor, dataset, batch_size, workers, progress, accelerator, callbacks
        )
        return _joined(columns, outputs)

    def _require_task_head(self) -> None:
        if not self.can_predict:
            raise UnsupportedCheckpointError(
                f"{self.path} holds a {type(self.module).__name__}, which has no task head to "
                "predict with (a pre-training checkpoint); embed() gives its embeddings, or "
                "fine-tune it first (molssl fit --config configs/finetune/... "
                "--model.init_args.init_from CKPT)"
            )


def _joined(columns: list[str], outputs: Sequence[RowOutput]) -> Predictions:
    values = [output.values.numpy() for output in outputs]
    joined = np.concatenate(values) if values else np.zeros((0, len(columns)), np.float32)
    return Predictions(
        columns=columns,
        values=joined.astype(np.float32, copy=False),
        errors=[error for output in outputs for error in output.errors],
        ids=[row_id for output in outputs for row_id in output.ids],
        smiles=[text for output in outputs for text in output.smiles],
    )


def load(checkpoint: str | os.PathLike[str]) -> MolsslModel:
    """A trained model from a ``molssl fit`` checkpoint file or a packaged checkpoint's name.

    Raises:
        CheckpointError: Neither a file nor a packaged name, or a checkpoint that does not
            rebuild (see :func:`molssl.inference.loading.load_module`).
    """
    return MolsslModel(load_module(resolve_checkpoint(checkpoint)))

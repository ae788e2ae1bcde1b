"""Lightning's prediction loop over input rows: targets of a fine-tuned model, or embeddings.

:class:`RowPredictor` wraps the trained module; its ``predict_step`` runs the module on a
batch's usable molecules and returns a :class:`RowOutput` for every row of the batch, with NaN
where a row could not be featurised. :func:`predict_rows` drives ``Trainer.predict`` over a
:class:`~molssl.inference.inputs.RowDataset`, batched, with Lightning's progress bar, and hands
each batch's output to the callbacks given (the CSV writer of ``molssl predict``) as it comes.
The Python API and the command line both go through it, so they give the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn
from torch.utils.data import DataLoader

from molssl.analysis.encoder_checkpoint import ENCODER_NAMES
from molssl.encoders.base import EncoderOutput
from molssl.inference.inputs import RowBatch, RowDataset, collate_rows
from molssl.quiet import quiet_lightning_info, silence_known_noise

__all__ = ["RowOutput", "RowPredictor", "embedding_encoder", "predict_rows"]

Mode = Literal["predict", "embed"]


@dataclass
class RowOutput:
    """What :meth:`RowPredictor.predict_step` returns for one batch of rows.

    Attributes:
        rows, ids, smiles, errors: As in :class:`~molssl.inference.inputs.RowBatch`.
        values: ``(rows, width)`` float32 on the CPU: predictions in target units
            (probabilities for classification; energies for energy_forces) or embeddings; NaN
            for a failed row.
    """

    rows: list[int]
    ids: list[str]
    smiles: list[str]
    errors: list[str | None]
    values: torch.Tensor


def embedding_encoder(module: nn.Module) -> tuple[str, nn.Module]:
    """The encoder whose embeddings a model gives: the 3D one first, as ``molssl embed`` picks.

    Raises:
        TypeError: The module has none of molssl's encoder attributes.
    """
    for name in ENCODER_NAMES:
        encoder = getattr(module, name, None)
        if isinstance(encoder, nn.Module):
            return name, encoder
    raise TypeError(f"{type(module).__name__} has no encoder ({', '.join(ENCODER_NAMES)})")


class RowPredictor(LightningModule):
    """Runs a trained module on row batches (see the module docstring).

    Args:
        module: A fine-tuned module (``"predict"``: its ``predict_step`` gives ``"pred"``) or
            any molssl module with an encoder (``"embed"``).
        mode: ``"predict"`` or ``"embed"``.
    """

    def __init__(self, module: LightningModule, mode: Mode) -> None:
        super().__init__()
        if mode not in ("predict", "embed"):
            raise ValueError(f"mode must be 'predict' or 'embed', got {mode!r}")
        self.module = module
        self.mode = mode
        self.encoder_name, self.encoder = embedding_encoder(module)
        self.width = int(module.num_tasks if mode == "predict" else self.encoder.out_dim)

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        """Moves the molecules; the row bookkeeping stays on the CPU."""
        if isinstance(batch, RowBatch) and batch.graph is not None:
            batch.graph = batch.graph.to(device)
        return batch

    def predict_step(self, batch: RowBatch, batch_idx: int) -> RowOutput:
        """Values of the usable rows, NaN for the others."""
        values = torch.full((len(batch.rows), self.width), float("nan"))
        if batch.graph is not None:
            values[batch.usable] = self._values(batch.graph, batch_idx).detach().float().cpu()
        return RowOutput(batch.rows, batch.ids, batch.smiles, batch.errors, values)

    def _values(self, graph: Any, batch_idx: int) -> torch.Tensor:
        if self.mode == "predict":
            return self.module.predict_step(graph, batch_idx)["pred"].reshape(-1, self.width)
        output = self.encoder(graph)
        if not isinstance(output, EncoderOutput):
            raise TypeError(f"{type(self.encoder).__name__} did not return an EncoderOutput")
        return output.graph


def predict_rows(
    predictor: RowPredictor,
    dataset: RowDataset,
    batch_size: int = 64,
    workers: int = 0,
    progress: bool = False,
    accelerator: str = "auto",
    callbacks: Sequence[Callback] = (),
) -> list[RowOutput]:
    """``Trainer.predict`` over every row of ``dataset``, in order.

    Args:
        predictor: The wrapped module.
        dataset: The rows.
        batch_size: Rows per batch.
        workers: DataLoader worker processes featurising rows (0: in this process).
        progress: Show Lightning's progress bar.
        accelerator: Lightning's accelerator (``"auto"``, ``"cpu"``, ``"gpu"``, ...).
        callbacks: Extra callbacks, e.g. a ``BasePredictionWriter``.

    Returns:
        One :class:`RowOutput` per batch.
    """
    if batch_size < 1 or workers < 0:
        raise ValueError(f"batch_size must be >= 1 and workers >= 0, got {batch_size}, {workers}")
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_rows,
    )
    silence_known_noise()
    with quiet_lightning_info():
        trainer = Trainer(
            accelerator=accelerator,
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=progress,
            callbacks=list(callbacks),
        )
        outputs = trainer.predict(predictor, dataloaders=loader, return_predictions=True)
    return list(outputs or [])

"""``molssl predict``: a fine-tuned checkpoint's predictions for new molecules, as a CSV.

::

    molssl predict --ckpt runs/freesolv/version_0/checkpoints/last.ckpt \\
        --input new.csv --output preds.csv
    molssl predict --ckpt best.ckpt --input library.smi.gz --output preds.csv --workers 4

The checkpoint alone is enough: the model is rebuilt from it (:mod:`molssl.inference.loading`)
and the molecules are featurised as its training data were. ``preds.csv`` has one row per input
row, in input order: ``id``, ``smiles``, one column per training target (classification: the
probability of the positive class) and ``error``, which holds the reason for a row that could
not be featurised (its predictions are left empty). Inputs: ``.csv`` (``--smiles-column``, ids
from an ``id``/``name`` column), ``.smi``/``.txt``, ``.sdf`` (3D coordinates kept), each
optionally ``.gz``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from molssl.errors import UserError

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser, Namespace

__all__ = ["add_arguments", "run"]


def add_arguments(parser: ArgumentParser) -> None:
    """The options of ``molssl predict``."""
    parser.add_argument("--ckpt", required=True, help="fine-tuning checkpoint (or packaged name)")
    parser.add_argument(
        "--input",
        required=True,
        help="molecules: .csv, .smi/.txt, .sdf (each optionally .gz) or a directory of them",
    )
    parser.add_argument("--output", required=True, help="CSV file to write")
    parser.add_argument(
        "--smiles-column", default=None, help="SMILES column of a CSV (default: by name)"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="molecules per forward pass")
    parser.add_argument(
        "--workers", type=int, default=0, help="processes featurising molecules (0: this one)"
    )
    parser.add_argument(
        "--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu, ..."
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(options: Namespace) -> None:
    """Predicts, writes the CSV and prints a one-line summary."""
    from molssl.inference import load
    from molssl.inference.writer import CsvPredictionWriter

    model = load(options.ckpt)
    writer = CsvPredictionWriter(options.output, model.task_names)
    result = model.predict_file(
        options.input,
        smiles_column=options.smiles_column,
        batch_size=options.batch_size,
        workers=options.workers,
        progress=not options.no_progress,
        accelerator=options.accelerator,
        callbacks=[writer],
    )
    if len(result) == 0:
        raise UserError(f"{options.input} holds no molecule entry; nothing written")
    failed = sum(writer.failures.values())
    reasons = ", ".join(f"{reason} {count}" for reason, count in writer.failures.most_common())
    print(
        f"molssl predict: {writer.rows} rows, {writer.rows - failed} predicted, {failed} failed"
        f"{f' ({reasons})' if reasons else ''}; {model.task} of {', '.join(model.task_names)}; "
        f"written to {options.output}"
    )

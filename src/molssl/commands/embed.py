"""``molssl embed``: molecule embeddings of a checkpoint's encoder, a t-SNE map, the DB index.

::

    molssl embed --ckpt runs/unicorn/version_0/checkpoints/last.ckpt \\
        --input mols.smi --output embed/unicorn
    molssl embed --ckpt last.ckpt --random-init --input mols.smi --output embed/random
    molssl embed --ckpt last.ckpt --input freesolv.csv --label-column expt --output embed/fs

See :mod:`molssl.analysis.embed_run` for the files written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser, Namespace

__all__ = ["add_arguments", "run"]


def add_arguments(parser: ArgumentParser) -> None:
    """The options of ``molssl embed``."""
    parser.add_argument(
        "--ckpt", required=True, help="molssl checkpoint (pre-training or fine-tuning)"
    )
    parser.add_argument(
        "--input",
        required=True,
        help="molecules: .smi/.txt, .csv, .sdf (optionally .gz) or a directory",
    )
    parser.add_argument("--output", required=True, help="directory to write the files into")
    parser.add_argument(
        "--encoder",
        default=None,
        help="encoder of the checkpoint: encoder_3d, encoder_2d, encoder_blend or encoder "
        "(default: encoder_3d, else the fine-tuned encoder, else the one there is)",
    )
    parser.add_argument(
        "--random-init",
        action="store_true",
        help="the checkpoint's encoder architecture, freshly initialised with --seed (baseline)",
    )
    parser.add_argument("--label-column", default=None, help="CSV column or SDF field with a label")
    parser.add_argument(
        "--color-by",
        choices=["scaffold", "label"],
        default=None,
        help="colour the map and group the index by scaffold or label (default: label if given)",
    )
    parser.add_argument("--smiles-column", default=None, help="SMILES column of CSV inputs")
    parser.add_argument("--batch-size", type=int, default=64, help="molecules per forward pass")
    parser.add_argument(
        "--max-molecules", type=int, default=None, help="read only the first N entries"
    )
    parser.add_argument("--seed", type=int, default=0, help="conformer, t-SNE and random-init seed")
    parser.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity")
    parser.add_argument("--workers", type=int, default=1, help="conformer processes")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads of the encoder and t-SNE (0: the libraries' defaults; 1 on a busy "
        "shared machine)",
    )
    parser.add_argument("--top-k", type=int, default=10, help="scaffolds or classes in colour")
    parser.add_argument(
        "--min-class-size",
        type=int,
        default=5,
        help="smallest scaffold or class counted as a group by the Davies-Bouldin index",
    )
    parser.add_argument(
        "--label-bins", type=int, default=5, help="quantile bins of a continuous label"
    )


def run(options: Namespace) -> None:
    """Embeds, maps and prints the Davies-Bouldin index; errors exit with status 2."""
    from molssl.analysis.embed_run import EmbedSettings, run_embed, summary_line

    settings = EmbedSettings(
        ckpt=options.ckpt,
        input=options.input,
        output=options.output,
        encoder=options.encoder,
        random_init=options.random_init,
        label_column=options.label_column,
        color_by=options.color_by,
        smiles_column=options.smiles_column,
        batch_size=options.batch_size,
        max_molecules=options.max_molecules,
        seed=options.seed,
        perplexity=options.perplexity,
        workers=options.workers,
        top_k=options.top_k,
        min_class_size=options.min_class_size,
        label_bins=options.label_bins,
        threads=options.threads,
    )
    # EmbedError, CheckpointError and SourceError are UserErrors: molssl.cli reports them.
    metrics = run_embed(settings)
    print(summary_line(metrics, options.output))

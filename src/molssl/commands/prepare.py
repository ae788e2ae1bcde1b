"""``molssl prepare``: build a sharded pre-training data set from molecule files.

::

    molssl prepare --input chembl.smi.gz pcqm4mv2.sdf --output data/pretrain \\
        --num-conformers 1 --workers 16 --seed 0

See :mod:`molssl.datamodules.prepare` for what is written and what is guaranteed.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser, Namespace

__all__ = ["add_arguments", "run"]


def add_arguments(parser: ArgumentParser) -> None:
    """The options of ``molssl prepare``."""
    parser.add_argument(
        "--input",
        nargs="+",
        required=True,
        help="molecule files (.smi/.txt, .csv, .sdf, PubChemQC .json; each optionally .gz) "
        "or directories of them, read in this order",
    )
    parser.add_argument("--output", required=True, help="data set directory to write")
    parser.add_argument(
        "--num-conformers", type=int, default=1, help="RDKit conformers per SMILES entry"
    )
    parser.add_argument("--workers", type=int, default=1, help="preparation processes")
    parser.add_argument("--seed", type=int, default=0, help="conformer seed")
    parser.add_argument(
        "--shard-size",
        type=int,
        default=None,
        help="source entries per shard (mol_id range); default: 10,000, fewer for inputs of "
        "under 200,000 entries so that there are at least 20 shards to hold validation out by",
    )
    parser.add_argument(
        "--max-heavy-atoms",
        type=int,
        default=150,
        help="larger molecules fail as too_many_atoms; 0 for no limit",
    )
    parser.add_argument(
        "--smiles-column", default=None, help="SMILES column of CSV inputs (default: by name)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start over when the output holds a preparation with other settings or inputs",
    )
    parser.add_argument(
        "--keep-duplicates",
        action="store_true",
        help="keep every copy of a molecule (default: a molecule prepared before fails as "
        "duplicate_molecule)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


#: Options that count something, with the smallest value each accepts.
_MINIMUM = {"num_conformers": 1, "workers": 1, "shard_size": 1, "max_heavy_atoms": 0}


def check_options(options: Namespace) -> None:
    """Refuses out-of-range option values before anything is read or written.

    Raises:
        PrepareError: ``invalid_option``, naming the flag as typed.
    """
    from molssl.datamodules.prepare import PrepareError

    for name, minimum in _MINIMUM.items():
        value = getattr(options, name)
        if value is not None and value < minimum:
            flag = "--" + name.replace("_", "-")
            extra = " (0: no limit)" if name == "max_heavy_atoms" else ""
            raise PrepareError(
                f"{flag} must be at least {minimum}{extra}, got {value}", reason="invalid_option"
            )


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Python's default SIGTERM action ends the process without unwinding, leaving the worker
    # pool running; raising here unwinds through prepare_dataset, which stops the workers.
    # Finished shards stay on disk, so the same command resumes.
    raise SystemExit(128 + signum)


def run(options: Namespace) -> None:
    """Prepare the data set and print a one-paragraph summary.

    Errors (:class:`~molssl.errors.UserError`, reported by :func:`molssl.cli.main`), and a
    preparation that ends without a single molecule (empty inputs, or every entry failed), exit
    with status 2; the manifest of the latter is still written.
    """
    from molssl.datamodules.prepare import PrepareError, prepare_dataset
    from molssl.datamodules.shards import MANIFEST_FILE

    check_options(options)
    # signal handlers can only be set from the main thread (not, e.g., in a notebook's worker).
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if in_main_thread else None
    try:
        manifest = prepare_dataset(
            inputs=list(options.input),
            output=options.output,
            num_conformers=options.num_conformers,
            workers=options.workers,
            seed=options.seed,
            shard_size=options.shard_size,
            max_heavy_atoms=options.max_heavy_atoms or None,
            smiles_column=options.smiles_column,
            progress=not options.no_progress,
            overwrite=options.overwrite,
            keep_duplicates=options.keep_duplicates,
        )
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    reasons = ", ".join(f"{k} {v}" for k, v in manifest["failures_by_reason"].items()) or "none"
    if manifest["ok"] == 0:
        # The manifest is still written (it says what was read and why each entry failed), but a
        # data set without a molecule must not pass for a finished preparation in a job script.
        read = (
            "no entry was read from the inputs"
            if manifest["read"] == 0
            else (f"none of the {manifest['read']} entries read could be prepared ({reasons})")
        )
        raise PrepareError(
            f"{read}; nothing to train on (see {options.output}/{MANIFEST_FILE})",
            reason="nothing_prepared",
        )
    skipped = len(manifest["duplicate_inputs"])
    duplicates = f", {skipped} duplicate input file(s) not read" if skipped else ""
    print(
        f"molssl prepare: {manifest['read']} entries read{duplicates}, {manifest['ok']} "
        f"prepared, {manifest['failed']} failed ({reasons}); {len(manifest['shards'])} shard(s), "
        f"{manifest['resumed_shards']} kept from an earlier run, in "
        f"{manifest['wall_seconds']:.1f} s; manifest: {options.output}/{MANIFEST_FILE}"
    )

"""One ``molssl embed`` run: checkpoint + molecules → embeddings, t-SNE map, Davies-Bouldin index.

Files written to the output directory:

* ``embeddings.npy``: ``(M, D)`` float32, the encoder's pooled molecule embedding
  (``EncoderOutput.graph``), one row per usable molecule in input order;
* ``ids.csv``: ``row, mol_id, source_id, smiles, label, scaffold`` for those rows (``mol_id``
  is the entry number in the input, failures counted, so it never shifts);
* ``failures.json``: every entry that gave no molecule (file, line, index, mol_id, source_id,
  reason, message);
* ``tsne.npy`` (``(M, 2)`` float32) and ``tsne.png``: the map, coloured by scaffold (the
  ``top_k`` most frequent in colour, the rest grey) or by the label column (classes in colour,
  continuous values on viridis); skipped below :data:`~molssl.analysis.tsne.MIN_TSNE_MOLECULES`
  molecules;
* ``metrics.json``: the Davies-Bouldin index on the embeddings (and on the map) over the groups
  of :mod:`molssl.analysis.groups`, the group sizes, counts of molecules and failures by
  reason, the encoder and where it came from, every setting, timings.
"""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from molssl import __version__
from molssl.analysis.embeddings import encode_molecules
from molssl.analysis.encoder_checkpoint import load_checkpoint_encoder
from molssl.analysis.errors import EmbedError
from molssl.analysis.groups import Grouping, davies_bouldin, group_by_bins, group_by_value
from molssl.analysis.labels import LabelTable, is_missing, label_kind, parse_number
from molssl.analysis.molecules import read_molecules
from molssl.analysis.plot import plot_continuous, plot_groups
from molssl.analysis.tsne import MIN_TSNE_MOLECULES, effective_perplexity, tsne_map
from molssl.inference_transforms import apply_transforms

__all__ = ["OUTPUT_FILES", "EmbedSettings", "run_embed", "summary_line"]

#: Files of a complete run (``tsne.*`` only with enough molecules).
OUTPUT_FILES = (
    "embeddings.npy",
    "ids.csv",
    "failures.json",
    "tsne.npy",
    "tsne.png",
    "metrics.json",
)
ID_COLUMNS = ("row", "mol_id", "source_id", "smiles", "label", "scaffold")


@dataclass(frozen=True)
class EmbedSettings:
    """What ``molssl embed`` is asked to do (its command-line options).

    Attributes:
        ckpt: molssl checkpoint (pre-training or fine-tuning).
        input: Molecule file or directory (``.smi``, ``.csv``, ``.sdf``, ...).
        output: Directory to write into (created; files of an earlier run are replaced).
        encoder: Which encoder of the checkpoint (``None``: ``encoder_3d``, else ``encoder``,
            ...; see :func:`~molssl.analysis.encoder_checkpoint.load_checkpoint_encoder`).
        random_init: The checkpoint's architecture with a seeded fresh initialisation.
        label_column: CSV column / SDF field holding a label.
        color_by: ``"scaffold"`` or ``"label"``; ``None``: the label when a column is given.
        smiles_column: SMILES column of CSV inputs.
        batch_size: Molecules per forward pass.
        max_molecules: Read only the first this many entries.
        seed: Conformer, t-SNE and random-init seed.
        perplexity: t-SNE perplexity (lowered for small inputs).
        workers: Conformer processes.
        top_k: Scaffolds or classes drawn in colour.
        min_class_size: Smallest scaffold or class that counts as a group for the index.
        label_bins: Quantile bins of a continuous label for the index.
        threads: CPU threads of the encoder and t-SNE (``torch.set_num_threads`` and
            ``threadpoolctl``), restored afterwards; 0 keeps the libraries' defaults. On a
            machine shared with other jobs, 1 avoids oversubscription (several times faster).
    """

    ckpt: str
    input: str
    output: str
    encoder: str | None = None
    random_init: bool = False
    label_column: str | None = None
    color_by: Literal["scaffold", "label"] | None = None
    smiles_column: str | None = None
    batch_size: int = 64
    max_molecules: int | None = None
    seed: int = 0
    perplexity: float = 30.0
    workers: int = 1
    top_k: int = 10
    min_class_size: int = 5
    label_bins: int = 5
    threads: int = 0

    def check(self) -> None:
        """Raises :class:`EmbedError` (``invalid_setting``) for values out of range."""
        problems = [
            f"{name} must be >= {low}, got {value}"
            for name, value, low in (
                ("batch_size", self.batch_size, 1),
                ("workers", self.workers, 1),
                ("seed", self.seed, 0),
                ("top_k", self.top_k, 0),
                ("min_class_size", self.min_class_size, 1),
                ("label_bins", self.label_bins, 2),
                ("threads", self.threads, 0),
                ("max_molecules", 1 if self.max_molecules is None else self.max_molecules, 1),
            )
            if value < low
        ]
        if not self.perplexity > 0:
            problems.append(f"perplexity must be > 0, got {self.perplexity}")
        if self.color_by not in (None, "scaffold", "label"):
            problems.append(f"color_by must be 'scaffold' or 'label', got {self.color_by!r}")
        if self.color_by == "label" and self.label_column is None:
            problems.append("color_by 'label' needs a label column (--label-column)")
        if problems:
            raise EmbedError("invalid_setting", "; ".join(problems))


def run_embed(settings: EmbedSettings) -> dict[str, Any]:
    """Runs ``molssl embed`` (see the module docstring) and returns what ``metrics.json`` holds.

    The checkpoint and the label column are checked before any conformer is made.

    Raises:
        EmbedError: Bad settings, an input with no entry (``empty_input``) or with no usable
            molecule (``no_molecules``, after ``failures.json`` is written), a label column
            that is not there.
        CheckpointError: The checkpoint or its encoder cannot be used.
        SourceError: The input cannot be read.
    """
    settings.check()
    with _thread_limit(settings.threads):
        return _run(settings)


@contextmanager
def _thread_limit(threads: int) -> Iterator[None]:
    if threads <= 0:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(before)


def _run(settings: EmbedSettings) -> dict[str, Any]:
    started = time.perf_counter()
    loaded = load_checkpoint_encoder(
        settings.ckpt, settings.encoder, settings.random_init, settings.seed
    )
    table = (
        None if settings.label_column is None else LabelTable(settings.input, settings.label_column)
    )
    molecules, failures, read = read_molecules(
        settings.input,
        seed=settings.seed,
        workers=settings.workers,
        max_molecules=settings.max_molecules,
        smiles_column=settings.smiles_column,
    )
    timings = {"read_and_conformers": time.perf_counter() - started}
    if read == 0:
        raise EmbedError("empty_input", f"{settings.input} holds no molecule entry")
    output = Path(settings.output)
    output.mkdir(parents=True, exist_ok=True)
    for stale in OUTPUT_FILES:
        (output / stale).unlink(missing_ok=True)
    _write_json(output / "failures.json", [failure.as_dict() for failure in failures])
    if not molecules:
        reasons = Counter(failure.reason for failure in failures)
        raise EmbedError(
            "no_molecules",
            f"none of the {read} entries of {settings.input} could be used "
            f"({_reasons_text(reasons)}); see {output / 'failures.json'}",
        )

    mark = time.perf_counter()
    # The samples as the model was trained on them (MoleBLEND: heavy-atom graphs).
    samples = [apply_transforms(loaded.transforms, m.data) for m in molecules]
    embeddings = encode_molecules(loaded.encoder, samples, settings.batch_size)
    timings["encode"] = time.perf_counter() - mark
    np.save(output / "embeddings.npy", embeddings)
    labels = ["" if table is None else table.value(m.source, m.index) for m in molecules]
    _write_ids(output / "ids.csv", molecules, labels)

    color_by = settings.color_by or ("label" if table is not None else "scaffold")
    kind = label_kind(labels) if table is not None else None
    grouping = _db_grouping(settings, color_by, kind, [m.scaffold for m in molecules], labels)
    db, db_note = davies_bouldin(embeddings, grouping)

    tsne: dict[str, Any] = {"written": False}
    if len(molecules) >= MIN_TSNE_MOLECULES:
        mark = time.perf_counter()
        coords = tsne_map(embeddings, settings.perplexity, settings.seed)
        timings["tsne"] = time.perf_counter() - mark
        np.save(output / "tsne.npy", coords)
        db_map, _ = davies_bouldin(coords.astype(np.float64), grouping)
        title = _title(settings, loaded.name, loaded.weights, color_by, db)
        mark = time.perf_counter()
        if kind == "continuous" and color_by == "label":
            numbers = np.array([parse_number(label) for label in labels], dtype=np.float64)
            plot_continuous(
                coords, numbers, output / "tsne.png", title, settings.label_column or ""
            )
        else:
            values = labels if color_by == "label" else [m.scaffold for m in molecules]
            colours = group_by_value(
                values, 1, skip="", skip_name="missing" if color_by == "label" else "acyclic"
            )
            plot_groups(coords, colours, settings.top_k, output / "tsne.png", title)
        timings["plot"] = time.perf_counter() - mark
        tsne = {
            "written": True,
            "perplexity": effective_perplexity(settings.perplexity, len(molecules)),
            "davies_bouldin": db_map,
        }
    else:
        tsne["note"] = f"fewer than {MIN_TSNE_MOLECULES} molecules: no map drawn"
    timings["total"] = time.perf_counter() - started

    metrics = {
        "davies_bouldin": db,
        "davies_bouldin_note": db_note,
        "groups": {
            "by": color_by,
            "label_kind": kind,
            "min_class_size": settings.min_class_size,
            "count": len(grouping.names),
            "names": grouping.names,
            "sizes": grouping.counts,
            "excluded": grouping.excluded,
        },
        "tsne": tsne,
        "molecules": {
            "read": read,
            "embedded": len(molecules),
            "failed": len(failures),
            "failures_by_reason": dict(Counter(failure.reason for failure in failures)),
        },
        "embedding_dim": int(embeddings.shape[1]),
        "encoder": loaded.describe(),
        "settings": asdict(settings),
        "seconds": {key: round(value, 3) for key, value in timings.items()},
        "molssl_version": __version__,
    }
    _write_json(output / "metrics.json", metrics)
    return metrics


def _db_grouping(
    settings: EmbedSettings,
    color_by: str,
    kind: str | None,
    scaffolds: list[str],
    labels: list[str],
) -> Grouping:
    if color_by == "scaffold":
        return group_by_value(scaffolds, settings.min_class_size, skip="", skip_name="acyclic")
    if kind == "continuous":
        return group_by_bins(labels, settings.label_bins)
    normalised = ["" if is_missing(label) else label for label in labels]
    return group_by_value(normalised, settings.min_class_size, skip="", skip_name="missing")


def _title(
    settings: EmbedSettings, encoder: str, weights: str, color_by: str, db: float | None
) -> str:
    what = settings.label_column if color_by == "label" else "Bemis-Murcko scaffold"
    weights_text = "random init" if weights == "random_init" else Path(settings.ckpt).name
    db_text = "n/a" if db is None else f"{db:.3f}"
    return f"{encoder} ({weights_text}), coloured by {what}; Davies-Bouldin {db_text}"


def _reasons_text(reasons: Counter[str]) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in reasons.most_common()) or "none"


def _write_ids(path: Path, molecules: list[Any], labels: list[str]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(ID_COLUMNS)
        for row, (molecule, label) in enumerate(zip(molecules, labels, strict=True)):
            writer.writerow(
                [
                    row,
                    molecule.mol_id,
                    molecule.source_id,
                    molecule.smiles,
                    label,
                    molecule.scaffold,
                ]
            )


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


def summary_line(metrics: dict[str, Any], output: str | Path) -> str:
    """The line ``molssl embed`` prints: counts, the index, where the files are."""
    counts = metrics["molecules"]
    reasons = _reasons_text(Counter(counts["failures_by_reason"]))
    db = metrics["davies_bouldin"]
    groups = metrics["groups"]
    db_text = (
        f"{db:.4f} ({metrics['davies_bouldin_note']})"
        if db is not None
        else metrics["davies_bouldin_note"]
    )
    return (
        f"molssl embed: {counts['read']} read, {counts['embedded']} embedded, "
        f"{counts['failed']} failed ({reasons}); Davies-Bouldin index by {groups['by']}: "
        f"{db_text}; files in {output} ({metrics['seconds']['total']:.1f} s)"
    )

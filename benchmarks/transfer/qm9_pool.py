"""The QM9 pre-training pool: the unlabelled geometries of QM9's training split, nothing else.

Pre-training for the label-efficiency experiment may see every molecule of the standard
110,000-molecule training split (their coordinates, never their labels) and none of the
validation or test molecules. This writes those rows of qm9pack's CSVs, unchanged, into one
CSV in the same layout, which ``molssl prepare`` reads with the DFT coordinates kept. The split
is the one :class:`~molssl.datamodules.qm9.QM9DataModule` draws with the same ``split_seed``,
so the fine-tuning runs' validation and test molecules are exactly the ones left out.

    python benchmarks/transfer/qm9_pool.py --output runs/qm9_label/pool.csv
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from molssl.datamodules.qm9 import QM9DataModule
from molssl.datamodules.sources.packages import package_input_files

__all__ = ["training_split_gdb_indices", "write_pool"]


def training_split_gdb_indices(split_seed: int, root: str = "qm9pack") -> set[int]:
    """GDB indices ``k`` of the molecules in the standard training split."""
    data = QM9DataModule(root=root, targets=["homo"], split_seed=split_seed, prepare_workers=2)
    data.setup("fit")
    assert data.packed is not None and data.split_indices is not None
    mol_ids = data.packed.arrays["mol_id"][data.split_indices.train]
    return {int(mol_id) + 1 for mol_id in mol_ids}


def write_pool(output: Path, split_seed: int) -> dict[str, int]:
    """Copy the training split's rows of the installed qm9pack files, verbatim, to ``output``.

    Every row of qm9pack's files is one line, so a row is copied as its line of text.
    """
    keep = training_split_gdb_indices(split_seed)
    counts = {"rows_read": 0, "rows_written": 0, "training_split": len(keep)}
    output.parent.mkdir(parents=True, exist_ok=True)
    header: str | None = None
    with open(output, "w", newline="") as out:
        for path in package_input_files("qm9pack"):
            with open(path, newline="") as handle:
                file_header = handle.readline()
                if header is None:
                    header = file_header
                    out.write(header)
                elif file_header != header:
                    raise SystemExit(f"{path}: header differs from the first file's")
                index = next(csv.reader([header])).index("Index")
                for line in handle:
                    counts["rows_read"] += 1
                    if int(next(csv.reader([line]))[index]) in keep:
                        out.write(line)
                        counts["rows_written"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--split-seed", type=int, default=0)
    args = parser.parse_args()
    counts = write_pool(args.output, args.split_seed)
    args.output.with_suffix(".json").write_text(json.dumps(counts, indent=2) + "\n")
    print(json.dumps(counts))


if __name__ == "__main__":
    main()

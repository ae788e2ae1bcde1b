"""Build the offline pre-training pool for the FreeSolv transfer experiment.

Sources, all available without network: ``--source small`` (round 1 and 2 of
docs/RESULTS.md): RDKit's bundled NCI set (``NCI/first_5K.smi``), the shared ChEMBL sample
(``../shared/data/chembl_samples.csv``) and ``micro_ZINC.csv``; ``--source moses``: a seeded
random sample of ``--moses-size`` molecules of MOSES's training set (the ``molsets`` package,
``make data-packages``; 1,584,663 drug-like SMILES from ZINC's clean leads). Each SMILES
is reduced to its largest fragment (salts and counter-ions dropped), canonicalised, and
deduplicated on the canonical SMILES. Every FreeSolv molecule is then removed, matched both on
the canonical SMILES with stereochemistry and on the canonical SMILES without it, so that no
fine-tuning molecule (nor a stereo-isomer of one) is seen during pre-training. Counts of what
was read, rejected, deduplicated and removed are written next to the pool as JSON.

    python benchmarks/transfer/build_pool.py --output runs/transfer/pool.smi
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from rdkit import Chem, RDConfig, RDLogger

from molssl.datamodules.sources.packages import package_input_files

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
NCI_FILE = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"


def read_nci(path: Path) -> Iterator[str]:
    """SMILES of RDKit's NCI file (``SMILES<TAB>id`` per line)."""
    with path.open() as handle:
        for line in handle:
            fields = line.split()
            if fields:
                yield fields[0]


def read_csv_smiles(path: Path, column: str) -> Iterator[str]:
    """SMILES column of a CSV file."""
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            yield row[column]


def read_moses_sample(size: int, seed: int) -> Iterator[str]:
    """``size`` SMILES of MOSES's training set drawn without replacement by ``seed``, in the
    drawn order (so any prefix of the pool is itself a random sample)."""
    (path,) = package_input_files("moses")
    with gzip.open(path, "rt") as handle:
        header = handle.readline().strip()
        if header != "SMILES":
            raise SystemExit(f"{path}: expected the header 'SMILES', got {header!r}")
        lines = [line.strip() for line in handle]
    for index in np.random.default_rng(seed).permutation(len(lines))[:size]:
        yield lines[int(index)]


def canonical_keys(smiles: str) -> tuple[str, str] | None:
    """Canonical SMILES of the largest fragment, with and without stereochemistry.

    Returns None when RDKit cannot parse the SMILES or it holds no heavy atom.
    """
    mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumHeavyAtoms() == 0:
        return None
    fragments = Chem.GetMolFrags(mol, asMols=True)
    largest = max(fragments, key=lambda fragment: fragment.GetNumHeavyAtoms())
    with_stereo = Chem.MolToSmiles(largest)
    without_stereo = Chem.MolToSmiles(largest, isomericSmiles=False)
    return with_stereo, without_stereo


def build_pool(
    sources: dict[str, Iterable[str]], exclude: Iterable[str]
) -> tuple[list[str], dict[str, object]]:
    """Deduplicated pool of canonical SMILES with every excluded molecule removed.

    Parameters
    ----------
    sources
        Source name -> SMILES, read in this order (the first occurrence of a molecule wins).
    exclude
        SMILES to keep out of the pool (FreeSolv), matched with and without stereochemistry.

    Returns
    -------
    The pool (canonical SMILES with stereochemistry) and the counts per step.
    """
    excluded_stereo: set[str] = set()
    excluded_flat: set[str] = set()
    for smiles in exclude:
        keys = canonical_keys(smiles)
        if keys is not None:
            excluded_stereo.add(keys[0])
            excluded_flat.add(keys[1])

    pool: list[str] = []
    seen: set[str] = set()
    counts: dict[str, dict[str, int]] = {}
    removed_examples: list[str] = []
    for name, smiles_iter in sources.items():
        count = {"read": 0, "unparsable": 0, "duplicate": 0, "freesolv_exact": 0}
        count["freesolv_without_stereo"] = 0
        count["kept"] = 0
        for smiles in smiles_iter:
            count["read"] += 1
            keys = canonical_keys(smiles)
            if keys is None:
                count["unparsable"] += 1
                continue
            with_stereo, without_stereo = keys
            if with_stereo in seen:
                count["duplicate"] += 1
                continue
            seen.add(with_stereo)
            if with_stereo in excluded_stereo:
                count["freesolv_exact"] += 1
                removed_examples.append(with_stereo)
                continue
            if without_stereo in excluded_flat:
                count["freesolv_without_stereo"] += 1
                removed_examples.append(with_stereo)
                continue
            count["kept"] += 1
            pool.append(with_stereo)
        counts[name] = count
    removed = sum(c["freesolv_exact"] + c["freesolv_without_stereo"] for c in counts.values())
    summary: dict[str, object] = {
        "sources": counts,
        "pool_size": len(pool),
        "freesolv_molecules": len(excluded_stereo),
        "freesolv_removed": removed,
        "freesolv_removed_examples": removed_examples[:20],
    }
    return pool, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="pool .smi to write")
    parser.add_argument("--shared-data", type=Path, default=SHARED_DATA)
    parser.add_argument("--source", choices=["small", "moses"], default="small")
    parser.add_argument("--moses-size", type=int, default=105_000, help="MOSES molecules drawn")
    parser.add_argument("--seed", type=int, default=0, help="seed of the MOSES sample")
    args = parser.parse_args()
    RDLogger.DisableLog("rdApp.*")
    freesolv = args.shared_data / "freesolv.csv"
    if args.source == "moses":
        sources = {"moses_train": read_moses_sample(args.moses_size, args.seed)}
    else:
        sources = {
            "rdkit_nci_first_5k": read_nci(NCI_FILE),
            "chembl_samples": read_csv_smiles(args.shared_data / "chembl_samples.csv", "smiles"),
            "micro_zinc": read_csv_smiles(args.shared_data / "micro_ZINC.csv", "SMILES"),
        }
    pool, summary = build_pool(sources, read_csv_smiles(freesolv, "smiles"))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("".join(f"{smiles}\tpool:{i}\n" for i, smiles in enumerate(pool)))
    summary_path = args.output.with_suffix(".json")
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

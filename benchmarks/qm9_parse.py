"""QM9 parse throughput: how long the first (uncached) parse of gdb9.sdf takes, and the cache.

Builds a gdb9.sdf-layout file of ``--n`` molecules (small H/C/N/O/F molecules of RDKit's NCI
set, ETKDG coordinates with explicit hydrogens, titles ``gdb_1`` …, repeated to reach ``n``)
and its label CSV, then times, in one run:

* the baseline: RDKit reading every block with sanitisation (``MolFromMolBlock``), the floor
  of any RDKit-based parse;
* :func:`molssl.datamodules.qm9_parse.parse_qm9` with 1 and ``--workers`` processes;
* the cache: first ``load_or_parse_qm9`` (parse + write) and a second one (load);
* building ``Data`` on access (:class:`molssl.datamodules.qm9.PackedQM9`).

and prints molecules/s, the ratio to the baseline and the time extrapolated to 133,885.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/qm9_parse.py --n 3000 --workers 2
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

from rdkit import Chem, RDConfig
from rdkit.Chem import AllChem

from molssl.datamodules.qm9 import PackedQM9
from molssl.datamodules.qm9_cache import load_or_parse_qm9
from molssl.datamodules.qm9_parse import parse_qm9
from molssl.datamodules.qm9_raw import iter_sdf_blocks

FULL_QM9 = 133_885
_ALLOWED = {1, 6, 7, 8, 9}
_LABEL_COLUMNS = (
    "mu",
    "alpha",
    "homo",
    "lumo",
    "gap",
    "r2",
    "zpve",
    "u0",
    "u298",
    "h298",
    "g298",
    "cv",
)


def _blocks(distinct: int) -> list[str]:
    out: list[str] = []
    with open(Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi") as handle:
        for line in handle:
            mol = Chem.MolFromSmiles(line.split()[0])
            if mol is None or mol.GetNumAtoms() > 9:
                continue
            if any(atom.GetAtomicNum() not in _ALLOWED for atom in mol.GetAtoms()):
                continue
            mol = Chem.AddHs(mol)
            if AllChem.EmbedMolecule(mol, randomSeed=len(out) + 1) != 0:
                continue
            out.append(Chem.MolToMolBlock(mol).split("\n", 1)[1])  # without the title line
            if len(out) == distinct:
                break
    return out


def _write(directory: Path, n: int) -> tuple[Path, Path]:
    blocks = _blocks(200)
    sdf, labels = directory / "gdb9.sdf", directory / "gdb9.sdf.csv"
    with open(sdf, "w") as handle:
        for k in range(1, n + 1):
            handle.write(f"gdb_{k}\n{blocks[(k - 1) % len(blocks)]}$$$$\n")
    with open(labels, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["mol_id", *_LABEL_COLUMNS])
        for k in range(1, n + 1):
            writer.writerow([f"gdb_{k}", *(0.001 * k + j for j in range(12))])
    return sdf, labels


def _rate(n: int, seconds: float) -> str:
    minutes = FULL_QM9 / (n / seconds) / 60
    return f"{n / seconds:8.0f} mol/s  ({seconds:6.2f} s; {minutes:5.1f} min for {FULL_QM9:,})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        sdf, labels = _write(directory, args.n)
        start = time.perf_counter()
        for block in iter_sdf_blocks(sdf):
            Chem.MolFromMolBlock(block.text, sanitize=True, removeHs=False)
        baseline = time.perf_counter() - start
        print(f"baseline MolFromMolBlock {_rate(args.n, baseline)}")
        start = time.perf_counter()
        parsed = parse_qm9(sdf, labels, None)
        serial = time.perf_counter() - start
        ratio = serial / baseline
        print(f"parse_qm9, 1 process    {_rate(args.n, serial)}  x{ratio:.1f} baseline")
        start = time.perf_counter()
        parse_qm9(sdf, labels, None, workers=args.workers)
        parallel = time.perf_counter() - start
        speedup = serial / parallel
        print(f"parse_qm9, {args.workers} processes {_rate(args.n, parallel)}  x{speedup:.2f}")
        cache = directory / "cache"
        start = time.perf_counter()
        load_or_parse_qm9(sdf, labels, None, cache_dir=cache)
        first = time.perf_counter() - start
        start = time.perf_counter()
        _, _, hit = load_or_parse_qm9(sdf, labels, None, cache_dir=cache)
        second = time.perf_counter() - start
        print(f"cache: parse+write {first:.2f} s, load {second:.3f} s (hit={hit})")
        packed = PackedQM9(parsed.arrays, range(12))
        start = time.perf_counter()
        for i in range(len(packed)):
            packed[i]
        build = time.perf_counter() - start
        print(f"Data on access         {len(packed) / build:8.0f} mol/s")
        print(f"ok {len(parsed)} of {parsed.read}, failures {len(parsed.failures)}")


if __name__ == "__main__":
    main()

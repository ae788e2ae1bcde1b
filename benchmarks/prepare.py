"""``molssl prepare`` throughput against the bare ETKDG + MMFF94 floor, per core.

The floor is what any conformer-based preparation must pay: for each of the same molecules,
``mol_from_smiles`` then RDKit's ETKDGv3 embedding and MMFF94 optimisation (UFF where MMFF
has no parameters), called directly, in one process, with the same seed per molecule
(``molecule_seed(seed, mol_id)``), conformer count and iteration limit. ``prepare_dataset``
adds reading the file, features, BRICS fragments, torsions and their masks, the shortest-path
matrix, packing, tar shards, hashes and the manifest, and with several workers the pool's
start-up and the ordered hand-back. Reported: molecules/s of each, and prepare's throughput
per worker as a fraction of the floor's (goal >= 90%).

    OMP_NUM_THREADS=1 python benchmarks/prepare.py --n 400 --workers 1,2

On a shared machine the per-core ratio of several workers also measures how busy the other
cores are: compare it with the load average printed beside it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from rdkit import RDConfig, rdBase
from rdkit.Chem import rdDistGeom, rdForceFieldHelpers

from machine_info import load_average
from molssl.chem.conformers import ConformerOptions
from molssl.chem.errors import MoleculeError
from molssl.chem.features import mol_from_smiles
from molssl.datamodules.embedded import molecule_seed
from molssl.datamodules.prepare import _Workers, prepare_dataset
from molssl.datamodules.sources import SourceEntry

NCI = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"


def nci_lines(n: int) -> list[str]:
    """First ``n`` lines (``SMILES<TAB>id``) of RDKit's bundled NCI set."""
    with open(NCI) as handle:
        return [line for line, _ in zip(handle, range(n), strict=False)]


def floor_one(smiles: str, options: ConformerOptions) -> None:
    """Parse, embed (ETKDGv3) and optimise (MMFF94, else UFF) one molecule, nothing more."""
    try:
        mol = mol_from_smiles(smiles, max_heavy_atoms=None)
    except MoleculeError:
        return
    params = rdDistGeom.ETKDGv3()
    params.randomSeed = options.seed
    params.timeout = max(1, int(options.timeout_s))
    params.numThreads = 1
    rdDistGeom.EmbedMultipleConfs(mol, options.num_conformers, params)
    if not mol.GetNumConformers() or not options.optimize:
        return
    if rdForceFieldHelpers.MMFFHasAllMoleculeParams(mol):
        rdForceFieldHelpers.MMFFOptimizeMoleculeConfs(
            mol, numThreads=1, maxIters=options.max_optimize_iters
        )
    elif rdForceFieldHelpers.UFFHasAllMoleculeParams(mol):
        rdForceFieldHelpers.UFFOptimizeMoleculeConfs(
            mol, numThreads=1, maxIters=options.max_optimize_iters
        )


def floor_seconds(lines: list[str], conformers: int, seed: int) -> tuple[float, float]:
    """Wall and CPU seconds of the floor over all molecules, single process."""
    base = ConformerOptions(num_conformers=conformers, seed=seed)
    start, cpu_start = time.perf_counter(), time.process_time()
    with rdBase.BlockLogs():
        for mol_id, line in enumerate(lines):
            parts = line.split()
            options = replace(base, seed=molecule_seed(seed, mol_id))
            floor_one(parts[0] if parts else "", options)
    return time.perf_counter() - start, time.process_time() - cpu_start


def prepare_seconds(
    source: Path, workers: int, conformers: int, seed: int
) -> tuple[float, float, int]:
    """Wall seconds of ``prepare_dataset`` into a fresh directory, this process's CPU
    seconds (all of the work when ``workers == 1``), and its ok count."""
    with tempfile.TemporaryDirectory() as output:
        start, cpu_start = time.perf_counter(), time.process_time()
        manifest = prepare_dataset(
            [source], output, conformers, workers, seed, progress=False, max_heavy_atoms=None
        )
        return time.perf_counter() - start, time.process_time() - cpu_start, manifest["ok"]


def pool_startup_seconds(workers: int) -> float:
    """Seconds until a fresh pool of ``workers`` hands back its first (trivial) molecule.

    A fixed cost per run (the forkserver imports torch and RDKit once); it dominates small
    benchmarks and vanishes on real data sets.
    """
    pool = _Workers(workers)
    start = time.perf_counter()
    list(pool.map([(0, SourceEntry("startup", 0, 1, "x", smiles="C"), ConformerOptions(), 150)]))
    seconds = time.perf_counter() - start
    pool.close()
    return seconds


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=400, help="NCI molecules")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--conformers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the fastest counts")
    args = parser.parse_args()
    worker_counts = [int(w) for w in args.workers.split(",")]
    lines = nci_lines(args.n)
    n = len(lines)
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "nci.smi"
        source.write_text("".join(lines))
        floor, floor_cpu = min(
            floor_seconds(lines, args.conformers, args.seed) for _ in range(args.repeat)
        )
        # First, on a fresh forkserver: later pools in this process fork from the same one,
        # so the prepare runs below measure the steady state.
        startup = {w: pool_startup_seconds(w) if w > 1 else 0.0 for w in worker_counts}
        runs = {}
        for workers in worker_counts:
            tries = [
                prepare_seconds(source, workers, args.conformers, args.seed)
                for _ in range(args.repeat)
            ]
            runs[workers] = min(tries, key=lambda run: run[0])
    print(
        f"molssl prepare vs ETKDGv3+MMFF94 floor: {n} NCI molecules, {args.conformers} "
        f"conformer(s), cpus {os.cpu_count()}, OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, load {load_average()}"
    )
    print(f"  {'':22s} {'mol/s':>8s} {'per core vs floor':>18s} {'CPU s/mol vs floor':>19s}")
    print(f"  {'floor (1 process)':22s} {n / floor:8.1f} {1.0:18.2f} {1.0:19.2f}")
    for workers, (seconds, cpu, ok) in runs.items():
        seconds += startup[workers]  # as a one-off `molssl prepare` pays it
        per_core = (n / seconds) / workers / (n / floor)
        # CPU time is load-independent, but only measures everything in-process (1 worker).
        cpu_ratio = f"{floor_cpu / cpu:19.2f}" if workers == 1 else f"{'-':>19s}"
        label = f"prepare, {workers} worker(s)"
        print(f"  {label:22s} {n / seconds:8.1f} {per_core:18.2f} {cpu_ratio}   ({ok} ok)")
        if startup[workers]:
            steady = (n / (seconds - startup[workers])) / workers / (n / floor)  # warm pool
            print(
                f"  {'':22s} pool start-up {startup[workers]:.1f} s; per core without it: "
                f"{steady:.2f}"
            )
    print("  goal: per core >= 0.90 of the floor (throughput ratio; 1.00 = no overhead)")


if __name__ == "__main__":
    main()

"""``molssl prepare`` throughput against the bare ETKDG + MMFF94 floor, per core.

The floor is what any conformer-based preparation must pay to produce the same conformers:
for each of the same molecules, ``mol_from_smiles`` then RDKit's ETKDGv3 embedding with the
parameters ``embed_conformers`` uses (``etkdg_parameters``: seed ``molecule_seed(seed, mol_id)
+ 1``, fragments embedded together, further attempts from random coordinates when one finds
nothing, as salts need) and one MMFF94 typing + minimisation (UFF where MMFF has no
parameters), called directly, in one process, with the same conformer count and iteration
limit. The floor's coordinates are checked against the prepared shards (they must agree
bit for bit, float32), so both sides are known to do the same chemistry. ``prepare_dataset``
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

import numpy as np
from rdkit import Chem, RDConfig, rdBase
from rdkit.Chem import rdDistGeom, rdForceFieldHelpers

from machine_info import load_average
from molssl.chem.conformers import ConformerOptions, conformer_positions, etkdg_parameters
from molssl.chem.errors import MoleculeError
from molssl.chem.features import mol_from_smiles
from molssl.datamodules.embedded import molecule_seed
from molssl.datamodules.prepare import _one_thread_per_worker, _prepare_entry, prepare_dataset
from molssl.datamodules.shards import read_shard
from molssl.datamodules.sources import SourceEntry
from molssl.datamodules.workers import WorkerPool

NCI = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"


def nci_lines(n: int) -> list[str]:
    """First ``n`` lines (``SMILES<TAB>id``) of RDKit's bundled NCI set."""
    with open(NCI) as handle:
        return [line for line, _ in zip(handle, range(n), strict=False)]


def floor_one(smiles: str, options: ConformerOptions) -> Chem.Mol | None:
    """Parse, embed (ETKDGv3) and optimise (MMFF94, else UFF) one molecule, nothing more."""
    try:
        mol = mol_from_smiles(smiles, max_heavy_atoms=None)
    except MoleculeError:
        return None
    # Typed before embedding, on a copy (MMFF94 re-perceives aromaticity, and ETKDG must see
    # the molecule as embed_conformers does); molecules neither force field types are
    # refused before any embedding, as embed_conformers refuses them.
    typed = Chem.Mol(mol)
    mmff = rdForceFieldHelpers.MMFFGetMoleculeProperties(typed)
    if mmff is None and not rdForceFieldHelpers.UFFHasAllMoleculeParams(typed):
        return None
    for attempt in range(options.max_attempts):
        timeout = options.timeout_s / (options.max_attempts - attempt)
        params = etkdg_parameters(options, attempt, timeout)
        rdDistGeom.EmbedMultipleConfs(mol, options.num_conformers, params)
        if mol.GetNumConformers():  # a failed attempt returns [] or [-1]
            break
    if not mol.GetNumConformers() or not options.optimize:
        return mol
    iters = options.max_optimize_iters
    if mmff is not None:
        for conformer in mol.GetConformers():
            typed.AddConformer(conformer, assignId=False)
        field = rdForceFieldHelpers.MMFFGetMoleculeForceField(typed, mmff)
        rdForceFieldHelpers.OptimizeMoleculeConfs(typed, field, numThreads=1, maxIters=iters)
        return typed
    rdForceFieldHelpers.UFFOptimizeMoleculeConfs(mol, numThreads=1, maxIters=iters)
    return mol


def floor_seconds(
    lines: list[str], conformers: int, seed: int
) -> tuple[float, float, dict[int, np.ndarray]]:
    """Wall and CPU seconds of the floor over all molecules, single process, and the
    coordinates it made (float32, by mol_id)."""
    base = ConformerOptions(num_conformers=conformers, seed=seed)
    made: dict[int, Chem.Mol | None] = {}
    start, cpu_start = time.perf_counter(), time.process_time()
    with rdBase.BlockLogs():
        for mol_id, line in enumerate(lines):
            parts = line.split()
            options = replace(base, seed=molecule_seed(seed, mol_id))
            made[mol_id] = floor_one(parts[0] if parts else "", options)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    positions = {
        mol_id: conformer_positions(mol).astype(np.float32)
        for mol_id, mol in made.items()
        if mol is not None and mol.GetNumConformers()
    }
    return wall, cpu, positions


def prepare_seconds(
    source: Path, workers: int, conformers: int, seed: int
) -> tuple[float, float, int, dict[int, np.ndarray]]:
    """Wall seconds of ``prepare_dataset`` into a fresh directory, this process's CPU
    seconds (all of the work when ``workers == 1``), its ok count, and the coordinates of
    its records (read back after the clock stops)."""
    with tempfile.TemporaryDirectory() as output:
        start, cpu_start = time.perf_counter(), time.process_time()
        # Every line prepared, as the floor does (NCI lists some molecules twice).
        manifest = prepare_dataset(
            [source], output, conformers, workers, seed, progress=False, max_heavy_atoms=None,
            keep_duplicates=True,
        )  # fmt: skip
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        positions = {
            record.mol_id: np.asarray(record.conformers)
            for shard in manifest["shards"]
            for record in read_shard(Path(output) / shard["file"])
        }
        return wall, cpu, manifest["ok"], positions


def agreement(floor: dict[int, np.ndarray], prepared: dict[int, np.ndarray]) -> str:
    """How many molecules got bit-identical conformers from the floor and from prepare."""
    same = sum(
        1
        for mol_id, coordinates in prepared.items()
        if mol_id in floor and np.array_equal(floor[mol_id], coordinates)
    )
    return f"{same}/{len(prepared)} prepared molecules have the floor's coordinates"


def pool_startup_seconds(workers: int) -> float:
    """Seconds until a fresh pool of ``workers`` hands back its first (trivial) molecule.

    A fixed cost per run (the forkserver imports torch and RDKit once); it dominates small
    benchmarks and vanishes on real data sets.
    """
    pool = WorkerPool(
        workers, preload=["molssl.datamodules.prepare"], initializer=_one_thread_per_worker
    )
    start = time.perf_counter()
    task = (0, SourceEntry("startup", 0, 1, "x", smiles="C"), ConformerOptions(), 150)
    list(pool.map(_prepare_entry, [task] * 2, lambda i: "the startup molecule"))
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
        floor_runs = [floor_seconds(lines, args.conformers, args.seed) for _ in range(args.repeat)]
        floor, floor_cpu, floor_positions = min(floor_runs, key=lambda run: run[0])
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
    for workers, (seconds, cpu, ok, _) in runs.items():
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
    for workers, (*_, positions) in runs.items():
        print(f"  same chemistry, {workers} worker(s): {agreement(floor_positions, positions)}")


if __name__ == "__main__":
    main()

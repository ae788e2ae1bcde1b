"""Featurization + conformer throughput on RDKit's bundled NCI set, against the ETKDG/MMFF floor.

The floor is the time RDKit itself spends embedding (ETKDGv3) and optimising (MMFF94) the same
molecules with the same seed, conformer count and iteration limit, called directly; everything
above it is our overhead (input checks, hydrogens, force-field choice, failure bookkeeping,
degenerate-conformer checks, feature tables, ``Data`` construction). Each molecule goes through
both sides back to back, ``--repeat`` times, and the fastest run of each side is kept.

    python benchmarks/featurize.py --n 300 --conformers 1
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import numpy as np
from rdkit import Chem, RDConfig, rdBase
from rdkit.Chem import rdDistGeom, rdForceFieldHelpers

from molssl.chem.conformers import ConformerOptions, embed_conformers
from molssl.chem.errors import MoleculeError
from molssl.chem.features import mol_from_smiles, mol_to_data


def read_smiles(n: int) -> list[str]:
    """First ``n`` SMILES of RDKit's bundled NCI set."""
    path = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
    with open(path) as handle:
        return [line.split()[0] for line, _ in zip(handle, range(n), strict=False) if line.strip()]


def floor_seconds(mol: Chem.Mol, options: ConformerOptions) -> float:
    """Bare RDKit on one prepared molecule: ETKDGv3, then MMFF94 (UFF where MMFF cannot)."""
    mol = Chem.Mol(mol)
    start = time.perf_counter()
    with rdBase.BlockLogs():
        params = rdDistGeom.ETKDGv3()
        params.randomSeed = options.seed
        params.timeout = max(1, int(options.timeout_s))
        params.numThreads = 1
        params.embedFragmentsSeparately = False
        rdDistGeom.EmbedMultipleConfs(mol, options.num_conformers, params)
        if mol.GetNumConformers() and options.optimize:
            if rdForceFieldHelpers.MMFFHasAllMoleculeParams(mol):
                rdForceFieldHelpers.MMFFOptimizeMoleculeConfs(
                    mol, numThreads=1, maxIters=options.max_optimize_iters
                )
            elif rdForceFieldHelpers.UFFHasAllMoleculeParams(mol):
                rdForceFieldHelpers.UFFOptimizeMoleculeConfs(
                    mol, numThreads=1, maxIters=options.max_optimize_iters
                )
    return time.perf_counter() - start


def our_seconds(smiles: str, options: ConformerOptions) -> tuple[list[float], str | None]:
    """molssl's pipeline on one SMILES: seconds per stage, and the failure reason if any."""
    seconds = [0.0, 0.0, 0.0]
    start = time.perf_counter()
    try:
        mol = mol_from_smiles(smiles)
        seconds[0] = time.perf_counter() - start
        start = time.perf_counter()
        mol = embed_conformers(mol, options)
        seconds[1] = time.perf_counter() - start
    except MoleculeError as error:
        seconds[0 if seconds[0] == 0.0 else 1] = time.perf_counter() - start
        return seconds, error.reason
    start = time.perf_counter()
    for conf_id in range(mol.GetNumConformers()):
        mol_to_data(mol, conf_id=conf_id)
    seconds[2] = time.perf_counter() - start
    return seconds, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="molecules from NCI/first_5K.smi")
    parser.add_argument("--conformers", type=int, default=1, help="conformers per molecule")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per molecule (min kept)")
    args = parser.parse_args()
    options = ConformerOptions(num_conformers=args.conformers)

    smiles = read_smiles(args.n)
    stages = np.zeros(3)
    floor_s = 0.0
    failures: Counter[str] = Counter()
    # Per molecule, ours and the floor back to back (the order alternating), so that a load
    # change on the machine hits both sides alike.
    for index, text in enumerate(smiles):
        ours_best = np.full(3, np.inf)
        floor_best = np.inf
        reason = None
        try:
            prepared = mol_from_smiles(text)
        except MoleculeError:
            prepared = None
        for run in range(args.repeat):
            floor_first = (index + run) % 2 == 0
            if floor_first and prepared is not None:
                floor_best = min(floor_best, floor_seconds(prepared, options))
            seconds, reason = our_seconds(text, options)
            ours_best = np.minimum(ours_best, seconds)
            if not floor_first and prepared is not None:
                floor_best = min(floor_best, floor_seconds(prepared, options))
        stages += ours_best
        floor_s += 0.0 if prepared is None else floor_best
        if reason is not None:
            failures[reason] += 1

    total_s = float(stages.sum())
    n = len(smiles)
    print(f"molecules read: {n}, featurized: {n - sum(failures.values())}, ", end="")
    print(f"failed: {dict(failures) or 'none'}")
    print(f"conformers per molecule: {args.conformers}, repeats: {args.repeat}")
    print(f"{'stage':<40}{'seconds':>9}{'mol/s':>9}{'ms/mol':>9}")
    rows = [
        ("mol_from_smiles (parse, checks, add H)", stages[0]),
        ("embed_conformers (ETKDG + MMFF/UFF)", stages[1]),
        ("mol_to_data (every conformer)", stages[2]),
        ("total, ours", total_s),
        ("floor: bare RDKit ETKDG + MMFF/UFF", floor_s),
    ]
    for name, seconds in rows:
        print(f"{name:<40}{seconds:>9.2f}{n / seconds:>9.1f}{1000 * seconds / n:>9.2f}")
    overhead = total_s - floor_s
    print(f"{'overhead: ours - floor':<40}{overhead:>9.2f}{'-':>9}{1000 * overhead / n:>9.2f}")
    print(f"share of our time inside ETKDG/MMFF (floor / ours): {floor_s / total_s:.1%}")
    print(f"our featurization overhead share: {overhead / total_s:.1%}")


if __name__ == "__main__":
    main()

"""Featurization + conformer throughput on RDKit's bundled NCI set, against the ETKDG/MMFF floor.

The floor is the time RDKit itself spends embedding (ETKDGv3) and optimising (MMFF94) the same
molecules with the same settings; everything above it is our overhead (parsing checks, feature
tables, ``Data`` construction, degenerate-conformer checks).

    python benchmarks/featurize.py --n 300 --conformers 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rdkit import Chem, RDConfig, rdBase
from rdkit.Chem import rdDistGeom, rdForceFieldHelpers

from molssl.chem.conformers import ConformerOptions, embed_conformers
from molssl.chem.errors import MoleculeError
from molssl.chem.features import mol_from_smiles, mol_to_data


def read_smiles(n: int) -> list[str]:
    path = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
    with open(path) as handle:
        return [line.split()[0] for line, _ in zip(handle, range(n), strict=False) if line.strip()]


def floor_seconds(mols: list[Chem.Mol], options: ConformerOptions) -> float:
    """Bare RDKit: ETKDGv3 + MMFF94 with the same seed, attempts and iterations."""
    start = time.perf_counter()
    with rdBase.BlockLogs():
        for mol in mols:
            mol = Chem.Mol(mol)
            params = rdDistGeom.ETKDGv3()
            params.randomSeed = options.seed
            params.timeout = options.timeout_s
            params.numThreads = 1
            params.embedFragmentsSeparately = False
            rdDistGeom.EmbedMultipleConfs(mol, options.num_conformers, params)
            if mol.GetNumConformers() and rdForceFieldHelpers.MMFFHasAllMoleculeParams(mol):
                rdForceFieldHelpers.MMFFOptimizeMoleculeConfs(
                    mol, numThreads=1, maxIters=options.max_optimize_iters
                )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="molecules from NCI/first_5K.smi")
    parser.add_argument("--conformers", type=int, default=1, help="conformers per molecule")
    args = parser.parse_args()
    options = ConformerOptions(num_conformers=args.conformers)

    smiles = read_smiles(args.n)
    start = time.perf_counter()
    mols, failures = [], {}
    for text in smiles:
        try:
            mols.append(mol_from_smiles(text))
        except MoleculeError as error:
            failures[error.reason] = failures.get(error.reason, 0) + 1
    parse_s = time.perf_counter() - start

    start = time.perf_counter()
    embedded = []
    for mol in mols:
        try:
            embedded.append(embed_conformers(mol, options))
        except MoleculeError as error:
            failures[error.reason] = failures.get(error.reason, 0) + 1
    embed_s = time.perf_counter() - start

    start = time.perf_counter()
    for mol in embedded:
        mol_to_data(mol, conf_id=0)
    featurize_s = time.perf_counter() - start

    floor_s = floor_seconds(mols, options)
    total_s = parse_s + embed_s + featurize_s
    print(f"molecules read: {len(smiles)}, featurized: {len(embedded)}, failed: {failures}")
    print(f"conformers per molecule: {args.conformers}")
    print(f"{'stage':<34}{'seconds':>10}{'mol/s':>10}")
    for name, seconds in [
        ("parse + checks + add H", parse_s),
        ("embed_conformers (ETKDG+MMFF)", embed_s),
        ("mol_to_data", featurize_s),
        ("total (ours)", total_s),
        ("floor: bare RDKit ETKDG+MMFF", floor_s),
    ]:
        print(f"{name:<34}{seconds:>10.2f}{len(smiles) / seconds:>10.1f}")
    print(f"share of our total spent at the floor: {floor_s / total_s:.1%}")
    print(f"our throughput / floor throughput: {floor_s / total_s:.2f}")


if __name__ == "__main__":
    main()

"""Torsion perturbation: molssl's NumPy hot path against RDKit's ``SetDihedralRad`` loop.

Same molecules (RDKit's bundled NCI set, explicit hydrogens, one seeded ETKDG conformer
from :mod:`molssl.chem.conformers`, all generated before any timing), same torsions, same
deltas, same run:

* ``molssl apply``: :func:`molssl.chem.torsions.apply_torsion_deltas`, masks precomputed
  (the data-pipeline hot path: no RDKit object touched).
* ``RDKit copy``: copy the Mol, then ``GetDihedralRad`` + ``SetDihedralRad(old + delta)``
  per torsion, then read the positions back.
* ``RDKit in place``: RDKit's best case, one Mol kept per molecule whose conformer is reset
  with ``SetPositions`` instead of copied.
* ``molssl perturb``: :func:`molssl.chem.torsions.perturb_torsions`, i.e. masks recomputed
  from the Mol on every call (for reference).

Figures are per molecule (best of ``--repeats`` passes over all molecules that have at
least one rotatable bond) and ratios ``RDKit / molssl`` (> 1: molssl is faster). The one-off
cost of ``rotatable_torsions`` and ``torsion_moving_masks`` is printed too.

Run: ``.venv/bin/python benchmarks/torsions.py [--molecules 300] [--repeats 7]``
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rdkit import Chem, RDConfig
from rdkit.Chem import rdMolTransforms as MolTransforms

from molssl.chem.conformers import ConformerOptions, embed_conformers
from molssl.chem.errors import MoleculeError
from molssl.chem.features import mol_from_smiles
from molssl.chem.torsions import (
    apply_torsion_deltas,
    perturb_torsions,
    rotatable_torsions,
    torsion_moving_masks,
)

NCI_SMILES = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"


@dataclass
class Sample:
    """One molecule with everything precomputed outside the timed region."""

    mol: Chem.Mol
    pos: np.ndarray
    torsions: np.ndarray
    masks: np.ndarray
    deltas: np.ndarray
    scratch: Chem.Mol  # RDKit's in-place path overwrites this copy's conformer, not ``mol``


def load_molecules(count: int, seed: int) -> list[Chem.Mol]:
    """First ``count`` NCI molecules that molssl can featurize and embed (no MMFF)."""
    options = ConformerOptions(seed=seed, optimize=False)
    mols: list[Chem.Mol] = []
    with open(NCI_SMILES) as fh:
        for line in fh:
            if len(mols) >= count:
                break
            fields = line.split()
            if not fields:
                continue
            try:
                mols.append(embed_conformers(mol_from_smiles(fields[0]), options))
            except MoleculeError:
                continue
    return mols


def best_pass_seconds(
    run_one: Callable[[Sample], object], samples: list[Sample], repeats: int
) -> float:
    """Fastest of ``repeats`` timed passes over all samples (GC paused while timing)."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            for sample in samples:
                run_one(sample)
            best = min(best, time.perf_counter() - start)
        finally:
            gc.enable()
    return best


def molssl_apply(sample: Sample) -> np.ndarray:
    return apply_torsion_deltas(sample.pos, sample.torsions, sample.masks, sample.deltas)


def molssl_perturb(sample: Sample) -> np.ndarray:
    return perturb_torsions(sample.mol, sample.pos, sample.torsions, sample.deltas)


def _set_dihedrals(conf: Chem.Conformer, torsions: list[list[int]], deltas: list[float]) -> None:
    for (i, j, k, l), delta in zip(torsions, deltas, strict=True):
        old = MolTransforms.GetDihedralRad(conf, i, j, k, l)
        MolTransforms.SetDihedralRad(conf, i, j, k, l, old + delta)


def rdkit_copy(sample: Sample) -> np.ndarray:
    # tolist() outside would flatter RDKit; it is part of driving RDKit from arrays.
    conf = Chem.Mol(sample.mol).GetConformer()
    _set_dihedrals(conf, sample.torsions.tolist(), sample.deltas.tolist())
    return conf.GetPositions()


def rdkit_in_place(sample: Sample) -> np.ndarray:
    conf = sample.scratch.GetConformer()
    conf.SetPositions(sample.pos)
    _set_dihedrals(conf, sample.torsions.tolist(), sample.deltas.tolist())
    return conf.GetPositions()


def one_off_cost_us(mols: list[Chem.Mol], repeats: int) -> tuple[float, float]:
    """Per-molecule µs of finding torsions, and of computing their moving masks."""
    torsions = [rotatable_torsions(mol) for mol in mols]
    find = min(_timed(lambda: [rotatable_torsions(mol) for mol in mols]) for _ in range(repeats))
    mask = min(
        _timed(lambda: [torsion_moving_masks(m, t) for m, t in zip(mols, torsions, strict=True)])
        for _ in range(repeats)
    )
    return find / len(mols) * 1e6, mask / len(mols) * 1e6


def _timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--molecules", type=int, default=300, help="NCI molecules to embed")
    parser.add_argument("--repeats", type=int, default=7, help="timed passes; best is kept")
    parser.add_argument("--sigma-deg", type=float, default=2.0, help="delta std (UniCorn: 2)")
    parser.add_argument("--seed", type=int, default=0, help="embedding and delta seed")
    args = parser.parse_args()

    start = time.perf_counter()
    mols = load_molecules(args.molecules, args.seed)
    embed_s = time.perf_counter() - start
    rng = np.random.default_rng(args.seed)
    samples: list[Sample] = []
    for mol in mols:
        torsions = rotatable_torsions(mol)
        if len(torsions) == 0:
            continue
        deltas = rng.normal(0.0, np.deg2rad(args.sigma_deg), size=len(torsions))
        masks = torsion_moving_masks(mol, torsions)
        pos = mol.GetConformer().GetPositions()
        samples.append(Sample(mol, pos, torsions, masks, deltas, scratch=Chem.Mol(mol)))
    num_torsions = sum(len(s.torsions) for s in samples)
    num_atoms = sum(s.mol.GetNumAtoms() for s in samples)

    # Same numbers from both, checked in the run that is timed.
    max_diff = max(float(np.abs(molssl_apply(s) - rdkit_copy(s)).max()) for s in samples)

    print(f"molecules: {len(mols)} embedded in {embed_s:.1f} s; {len(samples)} with torsions")
    print(
        f"per timed molecule: {num_atoms / len(samples):.1f} atoms (with H), "
        f"{num_torsions / len(samples):.2f} torsions; max |molssl - RDKit| = {max_diff:.1e} A"
    )
    find_us, mask_us = one_off_cost_us(mols, args.repeats)
    print(
        f"one-off per molecule: rotatable_torsions {find_us:.1f} us, "
        f"torsion_moving_masks {mask_us:.1f} us"
    )

    methods: dict[str, Callable[[Sample], object]] = {
        "molssl apply (masks precomputed)": molssl_apply,
        "RDKit copy + SetDihedralRad": rdkit_copy,
        "RDKit in place + SetDihedralRad": rdkit_in_place,
        "molssl perturb (masks each call)": molssl_perturb,
    }
    seconds = {name: best_pass_seconds(run, samples, args.repeats) for name, run in methods.items()}
    ours = seconds["molssl apply (masks precomputed)"]
    print(f"\n{'method':36s} {'us/molecule':>12s} {'us/torsion':>11s} {'vs molssl':>10s}")
    for name, total in seconds.items():
        per_mol = total / len(samples) * 1e6
        per_torsion = total / num_torsions * 1e6
        print(f"{name:36s} {per_mol:12.1f} {per_torsion:11.2f} {total / ours:9.2f}x")
    print(
        f"\nspeed-up of molssl apply: {seconds['RDKit copy + SetDihedralRad'] / ours:.2f}x over "
        f"RDKit copy, {seconds['RDKit in place + SetDihedralRad'] / ours:.2f}x over RDKit in place"
    )


if __name__ == "__main__":
    main()

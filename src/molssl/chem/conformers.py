"""3D conformers: ETKDGv3 embedding + MMFF94 optimisation, seeded, bounded, and honest.

Policy:

* Embedding uses ETKDGv3 with a fixed seed, so the same molecule (same atom order) and the
  same :class:`ConformerOptions` give bit-identical coordinates.
* Each attempt is bounded by ETKDG's own ``timeout`` (seconds); up to ``max_attempts``
  attempts are made with derived seeds, and attempts after the first use random starting
  coordinates when ``random_coords_fallback`` is set (ETKDG's documented remedy for
  molecules whose distance-bounds eigen-embedding fails, e.g. large or strained ones).
* Optimisation uses MMFF94 when every atom has MMFF94 parameters, else UFF when every atom
  has UFF parameters. A molecule with an atom neither force field can type (noble gases,
  most heavy metals) is rejected with :class:`~molssl.chem.errors.UnsupportedElementError`
  when ``require_force_field`` is set (the default): its distance-geometry coordinates rest
  on made-up bounds, and training on them would teach the model an artefact. The force field
  used is recorded in the molecule property ``molssl_force_field``.
* A conformer whose atoms coincide (two atoms closer than ``min_interatomic_distance``) or
  whose coordinates are not finite is dropped; if none survives, the error says so. A
  conformer is never returned as silent zeros.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import rdDistGeom, rdForceFieldHelpers

from molssl.chem.errors import EmbeddingError, UnsupportedElementError

__all__ = ["ConformerOptions", "conformer_positions", "embed_conformers"]

# Prime stride between the seeds of successive attempts, so attempts never reuse a seed.
_SEED_STRIDE = 7919


@dataclass(frozen=True)
class ConformerOptions:
    """How conformers are generated.

    Attributes:
        num_conformers: Conformers to generate per molecule (at most this many are returned;
            at least one, or an error).
        seed: Random seed of the first attempt.
        max_attempts: Embedding attempts before giving up.
        timeout_s: ETKDG time limit per attempt, in whole seconds.
        optimize: Relax each conformer with MMFF94 (or UFF, see the module policy).
        max_optimize_iters: Force-field iteration limit per conformer.
        random_coords_fallback: Start attempts after the first from random coordinates.
        require_force_field: Reject molecules that neither MMFF94 nor UFF can type.
        min_interatomic_distance: Conformers with a closer pair of atoms (Å) are degenerate.
    """

    num_conformers: int = 1
    seed: int = 0
    max_attempts: int = 3
    timeout_s: int = 10
    optimize: bool = True
    max_optimize_iters: int = 500
    random_coords_fallback: bool = True
    require_force_field: bool = True
    min_interatomic_distance: float = 0.25

    def __post_init__(self) -> None:
        if self.num_conformers < 1:
            raise ValueError(f"num_conformers must be >= 1, got {self.num_conformers}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.timeout_s < 1:
            raise ValueError(f"timeout_s must be >= 1 second, got {self.timeout_s}")


def _force_field(mol: Chem.Mol) -> str | None:
    if rdForceFieldHelpers.MMFFHasAllMoleculeParams(mol):
        return "MMFF94"
    if rdForceFieldHelpers.UFFHasAllMoleculeParams(mol):
        return "UFF"
    return None


def _untyped_elements(mol: Chem.Mol) -> list[str]:
    # Per-atom check on single-atom fragments would be costly; the symbols of atoms outside
    # the organic set are what the message needs.
    organic = {"H", "B", "C", "N", "O", "F", "Si", "P", "S", "Cl", "Br", "I"}
    return sorted({a.GetSymbol() for a in mol.GetAtoms() if a.GetSymbol() not in organic})


def _is_degenerate(positions: np.ndarray, min_distance: float) -> bool:
    if not np.all(np.isfinite(positions)):
        return True
    if len(positions) < 2:
        return False
    diff = positions[:, None, :] - positions[None, :, :]
    dist = np.sqrt((diff**2).sum(-1))
    np.fill_diagonal(dist, np.inf)
    return bool(dist.min() < min_distance)


def _embed(mol: Chem.Mol, options: ConformerOptions, label: str) -> list[int]:
    elapsed_last = 0.0
    for attempt in range(options.max_attempts):
        params = rdDistGeom.ETKDGv3()
        params.randomSeed = options.seed + attempt * _SEED_STRIDE
        params.timeout = options.timeout_s
        params.numThreads = 1  # determinism and fairness with data-loader worker processes
        params.useRandomCoords = attempt > 0 and options.random_coords_fallback
        # Embedded separately, the fragments of a salt all land on the origin; embedded
        # together, distance bounds keep counter-ions apart.
        params.embedFragmentsSeparately = False
        start = time.perf_counter()
        # A failed embedding returns [-1] rather than an empty list.
        conf_ids = [
            cid
            for cid in rdDistGeom.EmbedMultipleConfs(mol, options.num_conformers, params)
            if cid >= 0
        ]
        elapsed_last = time.perf_counter() - start
        if conf_ids:
            return conf_ids
    if elapsed_last >= options.timeout_s:
        raise EmbeddingError(
            f"ETKDG timed out ({options.timeout_s} s per attempt, "
            f"{options.max_attempts} attempts) on {label!r}",
            reason="embedding_timeout",
        )
    raise EmbeddingError(
        f"ETKDG found no conformer for {label!r} in {options.max_attempts} attempts",
        reason="embedding_failed",
    )


def embed_conformers(mol: Chem.Mol, options: ConformerOptions | None = None) -> Chem.Mol:
    """Generates conformers for a molecule.

    Args:
        mol: A sanitised molecule, normally with explicit hydrogens.
        options: Generation settings; defaults to :class:`ConformerOptions()`.

    Returns:
        A copy of ``mol`` holding between 1 and ``options.num_conformers`` conformers,
        with the property ``molssl_force_field`` set to ``"MMFF94"``, ``"UFF"`` or ``"none"``.

    Raises:
        UnsupportedElementError: No force field types every atom (with
            ``require_force_field``).
        EmbeddingError: Embedding failed (``embedding_failed``), ran out of time
            (``embedding_timeout``), or produced only degenerate conformers
            (``degenerate_conformer``).
    """
    options = options or ConformerOptions()
    mol = Chem.Mol(mol)
    mol.RemoveAllConformers()
    label = Chem.MolToSmiles(Chem.RemoveHs(mol, sanitize=False))
    with rdBase.BlockLogs():
        force_field = _force_field(mol)
        if force_field is None and options.require_force_field:
            elements = ", ".join(_untyped_elements(mol)) or "some atoms"
            raise UnsupportedElementError(
                f"neither MMFF94 nor UFF has parameters for {elements} in {label!r}"
            )
        conf_ids = _embed(mol, options, label)
        if options.optimize and force_field == "MMFF94":
            rdForceFieldHelpers.MMFFOptimizeMoleculeConfs(
                mol, numThreads=1, maxIters=options.max_optimize_iters
            )
        elif options.optimize and force_field == "UFF":
            rdForceFieldHelpers.UFFOptimizeMoleculeConfs(
                mol, numThreads=1, maxIters=options.max_optimize_iters
            )
    bad = [
        cid
        for cid in conf_ids
        if _is_degenerate(mol.GetConformer(cid).GetPositions(), options.min_interatomic_distance)
    ]
    if len(bad) == len(conf_ids):
        raise EmbeddingError(
            f"every conformer of {label!r} has overlapping atoms or non-finite coordinates",
            reason="degenerate_conformer",
        )
    for cid in bad:
        mol.RemoveConformer(cid)
    # Renumber so conformer ids are 0..K-1 whatever was dropped.
    for new_id, conformer in enumerate(mol.GetConformers()):
        conformer.SetId(new_id)
    mol.SetProp("molssl_force_field", force_field if options.optimize and force_field else "none")
    return mol


def conformer_positions(mol: Chem.Mol) -> np.ndarray:
    """All conformers' coordinates as a ``(K, N, 3)`` float64 array (Å)."""
    if mol.GetNumConformers() == 0:
        raise ValueError("conformer_positions: the molecule has no conformer")
    return np.stack([np.asarray(c.GetPositions()) for c in mol.GetConformers()])

"""3D conformers: ETKDGv3 embedding + MMFF94 optimisation, seeded, bounded, and honest.

Policy:

* Embedding uses ETKDGv3 with a fixed seed, so the same molecule (same atom order) and the
  same :class:`ConformerOptions` give bit-identical coordinates.
* Up to ``max_attempts`` attempts are made with derived seeds, all within one per-molecule
  budget of ``timeout_s`` seconds: each attempt gets an equal share of what is left, enforced by
  ETKDG's own ``timeout`` (whole seconds, at least one, so the budget holds to about a second).
  Attempts after the first start from random coordinates when ``random_coords_fallback`` is
  set: ETKDG's remedy for molecules whose distance-bounds eigen-embedding fails (large or
  strained molecules, metal complexes such as hexaamminecobalt(III)).
* Optimisation uses MMFF94 when every atom has MMFF94 parameters, else UFF when every atom
  has UFF parameters (for example organomercury or cobalt complexes): a UFF-relaxed geometry
  is better training data than an unrelaxed ETKDG one. A molecule with an atom neither force
  field can type (noble gases, most heavy metals) is rejected with
  :class:`~molssl.chem.errors.UnsupportedElementError` when ``require_force_field`` is set (the
  default): its distance-geometry coordinates rest on made-up bounds, and training on them
  would teach the model an artefact. The force field used (``"MMFF94"``, ``"UFF"`` or
  ``"none"``) is recorded in the molecule property ``molssl_force_field``. Optimisation is
  bounded by ``max_optimize_iters``; a conformer that has not converged by then is kept.
* A conformer whose atoms coincide (two atoms closer than ``min_interatomic_distance``) or
  whose coordinates are not finite is dropped; if none survives, the error says so. A
  conformer is never returned as silent zeros.
* RDKit's C++ log is silenced per call; what it says about a failure (ETKDG's failure causes,
  the atom type a force field does not know) goes into the exception message.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdDistGeom, rdForceFieldHelpers

from molssl.chem.errors import EmbeddingError, UnsupportedElementError
from molssl.chem.rdkit_log import quiet_rdkit

__all__ = ["ConformerOptions", "conformer_positions", "embed_conformers", "etkdg_parameters"]

# Prime stride between the seeds of successive attempts, so attempts never reuse a seed.
_SEED_STRIDE = 7919
# ETKDG's failure counters come back as a list ordered by the enum's values.
_FAILURE_CAUSES = tuple(
    name
    for name, _ in sorted(rdDistGeom.EmbedFailureCauses.names.items(), key=lambda kv: int(kv[1]))
)


@dataclass(frozen=True)
class ConformerOptions:
    """How conformers are generated.

    Attributes:
        num_conformers: Conformers to generate per molecule (at most this many are returned;
            at least one, or an error).
        seed: Random seed of the first attempt.
        max_attempts: Embedding attempts before giving up.
        timeout_s: Time budget of all embedding attempts of one molecule, in seconds.
        optimize: Relax each conformer with MMFF94 (or UFF, see the module policy).
        max_optimize_iters: Force-field iteration limit per conformer.
        random_coords_fallback: Start attempts after the first from random coordinates.
        require_force_field: Reject molecules that neither MMFF94 nor UFF can type.
        min_interatomic_distance: Conformers with a closer pair of atoms (Å) are degenerate.
    """

    num_conformers: int = 1
    seed: int = 0
    max_attempts: int = 3
    timeout_s: float = 10.0
    optimize: bool = True
    max_optimize_iters: int = 500
    random_coords_fallback: bool = True
    require_force_field: bool = True
    min_interatomic_distance: float = 0.25

    def __post_init__(self) -> None:
        if self.num_conformers < 1:
            raise ValueError(f"num_conformers must be >= 1, got {self.num_conformers}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {self.timeout_s}")
        if self.max_optimize_iters < 1:
            raise ValueError(f"max_optimize_iters must be >= 1, got {self.max_optimize_iters}")


@dataclass
class _Typing:
    """Which force field can relax a molecule, and what typing it cost, for reuse.

    ``typed`` is a copy of the molecule that the typers have run on (MMFF94's set-up
    re-perceives aromaticity in place, so never the caller's molecule); ``mmff`` holds its
    MMFF94 atom types when ``force_field == "MMFF94"``, so the optimisation builds its force
    field from them instead of typing the molecule a second time.
    """

    force_field: str | None
    typed: Chem.Mol
    mmff: object | None


def _type_atoms(mol: Chem.Mol) -> _Typing:
    typed = Chem.Mol(mol)
    # None exactly when MMFFHasAllMoleculeParams is False (both build the same properties).
    mmff = rdForceFieldHelpers.MMFFGetMoleculeProperties(typed)
    if mmff is not None:
        return _Typing("MMFF94", typed, mmff)
    if rdForceFieldHelpers.UFFHasAllMoleculeParams(typed):
        return _Typing("UFF", typed, None)
    return _Typing(None, typed, None)


def _label(mol: Chem.Mol) -> str:
    # Only for error messages: a canonical SMILES costs as much as the features of an atom
    # list, so it is written only when something failed.
    return Chem.MolToSmiles(Chem.RemoveHs(mol, sanitize=False))


def _is_degenerate(positions: np.ndarray, min_distance: float) -> bool:
    if not np.all(np.isfinite(positions)):
        return True
    if len(positions) < 2:
        return False
    diff = positions[:, None, :] - positions[None, :, :]
    dist = np.sqrt((diff**2).sum(-1))
    np.fill_diagonal(dist, np.inf)
    return bool(dist.min() < min_distance)


def _describe(causes: Counter[str]) -> str:
    if not causes:
        return "no failure cause reported"
    return ", ".join(f"{name} x{count}" for name, count in causes.most_common())


def etkdg_parameters(
    options: ConformerOptions, attempt: int, timeout_s: float
) -> rdDistGeom.EmbedParameters:
    """The ETKDGv3 settings of embedding attempt ``attempt`` (0-based) under ``options``.

    Args:
        options: Conformer settings (seed, random-coordinates fallback).
        attempt: Which attempt; each has its own seed, and attempts after the first start
            from random coordinates when ``options.random_coords_fallback`` is set.
        timeout_s: This attempt's share of the time budget (ETKDG counts whole seconds, at
            least one).
    """
    params = rdDistGeom.ETKDGv3()
    # ETKDG returns copies of one conformer for randomSeed 0, hence the + 1.
    params.randomSeed = options.seed + 1 + attempt * _SEED_STRIDE
    params.timeout = max(1, int(timeout_s))
    params.numThreads = 1  # determinism and fairness with data-loader worker processes
    params.useRandomCoords = attempt > 0 and options.random_coords_fallback
    params.trackFailures = True
    # Embedded separately, the fragments of a salt all land on the origin; embedded
    # together, distance bounds keep counter-ions apart.
    params.embedFragmentsSeparately = False
    return params


def _embed(mol: Chem.Mol, options: ConformerOptions) -> list[int]:
    deadline = time.monotonic() + options.timeout_s
    causes: Counter[str] = Counter()
    attempts_made = 0
    for attempt in range(options.max_attempts):
        remaining = deadline - time.monotonic()
        if remaining <= 0:  # reported below as a timeout: fewer attempts than allowed
            break
        params = etkdg_parameters(options, attempt, remaining / (options.max_attempts - attempt))
        try:
            embedded = rdDistGeom.EmbedMultipleConfs(mol, options.num_conformers, params)
        except (RuntimeError, ValueError) as error:
            raise EmbeddingError(
                f"ETKDG cannot embed {_label(mol)!r}: {error}", reason="embedding_failed"
            ) from None
        attempts_made += 1
        # A failed embedding returns [-1] or an empty list, depending on the failure.
        conf_ids = [cid for cid in embedded if cid >= 0]
        if conf_ids:
            return conf_ids
        counts = zip(_FAILURE_CAUSES, params.GetFailureCounts(), strict=False)
        causes.update({name: count for name, count in counts if count})
    budget = f"{options.timeout_s:g} s budget, {attempts_made} attempt(s)"
    label = _label(mol)
    if causes["EXCEEDED_TIMEOUT"] or attempts_made < options.max_attempts:
        raise EmbeddingError(
            f"ETKDG ran out of time on {label!r} ({budget}; {_describe(causes)})",
            reason="embedding_timeout",
        )
    raise EmbeddingError(
        f"ETKDG found no conformer for {label!r} ({budget}; {_describe(causes)})",
        reason="embedding_failed",
    )


def _optimize(mol: Chem.Mol, typing: _Typing, max_iters: int) -> None:
    # MMFF94's set-up re-perceives aromaticity on the molecule it is given (e.g. some
    # 2-iminothiazolines lose aromatic flags), which would change the features read from the
    # returned molecule: relax a copy and take back only its coordinates. For MMFF94 that copy
    # is the one already typed; UFF relaxes a fresh copy, as its typer sees the molecule
    # before MMFF94's aromaticity (what RDKit's UFFOptimizeMoleculeConfs on it would do).
    try:
        if typing.force_field == "MMFF94":
            work = typing.typed
            for conformer in mol.GetConformers():
                work.AddConformer(conformer, assignId=False)
            force_field = rdForceFieldHelpers.MMFFGetMoleculeForceField(work, typing.mmff)
            # The same minimisation as MMFFOptimizeMoleculeConfs, without typing again.
            rdForceFieldHelpers.OptimizeMoleculeConfs(
                work, force_field, numThreads=1, maxIters=max_iters
            )
        else:
            work = Chem.Mol(mol)
            rdForceFieldHelpers.UFFOptimizeMoleculeConfs(work, numThreads=1, maxIters=max_iters)
    except (RuntimeError, ValueError) as error:
        raise EmbeddingError(
            f"{typing.force_field} optimisation failed on {_label(mol)!r}: {error}",
            reason="force_field_failed",
        ) from None
    for relaxed in work.GetConformers():
        mol.GetConformer(relaxed.GetId()).SetPositions(relaxed.GetPositions())


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
    with quiet_rdkit() as log:
        typing = _type_atoms(mol)
        force_field = typing.force_field
        if force_field is None and options.require_force_field:
            detail = log.summary()
            raise UnsupportedElementError(
                f"neither MMFF94 nor UFF has parameters for every atom of {_label(mol)!r}"
                + (f" (RDKit: {detail})" if detail else "")
            )
        conf_ids = _embed(mol, options)
        if options.optimize and force_field is not None:
            _optimize(mol, typing, options.max_optimize_iters)
    bad = [
        cid
        for cid in conf_ids
        if _is_degenerate(mol.GetConformer(cid).GetPositions(), options.min_interatomic_distance)
    ]
    if len(bad) == len(conf_ids):
        raise EmbeddingError(
            f"every conformer of {_label(mol)!r} has overlapping atoms or non-finite coordinates",
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

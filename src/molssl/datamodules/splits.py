"""Train/validation/test splits of a dataset: seeded random, and scaffold splits.

All splits return a :class:`SplitIndices` ``(train, val, test)`` of sorted int64 index arrays
that are disjoint and together cover ``range(n)``.

Scaffold splits group molecules by Bemis-Murcko scaffold (:func:`molssl.chem.scaffold.
murcko_scaffold`, stereo dropped) and never put one scaffold in two splits:

* deterministic (default), as MoleculeNet/chemprop: scaffold sets sorted largest first (ties:
  the set whose first molecule comes first), each set goes to train if it still fits in
  ``fractions[0] * n``, else to validation if it fits in ``fractions[1] * n``, else to test.
  Acyclic molecules share the empty scaffold and form one set.
* ``balanced=True``, as chemprop's balanced scaffold split: sets larger than half the
  validation or half the test size are placed first (in seeded random order), then the
  others (seeded random order), with the same filling rule. Different seeds give different
  splits, which is what "scaffold split, 3 seeds" needs.

Invalid SMILES are not skipped: dropping them would shift every later index and misalign
labels. :func:`scaffold_split` raises :class:`InvalidSplitInputError`, which lists every bad
index with its reason; filter the dataset first (keeping your own index map) and split the
valid molecules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from molssl.chem.errors import InvalidSmilesError, MoleculeError
from molssl.chem.scaffold import murcko_scaffold
from molssl.errors import UserError

__all__ = [
    "InvalidSplitInputError",
    "SplitIndices",
    "random_split",
    "scaffold_sets",
    "scaffold_split",
]

_FRACTION_TOLERANCE = 1e-6
_MAX_LISTED = 10


class SplitIndices(NamedTuple):
    """Sorted int64 indices of each split."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


class InvalidSplitInputError(InvalidSmilesError):
    """Some SMILES of a dataset to split have no scaffold.

    Attributes:
        failures: ``{index: reason}`` for every bad entry (reason codes of
            :mod:`molssl.chem.errors`, e.g. ``invalid_smiles``, ``empty_input``).
    """

    def __init__(
        self, message: str, reason: str | None = None, failures: dict[int, str] | None = None
    ) -> None:
        super().__init__(message, reason)
        self.failures: dict[int, str] = dict(failures or {})

    def __reduce__(self) -> tuple[type, tuple[str, str, dict[int, str]]]:
        return (type(self), (str(self), self.reason, self.failures))


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or any(not math.isfinite(f) or f < 0 for f in values):
        raise UserError(f"fractions must be three non-negative numbers, got {fractions!r}")
    if abs(sum(values) - 1.0) > _FRACTION_TOLERANCE:
        raise UserError(f"fractions must sum to 1, got {fractions!r} (sum {sum(values)})")
    return values  # type: ignore[return-value]


def _sorted_split(train: list[int], val: list[int], test: list[int]) -> SplitIndices:
    return SplitIndices(*(np.array(sorted(part), dtype=np.int64) for part in (train, val, test)))


def random_split(
    n: int, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> SplitIndices:
    """Seeded uniform random split of ``range(n)``.

    Sizes are ``floor(fractions[0] * n)`` for train, ``floor((f0 + f1) * n) - train`` for
    validation and the rest for test.

    Args:
        n: Number of samples.
        fractions: Train, validation and test fractions (sum to 1).
        seed: Seed of NumPy's ``default_rng``; the same seed gives the same split.

    Raises:
        ValueError: On a negative ``n`` or bad ``fractions``.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    f_train, f_val, _ = _check_fractions(fractions)
    order = np.random.default_rng(seed).permutation(n)
    # The epsilon keeps 0.7 * 10 = 7.000000000000001 and 0.3 * 10 = 2.9999999999999996 exact.
    train_end = min(n, math.floor(f_train * n + 1e-9))
    val_end = min(n, math.floor((f_train + f_val) * n + 1e-9))
    return _sorted_split(
        order[:train_end].tolist(), order[train_end:val_end].tolist(), order[val_end:].tolist()
    )


def scaffold_sets(smiles: Sequence[str], include_chirality: bool = False) -> dict[str, list[int]]:
    """Indices of the molecules of every scaffold, in order of first appearance.

    Raises:
        InvalidSplitInputError: Listing every index whose SMILES has no scaffold.
    """
    sets: dict[str, list[int]] = {}
    failures: dict[int, str] = {}
    messages: list[str] = []
    for index, text in enumerate(smiles):
        try:
            scaffold = murcko_scaffold(text, include_chirality=include_chirality)
        except MoleculeError as error:
            failures[index] = error.reason
            messages.append(f"#{index}: {error}")
            continue
        sets.setdefault(scaffold, []).append(index)
    if failures:
        listed = "; ".join(messages[:_MAX_LISTED])
        more = f" (and {len(failures) - _MAX_LISTED} more)" if len(failures) > _MAX_LISTED else ""
        raise InvalidSplitInputError(
            f"{len(failures)} of {len(smiles)} SMILES have no scaffold, at indices "
            f"{sorted(failures)[:_MAX_LISTED]}{more}: {listed}",
            failures=failures,
        )
    return sets


def scaffold_split(
    smiles: Sequence[str],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    balanced: bool = False,
    seed: int = 0,
    include_chirality: bool = False,
) -> SplitIndices:
    """Scaffold split (see the module docstring for the two orders).

    Args:
        smiles: One SMILES per sample, in dataset order.
        fractions: Target train, validation and test fractions (sum to 1); the split sizes
            follow them only as closely as whole scaffold sets allow.
        balanced: Seeded random order of scaffold sets (big sets first) instead of the
            deterministic largest-first order.
        seed: Seed of the balanced order; ignored when ``balanced`` is False.
        include_chirality: Group stereoisomeric scaffolds apart.

    Raises:
        InvalidSplitInputError: If any SMILES is invalid (every bad index is listed).
        ValueError: On bad ``fractions``.
    """
    f_train, f_val, f_test = _check_fractions(fractions)
    n = len(smiles)
    train_size, val_size, test_size = f_train * n, f_val * n, f_test * n
    sets = list(scaffold_sets(smiles, include_chirality=include_chirality).values())
    if balanced:
        rng = np.random.default_rng(seed)
        big = [s for s in sets if len(s) > val_size / 2 or len(s) > test_size / 2]
        small = [s for s in sets if not (len(s) > val_size / 2 or len(s) > test_size / 2)]
        ordered = [big[i] for i in rng.permutation(len(big))]
        ordered += [small[i] for i in rng.permutation(len(small))]
    else:
        # Sets are in order of first appearance, so the stable sort breaks ties by it.
        ordered = sorted(sets, key=lambda members: -len(members))
    train: list[int] = []
    val: list[int] = []
    test: list[int] = []
    for members in ordered:
        if len(train) + len(members) <= train_size:
            train += members
        elif len(val) + len(members) <= val_size:
            val += members
        else:
            test += members
    return _sorted_split(train, val, test)

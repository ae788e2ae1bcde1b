"""Seeded random splits by size: absolute counts (QM9's 110k/10k, MD17's 950/50) or fractions.

:func:`molssl.datamodules.splits.random_split` takes fractions only; the quantum benchmarks are
defined by counts ("train on 950 frames, validate on 50, test on the rest"), so this module
turns a count or a fraction into sizes and draws the same kind of split.
"""

from __future__ import annotations

import math

import numpy as np
from jsonargparse.typing import ClosedUnitInterval

from molssl.datamodules.splits import SplitIndices
from molssl.errors import UserError

__all__ = ["SplitSize", "resolve_size", "sized_random_split"]

#: A split size: an ``int`` counts samples, a ``float`` in [0, 1] is a fraction. Annotated with
#: jsonargparse's ``ClosedUnitInterval`` rather than ``float``: ``typing`` caches unions
#: regardless of the order of their members, so once Lightning's Trainer has made
#: ``Optional[Union[float, int]]`` an ``int | float | None`` annotation parses
#: ``--data.init_args.train_size=1000`` as the float 1000.0 (then refused as a fraction). With
#: this type ``1000`` stays a count and ``0.5`` a fraction, from YAML and the command line.
SplitSize = int | ClosedUnitInterval


def resolve_size(size: SplitSize, n: int, name: str) -> int:
    """Number of samples meant by ``size``: an int is a count, a float in ``[0, 1]`` a fraction.

    Raises:
        ValueError: A negative size, a fraction above 1, or a count above ``n``.
    """
    if isinstance(size, bool):
        raise UserError(f"{name} must be a count (int) or a fraction (float), got {size!r}")
    if isinstance(size, int):
        count = size
    else:
        fraction = float(size)
        if not (math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
            raise UserError(f"{name} as a fraction must lie in [0, 1], got {size!r}")
        # The epsilon keeps 0.8 * 10 = 8 exact instead of 7.999999999999999.
        count = math.floor(fraction * n + 1e-9)
    if count < 0:
        raise UserError(f"{name} must be non-negative, got {size!r}")
    return count


def sized_random_split(
    n: int, train_size: SplitSize, val_size: SplitSize, seed: int = 0
) -> SplitIndices:
    """Seeded uniform random split of ``range(n)`` into train, validation and the rest.

    Args:
        n: Number of samples.
        train_size: Training samples, as a count (int) or a fraction of ``n`` (float).
        val_size: Validation samples, as a count or a fraction of ``n``.
        seed: Seed of NumPy's ``default_rng``; the same seed gives the same split.

    Returns:
        Sorted int64 ``(train, val, test)`` indices; the test split is everything left.

    Raises:
        ValueError: If train and validation together do not leave at least one test sample.
    """
    n_train = resolve_size(train_size, n, "train_size")
    n_val = resolve_size(val_size, n, "val_size")
    if n_train + n_val >= n:
        raise UserError(
            f"a split of {n_train} train + {n_val} validation samples leaves no test sample "
            f"among {n}; pass smaller train_size / val_size (counts or fractions)"
        )
    order = np.random.default_rng(seed).permutation(n)
    parts = (order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :])
    return SplitIndices(*(np.sort(part).astype(np.int64) for part in parts))

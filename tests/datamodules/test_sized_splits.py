"""Seeded random splits by count or fraction."""

from __future__ import annotations

import numpy as np
import pytest

from molssl.datamodules.sized_splits import resolve_size, sized_random_split


def test_counts_and_fractions_give_disjoint_covering_splits() -> None:
    split = sized_random_split(1000, 950, 0.03, seed=3)
    assert (len(split.train), len(split.val), len(split.test)) == (950, 30, 20)
    joined = np.concatenate(split)
    assert sorted(joined.tolist()) == list(range(1000))
    for part in split:
        assert part.dtype == np.int64 and np.all(np.diff(part) > 0)


def test_same_seed_same_split_other_seed_other_split() -> None:
    a, b = sized_random_split(100, 80, 10, seed=0), sized_random_split(100, 80, 10, seed=0)
    c = sized_random_split(100, 80, 10, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a.train, c.train)


def test_fraction_rounding_is_exact_for_decimal_fractions() -> None:
    assert resolve_size(0.8, 10, "train_size") == 8
    assert resolve_size(0.1, 10, "val_size") == 1


@pytest.mark.parametrize(
    ("train", "val", "match"),
    [
        (950, 50, "no test sample"),
        (-1, 5, "non-negative"),
        (1.5, 5, r"\[0, 1\]"),
        (True, 5, "count"),
    ],
)
def test_bad_sizes_are_clear_errors(train: int | float, val: int | float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sized_random_split(1000, train, val)

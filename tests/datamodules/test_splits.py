"""Random and scaffold splits on FreeSolv (../shared/data) and RDKit's NCI molecules."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
import pytest

from molssl.chem.errors import InvalidSmilesError
from molssl.chem.scaffold import murcko_scaffold
from molssl.datamodules.splits import (
    InvalidSplitInputError,
    SplitIndices,
    random_split,
    scaffold_sets,
    scaffold_split,
)


def assert_partition(split: SplitIndices, n: int) -> None:
    """Disjoint, sorted int64 parts that together cover range(n)."""
    for part in split:
        assert part.dtype == np.int64
        assert (np.diff(part) > 0).all()
    merged = np.concatenate(list(split))
    assert len(merged) == n
    np.testing.assert_array_equal(np.sort(merged), np.arange(n))


def assert_scaffolds_not_shared(split: SplitIndices, smiles: list[str]) -> None:
    per_part = [{murcko_scaffold(smiles[i]) for i in part} for part in split]
    assert not per_part[0] & per_part[1]
    assert not per_part[0] & per_part[2]
    assert not per_part[1] & per_part[2]


@pytest.fixture(scope="module")
def freesolv_smiles(shared_data: Path) -> list[str]:
    with open(shared_data / "freesolv.csv", newline="") as fh:
        return [row["smiles"] for row in csv.DictReader(fh)]


def test_random_split_is_a_seeded_partition() -> None:
    split = random_split(1000, (0.8, 0.1, 0.1), seed=3)
    assert_partition(split, 1000)
    assert [len(p) for p in split] == [800, 100, 100]
    again = random_split(1000, (0.8, 0.1, 0.1), seed=3)
    for a, b in zip(split, again, strict=True):
        np.testing.assert_array_equal(a, b)
    other = random_split(1000, (0.8, 0.1, 0.1), seed=4)
    assert not np.array_equal(split.train, other.train)


@pytest.mark.parametrize(
    ("n", "fractions", "sizes"),
    [
        (10, (0.7, 0.0, 0.3), [7, 0, 3]),
        (10, (0.8, 0.1, 0.1), [8, 1, 1]),
        (5, (0.6, 0.2, 0.2), [3, 1, 1]),
        (3, (0.7, 0.0, 0.3), [2, 0, 1]),
        (0, (0.8, 0.1, 0.1), [0, 0, 0]),
    ],
)
def test_random_split_sizes_at_float_edges(
    n: int, fractions: tuple[float, float, float], sizes: list[int]
) -> None:
    split = random_split(n, fractions, seed=0)
    assert_partition(split, n)
    assert [len(p) for p in split] == sizes


@pytest.mark.parametrize(
    "fractions", [(0.8, 0.1), (0.8, 0.1, 0.2), (1.2, -0.1, -0.1), (float("nan"), 0.5, 0.5)]
)
def test_bad_fractions_are_rejected(fractions: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="fractions"):
        random_split(10, fractions)
    with pytest.raises(ValueError, match="fractions"):
        scaffold_split(["CCO", "c1ccccc1"], fractions)


def test_deterministic_scaffold_split_fills_largest_sets_first() -> None:
    benzenes = ["c1ccccc1C", "c1ccccc1CC", "c1ccccc1O", "c1ccccc1N", "c1ccccc1F"]
    pyridines = ["c1ccncc1C", "c1ccncc1O", "c1ccncc1N"]
    smiles = ["C1CCCCC1O", *benzenes, "C1CCOC1C", *pyridines]  # sets of 5, 3, 1, 1
    split = scaffold_split(smiles, (0.5, 0.3, 0.2))
    assert split.train.tolist() == [1, 2, 3, 4, 5]  # benzene set (5) fits train (5)
    assert split.val.tolist() == [7, 8, 9]  # pyridines (3) fit validation (3)
    assert split.test.tolist() == [0, 6]  # singletons: nothing left elsewhere
    # Equal sizes: the set seen first goes first.
    tie = scaffold_split(["C1CCCCC1O", "c1ccccc1C", "c1ccccc1O", "C1CCCCC1N"], (0.5, 0.5, 0.0))
    assert tie.train.tolist() == [0, 3] and tie.val.tolist() == [1, 2]


def test_scaffold_split_on_nci(nci_smiles: list[str]) -> None:
    split = scaffold_split(nci_smiles)
    assert_partition(split, len(nci_smiles))
    assert_scaffolds_not_shared(split, nci_smiles)
    assert len(split.train) <= 0.8 * len(nci_smiles) and len(split.train) > 0.7 * len(nci_smiles)
    again = scaffold_split(list(nci_smiles))
    for a, b in zip(split, again, strict=True):
        np.testing.assert_array_equal(a, b)
    # Largest-first: the biggest scaffold set is in train.
    sets = scaffold_sets(nci_smiles)
    largest = max(sets.values(), key=len)
    assert set(largest) <= set(split.train.tolist())


def test_scaffold_split_on_freesolv(freesolv_smiles: list[str]) -> None:
    n = len(freesolv_smiles)
    assert n > 600
    for balanced in (False, True):
        split = scaffold_split(freesolv_smiles, balanced=balanced, seed=1)
        assert_partition(split, n)
        assert_scaffolds_not_shared(split, freesolv_smiles)
        assert len(split.val) > 0 and len(split.test) > 0


def test_balanced_scaffold_split_is_seeded(nci_smiles: list[str]) -> None:
    first = scaffold_split(nci_smiles, balanced=True, seed=0)
    assert_partition(first, len(nci_smiles))
    assert_scaffolds_not_shared(first, nci_smiles)
    same = scaffold_split(nci_smiles, balanced=True, seed=0)
    for a, b in zip(first, same, strict=True):
        np.testing.assert_array_equal(a, b)
    other = scaffold_split(nci_smiles, balanced=True, seed=1)
    assert not np.array_equal(first.test, other.test)


def test_invalid_smiles_are_reported_not_skipped(nci_smiles: list[str]) -> None:
    smiles = list(nci_smiles[:20])
    smiles[3] = "C1CC"
    smiles[11] = ""
    with pytest.raises(InvalidSplitInputError) as info:
        scaffold_split(smiles)
    error = info.value
    assert isinstance(error, InvalidSmilesError)
    assert error.failures == {3: "invalid_smiles", 11: "empty_input"}
    assert "[3, 11]" in str(error)
    restored = pickle.loads(pickle.dumps(error))
    assert restored.failures == error.failures and restored.reason == error.reason

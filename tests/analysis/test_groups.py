"""Groups for the Davies-Bouldin index, against scikit-learn and counting by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import davies_bouldin_score

from molssl.analysis.groups import NO_GROUP, davies_bouldin, group_by_bins, group_by_value
from molssl.chem.scaffold import murcko_scaffold
from tests.conftest import read_nci_smiles


def test_scaffold_groups_of_nci_molecules() -> None:
    scaffolds = [murcko_scaffold(s) for s in read_nci_smiles(120)]
    grouping = group_by_value(scaffolds, min_size=3, skip="", skip_name="acyclic")
    counts = {s: scaffolds.count(s) for s in set(scaffolds) if s}
    kept = {s for s, c in counts.items() if c >= 3}
    assert set(grouping.names) == kept and len(kept) >= 2
    assert grouping.counts == sorted(grouping.counts, reverse=True)
    for i, scaffold in enumerate(scaffolds):
        group = grouping.assignment[i]
        if scaffold in kept:
            assert grouping.names[group] == scaffold
        else:
            assert group == NO_GROUP
    assert grouping.excluded["acyclic"] == scaffolds.count("")
    assert grouping.excluded["groups_below_3"] == sum(c for c in counts.values() if c < 3)


def test_davies_bouldin_matches_sklearn_on_the_grouped_rows() -> None:
    rng = np.random.default_rng(0)
    values = ["a"] * 6 + ["b"] * 5 + ["c"] * 2 + [""] * 3
    points = rng.normal(size=(len(values), 4))
    grouping = group_by_value(values, min_size=3)
    index, note = davies_bouldin(points, grouping)
    assert index == pytest.approx(davies_bouldin_score(points[:11], values[:11]))
    assert note == "2 groups, 11 molecules"
    alone, note = davies_bouldin(points, group_by_value(values, min_size=6))
    assert alone is None and "not computed" in note


def test_quantile_bins() -> None:
    values = [str(v) for v in np.linspace(-10, 10, 50)] + ["", "nan"]
    grouping = group_by_bins(values, bins=5)
    assert grouping.counts == [10] * 5
    assert grouping.excluded == {"missing": 2}
    assert list(grouping.assignment[:50]) == [i // 10 for i in range(50)]
    assert grouping.names[0] == "[-10, -6)" and grouping.names[-1] == "[6, 10]"
    ties = group_by_bins(["1"] * 8 + ["2"] * 2, bins=4)
    assert sum(ties.counts) == 10 and len(ties.names) == len(set(ties.assignment.tolist()))
    with pytest.raises(ValueError, match="bins"):
        group_by_bins(values, bins=1)

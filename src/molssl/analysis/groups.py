"""Groups of molecules (scaffolds, label classes, label bins) and their Davies-Bouldin index.

The paper's Figures 4 and 5 colour a t-SNE map by scaffold or by the downstream label and
quote the Davies-Bouldin index of that grouping (lower: tighter, better separated groups).
Here the index is computed on the embeddings themselves (the space the model defines; t-SNE's
map distorts distances) over the groups with at least ``min_size`` members, so that
singleton scaffolds do not dominate it; it is also reported on the t-SNE map for comparison.

* Scaffold: one group per Bemis-Murcko scaffold; acyclic molecules (empty scaffold) form no
  group, they have nothing in common but lacking rings.
* Class labels: one group per value; missing labels form no group.
* Continuous labels: ``bins`` quantile bins of the present values.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import davies_bouldin_score

from molssl.analysis.labels import parse_number

__all__ = ["Grouping", "davies_bouldin", "group_by_bins", "group_by_value"]

#: Group index of molecules in no group.
NO_GROUP = -1


@dataclass
class Grouping:
    """Group index of every molecule, ``-1`` for none.

    Attributes:
        assignment: ``(M,)`` int64.
        names: Group names, by index.
        counts: Members per group, by index.
        excluded: Why molecules are in no group, with their counts.
    """

    assignment: np.ndarray
    names: list[str]
    counts: list[int]
    excluded: dict[str, int] = field(default_factory=dict)


def group_by_value(
    values: Sequence[str], min_size: int, skip: str = "", skip_name: str = "missing"
) -> Grouping:
    """One group per distinct value with at least ``min_size`` members (largest first).

    Args:
        values: The value of each molecule (scaffold SMILES or label text).
        min_size: Smallest group kept.
        skip: A value that never forms a group (the acyclic scaffold ``""``).
        skip_name: How the molecules with that value are reported in ``excluded``.
    """
    counts = Counter(value for value in values if value != skip)
    # Largest first, ties by name: the same order for the same data whatever its order.
    kept = sorted(
        (item for item in counts.items() if item[1] >= min_size), key=lambda kv: (-kv[1], kv[0])
    )
    index = {name: i for i, (name, _) in enumerate(kept)}
    assignment = np.array([index.get(value, NO_GROUP) for value in values], dtype=np.int64)
    excluded = {
        skip_name: sum(value == skip for value in values),
        f"groups_below_{min_size}": sum(c for c in counts.values() if c < min_size),
    }
    return Grouping(
        assignment=assignment,
        names=[name for name, _ in kept],
        counts=[count for _, count in kept],
        excluded={k: v for k, v in excluded.items() if v},
    )


def group_by_bins(values: Sequence[str], bins: int) -> Grouping:
    """Quantile bins of continuous labels; missing and non-numeric labels form no group.

    Bin ``b`` holds the values between the ``b/bins`` and ``(b+1)/bins`` quantiles (the top
    edge included in the last bin); equal edges (many tied values) merge bins.
    """
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    numbers = np.array([parse_number(value) for value in values], dtype=np.float64)
    present = ~np.isnan(numbers)
    assignment = np.full(len(values), NO_GROUP, dtype=np.int64)
    if not present.any():
        return Grouping(assignment, [], [], {"missing": len(values)} if len(values) else {})
    edges = np.unique(np.quantile(numbers[present], np.linspace(0.0, 1.0, bins + 1)))
    inner = edges[1:-1]
    assignment[present] = np.searchsorted(inner, numbers[present], side="right")
    used = sorted(set(assignment[present].tolist()))
    renumber = {old: new for new, old in enumerate(used)}
    assignment[present] = [renumber[int(b)] for b in assignment[present]]
    last = len(edges) - 1
    names = [
        f"[{edges[b]:.3g}, {edges[min(b + 1, last)]:.3g}{']' if b + 1 >= last else ')'}"
        for b in used
    ]
    counts = [int((assignment == renumber[b]).sum()) for b in used]
    missing = int((~present).sum())
    return Grouping(assignment, names, counts, {"missing": missing} if missing else {})


def davies_bouldin(points: np.ndarray, grouping: Grouping) -> tuple[float | None, str]:
    """scikit-learn's Davies-Bouldin index of the grouped rows of ``points``.

    Returns:
        ``(index, note)``: ``index`` is ``None`` when fewer than two groups (or too few
        molecules) are left, and ``note`` says why; else ``note`` says what it was computed on.
    """
    member = grouping.assignment != NO_GROUP
    groups = len(set(grouping.assignment[member].tolist()))
    count = int(member.sum())
    if groups < 2 or count <= groups:
        return None, (
            f"not computed: {groups} group(s) over {count} molecule(s); the index needs at "
            "least two groups and more molecules than groups"
        )
    index = float(davies_bouldin_score(points[member], grouping.assignment[member]))
    if not math.isfinite(index):
        return None, "not computed: the index is not finite (identical group centroids)"
    return index, f"{groups} groups, {count} molecules"

"""tsne_map: seeded, small inputs handled, neighbourhoods kept; the PNG writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from molssl.analysis.groups import group_by_value
from molssl.analysis.plot import plot_continuous, plot_groups
from molssl.analysis.tsne import effective_perplexity, tsne_map


def blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=20.0, size=(3, 8))
    labels = np.repeat(np.arange(3), 15)
    return centres[labels] + rng.normal(size=(len(labels), 8)), labels


def test_seeded_and_keeps_separated_groups_apart() -> None:
    points, labels = blobs()
    first = tsne_map(points, perplexity=10, seed=0)
    assert first.shape == (45, 2) and first.dtype == np.float32
    np.testing.assert_array_equal(first, tsne_map(points, perplexity=10, seed=0))
    distances = np.linalg.norm(first[:, None] - first[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    assert (labels[distances.argmin(axis=1)] == labels).all()


def test_small_inputs() -> None:
    assert effective_perplexity(30.0, 1000) == 30.0
    assert effective_perplexity(30.0, 10) == 3.0
    assert tsne_map(blobs()[0][:5], seed=0).shape == (5, 2)
    with pytest.raises(ValueError, match="at least 4"):
        tsne_map(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="perplexity"):
        effective_perplexity(0.0, 10)


def test_png_writers(tmp_path: Path) -> None:
    points, labels = blobs()
    coords = points[:, :2]
    grouping = group_by_value([f"g{label}" for label in labels], min_size=1)
    path = plot_groups(coords, grouping, top_k=2, path=tmp_path / "groups.png", title="t")
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 500 and image[..., :3].std() > 0.01
    values = labels.astype(float)
    values[0] = np.nan
    path = plot_continuous(coords, values, tmp_path / "values.png", title="t", label="y")
    assert imread(path)[..., :3].std() > 0.01

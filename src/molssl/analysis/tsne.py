"""2-D t-SNE map of embeddings (scikit-learn), seeded and with a perplexity that fits ``M``."""

from __future__ import annotations

import numpy as np
from sklearn.manifold import TSNE

__all__ = ["MIN_TSNE_MOLECULES", "effective_perplexity", "tsne_map"]

#: Fewest molecules a map is drawn for: t-SNE needs a perplexity below ``M - 1``.
MIN_TSNE_MOLECULES = 4


def effective_perplexity(perplexity: float, num_points: int) -> float:
    """``perplexity``, lowered to ``(M - 1) / 3`` for small ``M``.

    scikit-learn requires ``perplexity < M``; a third of the neighbours keeps the
    neighbourhoods local, as the usual 30 does for thousands of points.
    """
    if perplexity <= 0:
        raise ValueError(f"perplexity must be > 0, got {perplexity}")
    return float(min(perplexity, (num_points - 1) / 3.0))


def tsne_map(embeddings: np.ndarray, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """``(M, 2)`` float32 t-SNE coordinates of ``(M, D)`` embeddings.

    PCA initialisation and a fixed ``random_state``: the same input and seed give the same map.

    Raises:
        ValueError: Fewer than :data:`MIN_TSNE_MOLECULES` rows, or a perplexity <= 0.
    """
    count = len(embeddings)
    if count < MIN_TSNE_MOLECULES:
        raise ValueError(f"t-SNE needs at least {MIN_TSNE_MOLECULES} molecules, got {count}")
    tsne = TSNE(
        n_components=2,
        perplexity=effective_perplexity(perplexity, count),
        init="pca",
        learning_rate="auto",
        random_state=seed,
    )
    return tsne.fit_transform(np.asarray(embeddings, dtype=np.float64)).astype(np.float32)

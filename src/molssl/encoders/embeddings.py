"""Embeddings of the categorical atom and bond feature columns of :mod:`molssl.chem.features`.

Each column ``k`` (vocabulary size ``dims[k]``, last bucket "other") has its own embedding table;
an atom's (or bond's) embedding is the sum over its columns, as in OGB's ``AtomEncoder`` and
Graphormer. The tables are stored as one ``nn.Embedding`` with per-column offsets so that the
lookup is a single gather.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from molssl.chem.features import ATOM_FEATURE_DIMS, BOND_FEATURE_DIMS


class CategoricalFeatureEmbedding(nn.Module):
    """Sum of per-column embeddings of a ``(M, C)`` tensor of categorical indices.

    Args:
        feature_dims: Vocabulary size of each of the ``C`` columns.
        out_channels: Embedding width.
        what: Name of the rows in error messages (``"atom"``, ``"bond"``).
    """

    offsets: Tensor

    def __init__(self, feature_dims: Sequence[int], out_channels: int, what: str = "row") -> None:
        super().__init__()
        dims = tuple(int(d) for d in feature_dims)
        if not dims or any(d < 1 for d in dims):
            raise ValueError(f"feature_dims must be positive vocabulary sizes, got {dims}")
        self.feature_dims = dims
        self.out_channels = out_channels
        self.what = what
        starts = torch.tensor((0, *dims[:-1]), dtype=torch.long).cumsum(0)
        self.register_buffer("offsets", starts, persistent=False)
        self.embedding = nn.Embedding(sum(dims), out_channels)

    def forward(self, features: Tensor) -> Tensor:
        """Embed.

        Args:
            features: ``(M, C)`` integer indices, column ``k`` in ``[0, feature_dims[k])``.

        Returns:
            ``(M, out_channels)``.

        Raises:
            ValueError: If the shape, dtype or any index is outside the vocabulary.
        """
        num_columns = len(self.feature_dims)
        if features.dim() != 2 or features.size(1) != num_columns:
            raise ValueError(
                f"{self.what} features must have shape (M, {num_columns}), "
                f"got {tuple(features.shape)}"
            )
        if features.dtype not in (torch.long, torch.int, torch.int16, torch.int8, torch.uint8):
            raise ValueError(f"{self.what} features must be integer indices, got {features.dtype}")
        limits = torch.tensor(self.feature_dims, device=features.device)
        out_of_range = (features < 0) | (features >= limits)
        if bool(out_of_range.any()):
            row, column = (int(i) for i in out_of_range.nonzero()[0])
            raise ValueError(
                f"{self.what} feature column {column} has index {int(features[row, column])} "
                f"at row {row}, outside [0, {self.feature_dims[column]})"
            )
        return self.embedding(features.long() + self.offsets).sum(dim=1)


class AtomFeatureEmbedding(CategoricalFeatureEmbedding):
    """Embedding of ``Data.x`` (atom feature columns, see ``ATOM_FEATURE_DIMS``).

    Args:
        out_channels: Embedding width.
        feature_dims: Vocabulary sizes; defaults to :data:`molssl.chem.features.ATOM_FEATURE_DIMS`.
    """

    def __init__(self, out_channels: int, feature_dims: Sequence[int] | None = None) -> None:
        dims = ATOM_FEATURE_DIMS if feature_dims is None else feature_dims
        super().__init__(dims, out_channels, what="atom")


class BondFeatureEmbedding(CategoricalFeatureEmbedding):
    """Embedding of ``Data.edge_attr`` (bond feature columns, see ``BOND_FEATURE_DIMS``).

    Args:
        out_channels: Embedding width.
        feature_dims: Vocabulary sizes; defaults to :data:`molssl.chem.features.BOND_FEATURE_DIMS`.
    """

    def __init__(self, out_channels: int, feature_dims: Sequence[int] | None = None) -> None:
        dims = BOND_FEATURE_DIMS if feature_dims is None else feature_dims
        super().__init__(dims, out_channels, what="bond")

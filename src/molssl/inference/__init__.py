"""Trained models on new molecules: ``molssl.load``, ``molssl predict``, packaged checkpoints.

- :func:`load` / :class:`MolsslModel`: ``model.predict(smiles)``, ``model.embed(smiles)``;
- :mod:`~molssl.inference.inputs`: rows → featurised batches (every row kept, failures too);
- :mod:`~molssl.inference.runner`: Lightning's prediction loop over them;
- :mod:`~molssl.inference.writer`: the CSV of ``molssl predict``;
- :mod:`~molssl.inference.registry`: checkpoints shipped inside the package, by name.
"""

from __future__ import annotations

from molssl.inference.model import MolsslModel, Predictions, load
from molssl.inference.registry import PACKAGED_CHECKPOINTS, resolve_checkpoint

__all__ = ["PACKAGED_CHECKPOINTS", "MolsslModel", "Predictions", "load", "resolve_checkpoint"]

"""molssl: self-supervised molecular pre-training with pluggable objectives.

``molssl.load(checkpoint)`` gives a trained model for new molecules (see
:mod:`molssl.inference`); it is imported on first use, so that ``import molssl`` stays light
(the command line's ``--help`` depends on it).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from molssl.inference import MolsslModel

try:
    __version__ = version("molssl")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "load"]


def load(checkpoint: Any) -> MolsslModel:
    """A trained model from a checkpoint file or a packaged checkpoint's name.

    ``model.predict(smiles)`` gives the fine-tuned targets per row, ``model.embed(smiles)``
    the encoder's embeddings; see :func:`molssl.inference.load`.
    """
    from molssl.inference import load as load_model

    return load_model(checkpoint)

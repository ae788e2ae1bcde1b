"""molssl.encoders: molecular encoders and the heads that read their outputs.

Every encoder subclasses :class:`Encoder`: it takes a PyG ``Batch`` and returns an
:class:`EncoderOutput`; its ``out_dim`` is the width of ``node`` and ``graph``. Configs name
them by ``class_path``, e.g. ``molssl.encoders.EquivariantTransformer`` (or, short,
``EquivariantTransformer``).

- :class:`EquivariantTransformer`: TorchMD-NET's equivariant transformer (3D, UniCorn's
  conformer encoder).
- :class:`Graphormer`: the 2D graph transformer (UniCorn's graph encoder).
- :class:`MoleBlendTransformer`: MoleBLEND's transformer with blended 2D/3D relations.
- Heads: :class:`EquivariantVectorHead`, :class:`EquivariantScalarHead`,
  :class:`GatedEquivariantBlock`, :class:`MLPHead`; QM9's :class:`DipoleMomentHead` and
  :class:`SpatialExtentHead`.
"""

from __future__ import annotations

from molssl.encoders.base import Encoder, EncoderOutput
from molssl.encoders.blend import MoleBlendTransformer
from molssl.encoders.et import EquivariantTransformer
from molssl.encoders.graphormer import Graphormer
from molssl.encoders.heads import (
    EquivariantScalarHead,
    EquivariantVectorHead,
    GatedEquivariantBlock,
    MLPHead,
)
from molssl.encoders.property_heads import DipoleMomentHead, SpatialExtentHead

__all__ = [
    "DipoleMomentHead",
    "Encoder",
    "EncoderOutput",
    "EquivariantScalarHead",
    "EquivariantTransformer",
    "EquivariantVectorHead",
    "GatedEquivariantBlock",
    "Graphormer",
    "MLPHead",
    "MoleBlendTransformer",
    "SpatialExtentHead",
]

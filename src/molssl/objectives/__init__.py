"""molssl.objectives: pre-training objectives and the per-sample views they need.

Configs name them by ``class_path`` (``molssl.objectives.FragmentMask``); a user's own
subclass in their own module works the same way, with no edit here.

- Contract: :class:`Objective`, :class:`View`, :class:`ObjectiveResult`.
- Views: :class:`RemoveHydrogens` (order 5; also a fine-tuning ``transform``),
  :class:`TorsionAugment` (order 10), :class:`CoordNoise` (order 20); mask views come with their
  objectives (order 30).
- Objectives: :class:`FragmentMask` (UniCorn's masked fragment modelling), :class:`AtomMask`
  (AttrMask baseline), :class:`CoordDenoise` (coordinate denoising, Coord/Frad/UniCorn),
  :class:`CrossModalInfoNCE` (UniCorn's 2D->3D distillation), :class:`BlendPredict`
  (MoleBLEND's blend-then-predict with its denoising regulariser).
"""

from __future__ import annotations

from molssl.objectives.atom_mask import AtomMask
from molssl.objectives.base import Objective, ObjectiveResult, View
from molssl.objectives.blend_predict import BlendPredict
from molssl.objectives.denoise import CoordDenoise
from molssl.objectives.fragment_mask import FragmentMask
from molssl.objectives.infonce import CrossModalInfoNCE
from molssl.objectives.views import CoordNoise, RemoveHydrogens, TorsionAugment

__all__ = [
    "AtomMask",
    "BlendPredict",
    "CoordDenoise",
    "CoordNoise",
    "CrossModalInfoNCE",
    "FragmentMask",
    "Objective",
    "ObjectiveResult",
    "RemoveHydrogens",
    "TorsionAugment",
    "View",
]

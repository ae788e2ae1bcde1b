"""The per-sample transforms a model's training molecules went through, for new molecules too.

A MoleBLEND model is trained and fine-tuned on heavy-atom graphs: its pre-training config lists
:class:`~molssl.objectives.RemoveHydrogens` among the module's ``views``, its fine-tuning config
gives it as the data module's ``transform``. New molecules (``molssl predict``,
``molssl.load(...).predict/embed``, ``molssl embed``) are featurised with explicit hydrogens
like every record, so without the same transform a model would see graphs unlike any it was
trained on. This module rebuilds, from a checkpoint's saved config sections, the transforms that
describe *what a sample is*: the data module's ``transform`` (applied to every split, evaluation
included) and the module views marked :attr:`~molssl.objectives.View.at_inference`. Training
augmentations (noise, masks, torsion perturbations) are views too, but not ``at_inference``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch_geometric.data import Data

from molssl.checkpoints import instantiate_spec, is_spec
from molssl.objectives.base import View

__all__ = ["SampleTransforms", "apply_transforms", "inference_transforms"]

#: Per-sample transforms in the order they run.
SampleTransforms = list[Callable[[Data], Data]]


def _init_args(section: object) -> Mapping[str, Any]:
    if not isinstance(section, Mapping):
        return {}
    init_args = section.get("init_args", section)
    return init_args if isinstance(init_args, Mapping) else {}


def inference_transforms(model: object, data: object, label: str) -> SampleTransforms:
    """The transforms new molecules need, from a checkpoint's ``model`` and ``data`` config
    sections (``{"class_path", "init_args"}`` or the ``init_args`` alone; either may be empty).

    Args:
        model: The model section: its ``views`` that are ``at_inference`` are kept, in order.
        data: The data section: its ``transform``, if it is a class (a function cannot be
            restored from a config and is left out).
        label: What the sections belong to, for the error of an entry that does not build.

    Raises:
        CheckpointError: ``invalid_spec``: a saved entry does not build.
    """
    views = []
    for spec in _init_args(model).get("views") or ():
        if is_spec(spec):
            view = instantiate_spec(spec, View, f"a view of {label}")
            if view.at_inference:
                views.append(view)
    transforms: SampleTransforms = sorted(views, key=lambda view: view.order)
    transform = _init_args(data).get("transform")
    if is_spec(transform):
        transforms.append(instantiate_spec(transform, object, f"the data transform of {label}"))
    return transforms


def apply_transforms(transforms: SampleTransforms, data: Data) -> Data:
    """``data`` through each transform in turn."""
    for transform in transforms:
        data = transform(data)
    return data

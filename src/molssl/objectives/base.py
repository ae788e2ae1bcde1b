"""The objective contract: a loss with its own heads, and optionally a per-sample view.

A pre-training run is a list of objectives over one batch. Each objective

* may contribute a **view** (a per-sample transform run in the data pipeline's workers, e.g.
  coordinate noise or a fragment mask), ordered by :attr:`View.order` so several objectives
  can share one batch: torsion augmentation (10) → coordinate noise (20) → masks (30);
* owns its **heads** as sub-modules, so they are saved, loaded and optimised with it;
* reads the outputs of the encoders it :attr:`~Objective.requires` and returns a scalar
  loss plus metrics, which the module logs as ``train/<name>/loss``,
  ``train/<name>/<metric>`` (and ``val/...``) next to the weighted total.

An encoder sees the batch as the views left it, masks included (``batch.atom_mask``). An
objective that needs an encoder's view of the *unmasked* molecule (UniCorn's 2D->3D
distillation aligns the conformer with its whole graph) names that role in
:meth:`~Objective.unmasked_roles` and reads ``outputs[unmasked(role)]``; the module then runs
that encoder a second time on the batch without :data:`MASK_KEYS` (or once, when the batch has
no mask).

Writing an ablation means subclassing one objective and overriding one method; the YAML then
names the subclass by ``class_path``. There is no registry to edit.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from molssl.encoders.base import EncoderOutput
from molssl.objectives.lazy_head import LazyHead

__all__ = [
    "ENCODER_ROLES",
    "MASK_KEYS",
    "Objective",
    "ObjectiveResult",
    "View",
    "snake_case",
    "unmasked",
]

#: Roles an encoder can play in a pre-training module; objectives name the ones they read.
ENCODER_ROLES = ("3d", "2d", "blend")

#: Per-sample keys through which masking views hide input from the encoders; an unmasked
#: encoding is one of the batch without them.
MASK_KEYS = ("atom_mask",)


def unmasked(role: str) -> str:
    """Key of ``role``'s encoding of the unmasked batch in the outputs objectives read:
    ``"2d"`` → ``"2d/unmasked"``."""
    return f"{role}/unmasked"


def snake_case(name: str) -> str:
    """``CrossModalInfoNCE`` → ``cross_modal_info_nce``; used for default objective names."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


class View(ABC):
    """A per-sample transform applied in the data pipeline (PyG transform convention).

    Views run in the data loader's workers, on one molecule at a time, before collation.
    They draw their randomness from torch's global generator, which PyTorch seeds
    differently in every worker and every epoch, so a sample seen twice gets a fresh draw.

    Attributes:
        order: Position in the pipeline; lower runs first. Torsion augmentation is 10,
            coordinate noise 20, masks 30.
    """

    order: int = 100
    #: Whether new molecules need it too (``molssl predict``, ``molssl.load``, ``molssl embed``):
    #: ``True`` for views that say what a sample *is* (the heavy-atom graph), ``False`` for
    #: training augmentations (noise, masks, torsion perturbations).
    at_inference: bool = False

    @abstractmethod
    def __call__(self, data: Data) -> Data:
        """Return the transformed sample (may modify ``data`` in place)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@dataclass
class ObjectiveResult:
    """What an objective returns for one batch.

    Attributes:
        loss: Unweighted scalar loss; the module multiplies it by the objective's weight.
        metrics: Scalars to log under ``<stage>/<objective name>/<key>``.
        batch_size: Number of items the loss averages over, for correct epoch averaging.
    """

    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)
    batch_size: int | None = None


class Objective(nn.Module, ABC):
    """Base class of pre-training objectives.

    Args:
        weight: Multiplier of this objective's loss in the total.
        name: Name used in logged metrics; defaults to the class name in snake case.

    Class attributes:
        requires: Encoder roles (from :data:`ENCODER_ROLES`) whose outputs ``loss`` reads.
    """

    requires: tuple[str, ...] = ()

    def __init__(self, weight: float = 1.0, name: str | None = None) -> None:
        super().__init__()
        if weight < 0:
            raise ValueError(f"objective weight must be >= 0, got {weight}")
        self.weight = float(weight)
        self.name = name or snake_case(type(self).__name__)

    def views(self) -> list[View]:
        """Per-sample views this objective needs in the data pipeline (none by default)."""
        return []

    def unmasked_roles(self) -> tuple[str, ...]:
        """Roles among :attr:`requires` whose encoding of the *unmasked* batch ``loss`` reads,
        under ``outputs[unmasked(role)]`` instead of ``outputs[role]``; none by default."""
        return ()

    def unmasked_needs_grad(self) -> bool:
        """Whether ``loss`` back-propagates into the encoders of :meth:`unmasked_roles`; when
        no objective does, the module runs the unmasked pass without autograd (cheaper)."""
        return True

    def bind_encoders(self, widths: Mapping[str, int]) -> None:
        """Builds the heads that read an encoder, now that its width is known.

        The module calls this once at construction with ``{role: encoder.out_dim}``, so heads
        exist with their real shapes before any batch: model summaries count them, and
        distributed wrappers (DDP) see no uninitialised parameter. By default every
        :class:`~molssl.objectives.lazy_head.LazyHead` of an objective that reads a single
        encoder is built at that encoder's width; objectives reading several override this.
        Heads without a known width are still built from the first batch.
        """
        if len(self.requires) != 1 or self.requires[0] not in widths:
            return
        for module in self.modules():
            if isinstance(module, LazyHead):
                module.materialize(int(widths[self.requires[0]]))

    @abstractmethod
    def loss(self, batch: Batch, outputs: Mapping[str, EncoderOutput]) -> ObjectiveResult:
        """Compute the unweighted loss from the batch and the required encoders' outputs."""

    def extra_repr(self) -> str:
        return f"name={self.name!r}, weight={self.weight}"

"""The encoder contract: :class:`Encoder` takes a PyG batch and returns an :class:`EncoderOutput`.

Objectives and heads read only the output, so they never depend on which encoder ran. Modules
type their encoder arguments by :class:`Encoder`, so a config's ``class_path`` is checked to be
an encoder and ``molssl fit --help`` lists molssl's encoders (not every ``torch.nn.Module``).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torch import Tensor, nn

if TYPE_CHECKING:
    from torch_geometric.data import Batch


@dataclass
class EncoderOutput:
    """Outputs of a molecular encoder for one PyG ``Batch``.

    Attributes:
        node: Per-atom invariant features, shape ``(N, D)``, in ``batch.batch`` order.
        graph: Per-molecule embedding, shape ``(B, D)``.
        vec: Per-atom equivariant vector features, shape ``(N, 3, D)``; ``None`` for
            encoders without vector channels (2D and blended encoders).
        extras: Encoder-specific tensors that objectives may supervise, e.g. the blended
            encoder's per-pair relation choice.
    """

    node: Tensor
    graph: Tensor
    vec: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)


class Encoder(nn.Module, abc.ABC):
    """Base of molssl's molecular encoders; subclass it for an encoder of your own.

    Attributes:
        out_dim: Width of the ``node`` and ``graph`` features, set by the constructor (heads
            and objectives are sized from it).
    """

    out_dim: int

    @abc.abstractmethod
    def forward(self, batch: Batch) -> EncoderOutput:
        """Encodes a batch of molecules (``z``, ``pos``, graph features, ``batch``, ...)."""

    @contextlib.contextmanager
    def shared_inputs(self) -> Iterator[None]:
        """A scope whose forward passes may share work that depends only on inputs they share.

        :class:`~molssl.modules.pretrain.PretrainModule` runs an encoder twice per step when one
        objective reads the masked batch and another the unmasked one (UniCorn's InfoNCE key):
        the two batches share every tensor but the mask, so an encoder may compute what depends
        on the shared tensors alone (e.g. the Graphormer's graph relations and attention bias)
        once inside this scope, and must forget it on leaving. The default shares nothing.
        """
        yield

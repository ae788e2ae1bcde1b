"""What every encoder returns, so objectives and heads never depend on which encoder ran."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


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

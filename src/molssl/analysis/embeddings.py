"""Pooled molecule embeddings of an encoder, computed in batches without gradients."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch_geometric.data import Batch, Data

from molssl.encoders.base import EncoderOutput

__all__ = ["encode_molecules"]


def encode_molecules(encoder: nn.Module, data: Sequence[Data], batch_size: int = 64) -> np.ndarray:
    """The encoder's per-molecule embedding (``EncoderOutput.graph``) of every molecule.

    The encoder is put in eval mode (no dropout; MoleBLEND's evaluation relations) and run
    under ``torch.inference_mode`` on the device of its parameters, ``batch_size`` molecules at
    a time, in the order given.

    Args:
        encoder: A molssl encoder.
        data: Encoder inputs, one per molecule.
        batch_size: Molecules per forward pass.

    Returns:
        ``(M, D)`` float32, row ``i`` for ``data[i]``.

    Raises:
        ValueError: ``batch_size`` below 1, or no molecule.
        TypeError: The encoder does not return an :class:`EncoderOutput`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not data:
        raise ValueError("no molecule to encode")
    encoder.eval()
    parameter = next(encoder.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    parts: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            batch = Batch.from_data_list(list(data[start : start + batch_size])).to(device)
            output = encoder(batch)
            if not isinstance(output, EncoderOutput):
                raise TypeError(
                    f"{type(encoder).__name__} returned a {type(output).__name__}; molssl "
                    "encoders return EncoderOutput"
                )
            parts.append(output.graph.float().cpu().numpy())
    return np.ascontiguousarray(np.concatenate(parts, axis=0), dtype=np.float32)

"""Which relation each atom pair shows the MoleBLEND transformer: the per-pair blend choice.

MoleBLEND (Yu et al., 2023) gives every atom pair's attention bias from exactly one of three
relations, drawn at random, and trains heads to recover the relations it did not see. Two
properties that the public code lacks are guaranteed here:

* every molecule gets its own draw (the public code draws one ``(N, N)`` mask for the whole
  batch, so all molecules of a batch hide the same index pairs);
* the choice is symmetric, ``choice[i, j] == choice[j, i]``: it is drawn on the upper triangle
  (diagonal included) and mirrored, so the bias of a pair never mixes two relations.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

RELATION_SPD = 0
"""Choice code of the shortest-path-distance relation (2D topology)."""
RELATION_EDGE = 1
"""Choice code of the edge (bond) relation (2D chemistry)."""
RELATION_DISTANCE = 2
"""Choice code of the 3D distance relation."""
RELATION_NAMES: tuple[str, str, str] = ("shortest_path", "edge", "distance")
"""Names of the relations, indexed by their choice code."""
PADDING_CHOICE = -1
"""Choice value at pairs that involve a padding position."""


def normalize_blend_probs(probs: Sequence[float]) -> tuple[float, float, float]:
    """Validate relation probabilities ``(shortest-path, edge, distance)`` and normalise them.

    Raises:
        ValueError: If there are not three finite, non-negative values with a positive sum.
    """
    values = tuple(float(p) for p in probs)
    if len(values) != len(RELATION_NAMES):
        raise ValueError(
            f"blend_probs needs one probability per relation {RELATION_NAMES}, got {values}"
        )
    if any(not (p >= 0.0 and p < float("inf")) for p in values):
        raise ValueError(f"blend_probs must be finite and non-negative, got {values}")
    total = sum(values)
    if total <= 0.0:
        raise ValueError(f"blend_probs must have a positive sum, got {values}")
    return values[0] / total, values[1] / total, values[2] / total


def pair_mask_from_node_mask(node_mask: Tensor) -> Tensor:
    """``(B, N, N)`` bool mask of pairs whose two atoms are both real (not padding)."""
    return node_mask.unsqueeze(-1) & node_mask.unsqueeze(-2)


def sample_blend_choice(
    node_mask: Tensor,
    probs: Sequence[float],
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw one relation per atom pair, independently for every pair of every molecule.

    Args:
        node_mask: ``(B, N)`` bool, ``True`` at real atoms of the dense batch.
        probs: Probabilities of ``(shortest-path, edge, distance)``; normalised here, zeros
            allowed (that relation is then never drawn).
        generator: Optional random generator for reproducible draws; it may live on another
            device than ``node_mask`` (the draw is made on the generator's device and moved).

    Returns:
        ``(B, N, N)`` long tensor with values in ``{0, 1, 2}`` (see ``RELATION_*``), symmetric
        in its last two dimensions, and ``PADDING_CHOICE`` where either atom is padding.
    """
    if node_mask.dim() != 2 or node_mask.dtype != torch.bool:
        raise ValueError(
            "node_mask must be a (B, N) bool tensor, got "
            f"{node_mask.dtype} {tuple(node_mask.shape)}"
        )
    p_spd, p_edge, p_distance = normalize_blend_probs(probs)
    num_graphs, num_nodes = node_mask.shape
    device = node_mask.device
    draw_device = generator.device if generator is not None else device
    uniform = torch.rand(
        (num_graphs, num_nodes, num_nodes), generator=generator, device=draw_device
    ).to(device)
    # Inverse-CDF sampling; a relation with probability 0 has an empty interval and never wins
    # (the last threshold is made unreachable explicitly so rounding cannot reopen it).
    edge_end = p_spd + p_edge if p_distance > 0.0 else float("inf")
    choice = (uniform >= p_spd).long() + (uniform >= edge_end).long()
    upper = torch.ones(num_nodes, num_nodes, dtype=torch.bool, device=device).triu()
    choice = torch.where(upper, choice, choice.transpose(-1, -2))
    return choice.masked_fill(~pair_mask_from_node_mask(node_mask), PADDING_CHOICE)

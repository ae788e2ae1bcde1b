"""What the MoleBLEND transformer shows of each molecule: the per-pair and per-atom draws.

MoleBLEND (Yu et al., 2023) gives every atom pair's attention bias from exactly one of three
relations, drawn at random, and trains heads to recover the relations it did not see. By
default (:func:`sample_blend_choice` with ``per_molecule=True``) two properties that the
official code lacks are guaranteed:

* every molecule gets its own draw (the official ``blend_3_mode`` of
  ``MoleBlend/modules/moleblend_encoder.py`` draws one ``(N, N)`` mask for the whole batch, so
  all molecules of a batch hide the same index pairs);
* the choice is symmetric, ``choice[i, j] == choice[j, i]``: it is drawn on the upper triangle
  (diagonal included) and mirrored, so the two directions of a pair show the same relation.

``per_molecule=False`` reproduces the official draw for ablations: one asymmetric ``(N, N)``
choice shared by every molecule of the batch.

Each atom's own input feature is blended too (:func:`sample_atom_choice`, the official
``blend_atom_feature``): its 2D degree embedding or its 3D distance features.
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
"""Choice value at pairs that involve a padding position (and at padded atoms)."""
ATOM_2D = 0
"""Atom choice code: the atom's input feature is its degree embedding (2D)."""
ATOM_3D = 1
"""Atom choice code: the atom's input feature comes from its 3D distances."""


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


def fixed_choice(choice: Tensor, mask: Tensor, name: str, layout: str) -> tuple[Tensor, Tensor]:
    """A caller's fixed choice as long on ``mask``'s device, ``-1`` where ``mask`` is False, and
    its values at the real entries.

    Raises:
        ValueError: If its shape is not ``mask``'s.
    """
    if choice.shape != mask.shape:
        raise ValueError(
            f"{name} must have shape {tuple(mask.shape)} {layout}, got {tuple(choice.shape)}"
        )
    choice = choice.to(device=mask.device, dtype=torch.long).masked_fill(~mask, PADDING_CHOICE)
    return choice, choice[mask]


def normalize_atom_probs(probs: Sequence[float]) -> tuple[float, float]:
    """Validate (degree, 3D) atom-feature probabilities and normalise them."""
    values = tuple(float(p) for p in probs)
    if len(values) != 2 or any(not (0.0 <= p < float("inf")) for p in values) or sum(values) <= 0:
        raise ValueError(
            "atom_blend_probs needs two finite, non-negative probabilities (degree, 3D) with a "
            f"positive sum, got {values}"
        )
    total = sum(values)
    return values[0] / total, values[1] / total


def pair_mask_from_node_mask(node_mask: Tensor) -> Tensor:
    """``(B, N, N)`` bool mask of pairs whose two atoms are both real (not padding)."""
    return node_mask.unsqueeze(-1) & node_mask.unsqueeze(-2)


def _check_node_mask(node_mask: Tensor) -> None:
    if node_mask.dim() != 2 or node_mask.dtype != torch.bool:
        raise ValueError(
            "node_mask must be a (B, N) bool tensor, got "
            f"{node_mask.dtype} {tuple(node_mask.shape)}"
        )


def _uniform(
    shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None
) -> Tensor:
    """U(0, 1) draws made on the generator's device (if any), then moved to ``device``."""
    draw_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=draw_device).to(device)


def sample_blend_choice(
    node_mask: Tensor,
    probs: Sequence[float],
    generator: torch.Generator | None = None,
    per_molecule: bool = True,
) -> Tensor:
    """Draw one relation per atom pair.

    Args:
        node_mask: ``(B, N)`` bool, ``True`` at real atoms of the dense batch.
        probs: Probabilities of ``(shortest-path, edge, distance)``; normalised here, zeros
            allowed (that relation is then never drawn).
        generator: Optional random generator for reproducible draws; it may live on another
            device than ``node_mask`` (the draw is made on the generator's device and moved).
        per_molecule: ``True``: an independent draw for every unordered pair of every
            molecule, mirrored so the choice is symmetric. ``False``: the official draw, one
            ``(N, N)`` choice (not symmetric) shared by all molecules of the batch.

    Returns:
        ``(B, N, N)`` long tensor with values in ``{0, 1, 2}`` (see ``RELATION_*``), and
        ``PADDING_CHOICE`` where either atom is padding; symmetric in its last two dimensions
        when ``per_molecule``.
    """
    _check_node_mask(node_mask)
    p_spd, p_edge, p_distance = normalize_blend_probs(probs)
    num_graphs, num_nodes = node_mask.shape
    device = node_mask.device
    shape = (num_graphs if per_molecule else 1, num_nodes, num_nodes)
    uniform = _uniform(shape, device, generator)
    # Inverse-CDF sampling; a relation with probability 0 has an empty interval and never wins
    # (the last threshold is made unreachable explicitly so rounding cannot reopen it).
    edge_end = p_spd + p_edge if p_distance > 0.0 else float("inf")
    choice = (uniform >= p_spd).long() + (uniform >= edge_end).long()
    if per_molecule:
        upper = torch.ones(num_nodes, num_nodes, dtype=torch.bool, device=device).triu()
        choice = torch.where(upper, choice, choice.transpose(-1, -2))
    else:
        choice = choice.expand(num_graphs, -1, -1)
    return choice.masked_fill(~pair_mask_from_node_mask(node_mask), PADDING_CHOICE)


def sample_atom_choice(
    node_mask: Tensor, p_3d: float, generator: torch.Generator | None = None
) -> Tensor:
    """Draw for every atom of every molecule whether its input feature is 2D or 3D.

    The official ``blend_atom_feature`` (``MoleBlend/modules/moleblend_encoder.py``) draws
    ``(B, N)`` independent choices with probabilities ``(0.4, 0.6)`` for (degree, 3D).

    Args:
        node_mask: ``(B, N)`` bool, ``True`` at real atoms.
        p_3d: Probability of :data:`ATOM_3D`, in ``[0, 1]``.
        generator: Optional random generator (as in :func:`sample_blend_choice`).

    Returns:
        ``(B, N)`` long: :data:`ATOM_2D` or :data:`ATOM_3D`, ``PADDING_CHOICE`` at padding.
    """
    _check_node_mask(node_mask)
    if not 0.0 <= p_3d <= 1.0:
        raise ValueError(f"the probability of a 3D atom feature must be in [0, 1], got {p_3d}")
    uniform = _uniform(tuple(node_mask.shape), node_mask.device, generator)
    choice = (uniform < p_3d).long() * ATOM_3D + (uniform >= p_3d).long() * ATOM_2D
    return choice.masked_fill(~node_mask, PADDING_CHOICE)

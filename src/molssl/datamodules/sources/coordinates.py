"""Checks that a molecule read from a file really carries 3D coordinates."""

from __future__ import annotations

import numpy as np
from rdkit import Chem

from molssl.datamodules.sources.entry import SourceRecordError

__all__ = ["check_3d"]


def check_3d(mol: Chem.Mol, label: str, tagged_3d: bool) -> None:
    """Raise ``no_3d_coordinates`` unless ``mol``'s one conformer is a usable 3D geometry.

    A molecule of two or more atoms fails when all its atoms sit on one point (a file written
    without coordinates), or when every ``z`` is zero and the file does not declare the block
    3D (a 2D depiction). A planar molecule laid in the ``xy`` plane by a file that declares 3D
    (as quantum-chemistry outputs in standard orientation can be) is kept. Non-finite
    coordinates fail as ``invalid_record``.

    Args:
        mol: The molecule as read, with one conformer.
        label: How to name the entry in messages (``file:line``).
        tagged_3d: Whether the file declares the coordinates 3D.
    """
    if mol.GetNumConformers() != 1:
        raise SourceRecordError(
            f"{label}: expected one conformer, found {mol.GetNumConformers()}",
            reason="no_3d_coordinates",
        )
    positions = np.asarray(mol.GetConformer().GetPositions(), dtype=np.float64)
    if not np.all(np.isfinite(positions)):
        raise SourceRecordError(f"{label}: non-finite coordinates")
    if len(positions) < 2:
        return
    if np.all(positions == positions[0]):
        raise SourceRecordError(
            f"{label}: all {len(positions)} atoms at the same point (no coordinates in the file)",
            reason="no_3d_coordinates",
        )
    if not tagged_3d and np.all(positions[:, 2] == 0.0):
        raise SourceRecordError(
            f"{label}: 2D coordinates (every z is 0); a 3D geometry is needed",
            reason="no_3d_coordinates",
        )

"""Pre-trained checkpoints that ship inside the package, named instead of pathed.

``init_from: <name>`` in a fine-tuning config (and :func:`resolve` for any other caller, e.g.
an API that loads a model by name) finds a packaged checkpoint offline, with no download.
Each entry of :data:`PACKAGED` names its file in this folder and its model card (data, steps,
sizes, the commands that made it, what it measured, the data's licence); ``molssl`` never
fetches anything. A path is always a path: a file that exists is returned as given, whatever
its name.

A checkpoint is packaged only when it transfers: fine-tuned from it, a task's error beats a
from-scratch encoder given the same size, budget and learning-rate search, on the validation
data the choice is made by and then on test. This version ships one, ``frad-small-qm9``
(its card says what it is, what it measured and how far that goes; ``docs/RESULTS.md`` has
every number); ``benchmarks/transfer/package_checkpoint.py`` cuts a pre-training checkpoint to
the file that ships.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from molssl.errors import UserError

__all__ = ["PACKAGED", "PackagedCheckpoint", "PretrainedNameError", "available", "resolve"]

_FOLDER = Path(__file__).resolve().parent


@dataclass(frozen=True)
class PackagedCheckpoint:
    """One packaged checkpoint.

    Attributes:
        file: The checkpoint's file name in ``molssl/pretrained``.
        card: Its model card's file name there.
        summary: One line: what it is and what it is for.
        encoder: The 3D encoder's ``init_args`` the checkpoint was trained with; a fine-tuning
            encoder must have them for ``init_from`` to fit.
    """

    file: str
    card: str
    summary: str
    encoder: dict[str, object]

    @property
    def path(self) -> Path:
        """Where the checkpoint is in the installed package."""
        return _FOLDER / self.file


#: The 3D encoder of the small transfer experiments (ET 64 channels, 3 layers, 4 heads, 32
#: RBF; the rest of EquivariantTransformer's defaults, written out so that a change of default
#: cannot silently change what a name means).
_SMALL_ET: dict[str, object] = {
    "hidden_channels": 64, "num_layers": 3, "num_heads": 4, "num_rbf": 32,
    "cutoff_lower": 0.0, "cutoff_upper": 5.0, "max_z": 100, "max_num_neighbors": 32,
    "rbf_trainable": False, "activation": "silu", "attn_activation": "silu",
    "neighbor_embedding": True, "distance_influence": "both", "layernorm_on_vec": "whitened",
    "reduce": "sum", "rbf_type": "expnorm", "vector_cutoff": False,
}  # fmt: skip

#: Packaged checkpoints by name.
PACKAGED: dict[str, PackagedCheckpoint] = {
    "frad-small-qm9": PackagedCheckpoint(
        file="frad-small-qm9.ckpt",
        card="frad-small-qm9.md",
        summary="small ET (64x3) pre-trained 1,500 steps by torsion-augmented denoising (Frad) "
        "on QM9's training-split geometries; QM9 HOMO/LUMO/gap at 1,000 labels "
        "-4.4/-6.4/-5.8% test MAE vs scratch",
        encoder=_SMALL_ET,
    ),
}


class PretrainedNameError(UserError):
    """A name that is neither an existing file nor a packaged checkpoint."""


def available() -> list[str]:
    """Names of the packaged checkpoints, sorted."""
    return sorted(PACKAGED)


def _looks_like_a_name(text: str) -> bool:
    return os.sep not in text and "/" not in text and not Path(text).suffix


def resolve(name_or_path: str | os.PathLike[str]) -> Path:
    """The checkpoint file meant by a packaged name or a path.

    Returns:
        An existing file as given; the packaged file of a name in :data:`PACKAGED`; any other
        path unchanged (its reader reports it missing, naming it).

    Raises:
        PretrainedNameError: A bare name (no folder, no suffix) that is neither a file nor
            packaged; the message lists the packaged names.
    """
    path = Path(name_or_path)
    if path.exists():
        return path
    entry = PACKAGED.get(str(name_or_path))
    if entry is not None:
        return entry.path
    if _looks_like_a_name(str(name_or_path)):
        names = ", ".join(available()) or "none in this version"
        raise PretrainedNameError(
            f"{str(name_or_path)!r} is neither a checkpoint file nor a packaged pre-trained "
            f"model (packaged: {names})"
        )
    return path

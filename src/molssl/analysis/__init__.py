"""What an encoder learned: molecule embeddings, their t-SNE map and Davies-Bouldin index.

The paper's representation analysis (UniCorn, Figures 4 and 5): embed molecules with a
pre-trained encoder (and with the same architecture at random initialisation, the baseline),
draw a t-SNE map coloured by Bemis-Murcko scaffold or by a downstream label, and quote the
Davies-Bouldin index of that grouping. ``molssl embed`` runs it
(:func:`~molssl.analysis.embed_run.run_embed`).
"""

from __future__ import annotations

from molssl.analysis.embed_run import EmbedSettings, run_embed
from molssl.analysis.embeddings import encode_molecules
from molssl.analysis.encoder_checkpoint import CheckpointEncoder, load_checkpoint_encoder
from molssl.analysis.errors import EmbedError
from molssl.analysis.molecules import read_molecules

__all__ = [
    "CheckpointEncoder",
    "EmbedError",
    "EmbedSettings",
    "encode_molecules",
    "load_checkpoint_encoder",
    "read_molecules",
    "run_embed",
]

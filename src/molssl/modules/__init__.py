"""molssl.modules: LightningModules and the pieces of their training loop.

- :class:`PretrainModule`: encoders + a list of objectives, AdamW with warm-up + cosine.
- :class:`FinetuneModule`: one encoder (optionally initialised from a pre-training checkpoint
  with ``init_from``) + a task head for classification, regression or energies and forces.
- :func:`load_encoder_weights` / :class:`InitFromError`: what ``init_from`` does, for use
  outside the module.
- :class:`WarmupCosineSchedule`: the learning-rate factor per optimiser step.
- :class:`ValidationSummary`: a callback validating at step 0 and printing, per objective,
  the held-out loss at the start of training against the end.
"""

from __future__ import annotations

from molssl.modules.finetune import FinetuneModule
from molssl.modules.init_from import InitFromError, InitReport, load_encoder_weights
from molssl.modules.pretrain import PretrainModule
from molssl.modules.schedules import WarmupCosineSchedule, warmup_cosine_scheduler
from molssl.modules.validation_summary import ValidationSummary

__all__ = [
    "FinetuneModule",
    "InitFromError",
    "InitReport",
    "PretrainModule",
    "ValidationSummary",
    "WarmupCosineSchedule",
    "load_encoder_weights",
    "warmup_cosine_scheduler",
]

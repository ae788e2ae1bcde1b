"""molssl.modules: LightningModules and the pieces of their training loop.

- :class:`PretrainModule`: encoders + a list of objectives, AdamW with warm-up + cosine.
- :class:`WarmupCosineSchedule`: the learning-rate factor per optimiser step.
- :class:`ValidationSummary`: a callback validating at step 0 and printing, per objective,
  the held-out loss at the start of training against the end.
"""

from __future__ import annotations

from molssl.modules.pretrain import PretrainModule
from molssl.modules.schedules import WarmupCosineSchedule, warmup_cosine_scheduler
from molssl.modules.validation_summary import ValidationSummary

__all__ = [
    "PretrainModule",
    "ValidationSummary",
    "WarmupCosineSchedule",
    "warmup_cosine_scheduler",
]

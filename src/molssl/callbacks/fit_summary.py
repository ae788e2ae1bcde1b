"""``FitSummary``: one line at the end of ``molssl fit`` saying what the run produced.

::

    molssl fit: best val/rmse 1.284 (checkpoint runs/freesolv/version_0/checkpoints/
    epoch=41-step=714.ckpt); last runs/freesolv/version_0/checkpoints/last.ckpt

(one line on the screen).

For a run whose checkpoint callback monitors nothing (pre-training), the line names the last
checkpoint. It is printed by the main process only, on stdout, after Lightning's own messages.
"""

from __future__ import annotations

import sys

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["FitSummary", "fit_summary_line"]


def fit_summary_line(callback: ModelCheckpoint | None, prefix: str = "molssl fit") -> str:
    """The summary of a finished fit from its checkpoint callback."""
    if callback is None:
        return f"{prefix}: done; no checkpoint was written (checkpointing is off)"
    last = f"last {callback.last_model_path}" if callback.last_model_path else ""
    score = callback.best_model_score
    if callback.monitor and callback.best_model_path and score is not None:
        text = (
            f"{prefix}: best {callback.monitor} {float(score):.6g} "
            f"(checkpoint {callback.best_model_path})"
        )
        return text + (f"; {last}" if last else "")
    if callback.monitor:
        return f"{prefix}: {callback.monitor} was never logged, so no best checkpoint; " + (
            last or "no checkpoint written"
        )
    return f"{prefix}: no validation metric monitored (checkpoint.monitor); " + (
        last or "no checkpoint written"
    )


class FitSummary(Callback):
    """Prints :func:`fit_summary_line` when fitting ends (main process only)."""

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Prints the line."""
        if trainer.is_global_zero:
            print(fit_summary_line(trainer.checkpoint_callback), file=sys.stdout, flush=True)

"""``last.ckpt`` is the last state: the checkpoint callback of every ``molssl fit``.

Lightning's ``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` only when it writes some
other checkpoint at the same step. Two common runs therefore end with a stale ``last.ckpt``:

* a run stopped by ``trainer.max_time`` (or any stop between two ``every_n_train_steps``
  multiples) keeps the state of the last multiple (step 1,000 of a run that reached 1,360);
* a run that ``monitor``-s a validation metric writes checkpoints only when the metric
  improves, so ``last.ckpt`` is the *best* state (step 1,472 of 3,000), not the last one.

Both break "``last.ckpt`` is where the run ended": resuming repeats or loses steps, and
fine-tuning from a pre-training run's ``last.ckpt`` starts from weights the run had moved
past. :class:`LastStateCheckpoint` writes ``last.ckpt`` once more when training ends whenever
the last write was at an earlier step; the monitored best checkpoints are untouched.
"""

from __future__ import annotations

import os

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["LastStateCheckpoint"]


class LastStateCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` always holds the state training ended in.

    Every argument is ``ModelCheckpoint``'s. With ``save_last="link"`` the final state is
    written as a file (a link would point at an older checkpoint).
    """

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Writes ``last.ckpt`` at the final step unless a checkpoint was written there."""
        if (
            self.save_last
            and not trainer.fast_dev_run
            and trainer.global_step > 0
            and self._last_global_step_saved != trainer.global_step
        ):
            candidates = self._monitor_candidates(trainer)
            link, self.save_last = self.save_last == "link", True
            try:
                path = self.format_checkpoint_name(candidates, self.CHECKPOINT_NAME_LAST)
                if link and trainer.is_global_zero and os.path.islink(path):
                    os.remove(path)  # written through, the link would overwrite its target
                self._save_last_checkpoint(trainer, candidates)
            finally:
                if link:
                    self.save_last = "link"
        super().on_train_end(trainer, pl_module)

"""Numerical-fault guard of the training loop: skip a batch whose loss or gradients are not finite.

One NaN (a degenerate conformer, an overflow in a softmax) must not destroy a long pre-training
run, and a run producing nothing but NaNs must stop with a message naming the objective rather
than train on garbage. :class:`NonFiniteLossGuard` does both, and is DDP-safe:

* **Loss.** :meth:`NonFiniteLossGuard.check` looks at the total and every part (each
  objective's loss). The flags are reduced with ``max`` across processes, so every rank takes
  the same decision on the same step; a rank that skipped alone would desynchronise the
  gradient all-reduce and hang the job.
* **What a skipped batch returns.** Lightning skips a step when ``training_step`` returns
  ``None`` on one device, but since Lightning 2.3 raises ``RuntimeError`` for ``None`` under
  any multi-process strategy (Lightning-AI/pytorch-lightning#19918: skipping is ill-defined in
  DDP). :meth:`NonFiniteLossGuard.skip_loss` returns instead a zero tied to every trainable
  parameter: its backward gives exact zero gradients, DDP's reducer sees a gradient for every
  parameter and all-reduces as usual, and the same code path runs on one device and on many.
* **No step on garbage.** Zero gradients still move AdamW's weights (momentum) and advance its
  step count, so :meth:`NonFiniteLossGuard.check_gradients`, called from the module's
  ``on_before_optimizer_step`` (after DDP's all-reduce, before clipping), drops every
  gradient when the accumulation window had no finite batch; AdamW then leaves weights and
  state untouched. Under gradient accumulation a skipped micro-batch contributes zero and the
  window's other micro-batches still step.
* **Non-finite gradients from a finite loss** (a norm or square root differentiated at zero)
  are dropped the same way: the step is skipped and counted under
  ``train/nonfinite_gradients_skipped``. Gradients are already all-reduced there, so every rank
  sees the same values and agrees without another collective.

A skipped step still counts as a step: Lightning advances ``global_step`` and the per-step
learning-rate schedule, as it does for ``None`` on one device. Counters are logged every
training step as ``train/nonfinite_skipped`` and ``train/nonfinite_gradients_skipped`` and
travel in checkpoints (:meth:`NonFiniteLossGuard.state_dict`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor

__all__ = ["NonFiniteLossError", "NonFiniteLossGuard"]

log = logging.getLogger(__name__)

#: Name of the total loss in the guard's messages (objective names are snake_case identifiers).
TOTAL = "total"
#: Name of the gradients in the guard's messages.
GRADIENTS = "gradients"


class NonFiniteLossError(RuntimeError):
    """Too many consecutive training batches with a non-finite loss (or gradients).

    Attributes:
        parts: Names of what was non-finite during the streak (objective names, ``"total"``,
            ``"gradients"``), most frequent first.
        consecutive: Length of the streak.
    """

    def __init__(self, message: str, parts: tuple[str, ...], consecutive: int) -> None:
        super().__init__(message)
        self.parts = parts
        self.consecutive = consecutive

    def __reduce__(self) -> tuple[type, tuple[str, tuple[str, ...], int]]:
        # A run in a worker process (a grid of fine-tuning runs) hands the error back by
        # pickle; without this, unpickling calls __init__(message) and breaks the whole pool.
        return (type(self), (str(self), self.parts, self.consecutive))


class NonFiniteLossGuard:
    """Skips training batches whose loss or gradients are not finite; stops after a streak.

    Usage in a module (see :class:`~molssl.modules.PretrainModule`)::

        def training_step(self, batch, batch_idx):
            loss, parts = ...
            if not self.nonfinite_guard.check(self, loss, parts):
                return self.nonfinite_guard.skip_loss(self)
            ...

        def on_before_optimizer_step(self, optimizer):
            self.nonfinite_guard.check_gradients(self)

    Returning ``None`` instead of :meth:`skip_loss` works on one device only (Lightning refuses
    it under DDP), and without :meth:`check_gradients` a skipped step still moves AdamW's
    weights by momentum.

    Args:
        max_consecutive: Non-finite batches in a row (or optimiser steps with non-finite
            gradients in a row) that stop training with :class:`NonFiniteLossError`.

    Attributes:
        skipped: Training batches skipped for a non-finite loss, over the whole run.
        gradients_skipped: Optimiser steps dropped for non-finite gradients.
        consecutive: Current streak of batches with a non-finite loss.
        consecutive_gradients: Current streak of steps with non-finite gradients.
    """

    def __init__(self, max_consecutive: int = 10) -> None:
        if max_consecutive < 1:
            raise ValueError(f"max_consecutive must be >= 1, got {max_consecutive}")
        self.max_consecutive = int(max_consecutive)
        self.skipped = 0
        self.gradients_skipped = 0
        self.consecutive = 0
        self.consecutive_gradients = 0
        self._streak_parts: Counter[str] = Counter()
        self._streak_first_step: int | None = None
        # Whether some batch of the current accumulation window had a finite loss.
        self._window_has_finite_batch = False

    # -- loss --------------------------------------------------------------------------------

    def check(self, module: LightningModule, loss: Tensor, parts: Mapping[str, Tensor]) -> bool:
        """Whether the batch's loss is finite on every process; counts and reports when not.

        Args:
            module: The module being trained (gives the trainer, for the cross-process
                reduction, the step number and logging).
            loss: The total loss of this process's batch.
            parts: The unweighted losses it was summed from, by objective name, in the same
                order on every process.

        Returns:
            ``True`` when the total and every part are finite on every process; ``False``
            when the batch must be skipped (then :meth:`skip_loss` is what to return).

        Raises:
            NonFiniteLossError: After ``max_consecutive`` skipped batches in a row, naming the
                parts that were non-finite.
        """
        names = [TOTAL, *parts]
        local = torch.stack(
            [~torch.isfinite(value.detach()).all() for value in (loss, *parts.values())]
        ).to(torch.float32)
        flags = _reduce_max(module, local).tolist()
        bad = [name for name, flag in zip(names, flags, strict=True) if flag]
        if not bad:
            self.consecutive = 0
            self._streak_parts.clear()
            self._streak_first_step = None
            self._window_has_finite_batch = True
            self._log_counters(module)
            return True

        step = _global_step(module)
        self.skipped += 1
        self.consecutive += 1
        self._streak_parts.update(bad)
        if self._streak_first_step is None:
            self._streak_first_step = step
        self._log_counters(module)
        named = [name for name in bad if name != TOTAL] or [TOTAL]
        if _is_global_zero(module):
            log.warning(
                "non-finite training loss at step %d in %s: batch skipped (%d skipped so far, "
                "%d in a row; training stops at %d in a row)",
                step,
                ", ".join(named),
                self.skipped,
                self.consecutive,
                self.max_consecutive,
            )
        if self.consecutive >= self.max_consecutive:
            raise self._streak_error(step)
        return False

    def skip_loss(self, module: LightningModule) -> Tensor:
        """What ``training_step`` returns for a skipped batch: zero, tied to every parameter.

        Its backward writes exact zero gradients into every trainable parameter, so DDP's
        all-reduce runs as on any other step; :meth:`check_gradients` then drops them.
        """
        trainable = [p for p in module.parameters() if p.requires_grad]
        if not trainable:
            return torch.zeros((), device=module.device, requires_grad=True)
        return torch.stack([(p * 0.0).sum() for p in trainable]).sum()

    # -- gradients ---------------------------------------------------------------------------

    def check_gradients(self, module: LightningModule) -> bool:
        """Drops the gradients before the optimiser step unless they are usable.

        Call it from ``on_before_optimizer_step``. Gradients are dropped (set to ``None``, so
        AdamW changes neither weights nor its state) when every batch of the accumulation
        window was skipped, or when they are not finite although the loss was.

        Returns:
            Whether the optimiser step will use the gradients.

        Raises:
            NonFiniteLossError: After ``max_consecutive`` steps in a row with non-finite
                gradients.
        """
        had_finite_batch = self._window_has_finite_batch
        self._window_has_finite_batch = False
        parameters = [p for p in module.parameters() if p.grad is not None]
        if not had_finite_batch:
            _drop_gradients(parameters)
            return False
        if _gradients_finite(parameters):
            self.consecutive_gradients = 0
            return True
        _drop_gradients(parameters)
        step = _global_step(module)
        self.gradients_skipped += 1
        self.consecutive_gradients += 1
        self._log_counters(module)
        if _is_global_zero(module):
            log.warning(
                "non-finite gradients at step %d although the loss was finite (a norm or "
                "square root differentiated at zero?): optimiser step skipped (%d so far, %d in "
                "a row)",
                step,
                self.gradients_skipped,
                self.consecutive_gradients,
            )
        if self.consecutive_gradients >= self.max_consecutive:
            raise NonFiniteLossError(
                f"the gradients were non-finite in {self.consecutive_gradients} consecutive "
                f"optimiser steps (up to global step {step}) although every objective's loss was "
                "finite, so no objective can be named: a norm, square root or division "
                "differentiated at zero is the usual cause (e.g. identical atom positions); "
                "lower the learning rate or check the inputs",
                parts=(GRADIENTS,),
                consecutive=self.consecutive_gradients,
            )
        return False

    # -- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, int]:
        """The run's counters, for checkpoints (plain integers)."""
        return {"skipped": self.skipped, "gradients_skipped": self.gradients_skipped}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores the counters saved by :meth:`state_dict` (missing keys count as 0)."""
        self.skipped = int(state.get("skipped", 0))
        self.gradients_skipped = int(state.get("gradients_skipped", 0))

    def _log_counters(self, module: LightningModule) -> None:
        if getattr(module, "_trainer", None) is None:
            return
        for key, value in (
            ("train/nonfinite_skipped", self.skipped),
            ("train/nonfinite_gradients_skipped", self.gradients_skipped),
        ):
            module.log(key, float(value), on_step=True, on_epoch=False, batch_size=1)

    def _streak_error(self, step: int) -> NonFiniteLossError:
        ranked = self._streak_parts.most_common()
        objectives = [(name, count) for name, count in ranked if name != TOTAL]
        culprits = objectives or ranked
        detail = ", ".join(f"{name!r} in {count}" for name, count in culprits)
        first = self._streak_first_step
        return NonFiniteLossError(
            f"the training loss was non-finite in {self.consecutive} consecutive batches "
            f"(global steps {first} to {step}); non-finite: {detail}. Training stopped: lower "
            "the learning rate or that objective's weight, or look for a broken molecule in "
            f"the data (the limit is max_consecutive={self.max_consecutive})",
            parts=tuple(name for name, _ in culprits),
            consecutive=self.consecutive,
        )


def _reduce_max(module: LightningModule, flags: Tensor) -> Tensor:
    """Element-wise maximum of ``flags`` over all processes (itself on one process)."""
    trainer = getattr(module, "_trainer", None)
    if trainer is None or trainer.world_size <= 1:
        return flags
    return trainer.strategy.reduce(flags, reduce_op="max")


def _global_step(module: LightningModule) -> int:
    trainer = getattr(module, "_trainer", None)
    return int(trainer.global_step) if trainer is not None else 0


def _is_global_zero(module: LightningModule) -> bool:
    trainer = getattr(module, "_trainer", None)
    return trainer is None or bool(trainer.is_global_zero)


def _gradients_finite(parameters: list[torch.nn.Parameter]) -> bool:
    if not parameters:
        return True
    # One norm per tensor, then one host sync for the lot; inf and NaN survive a norm.
    norms = torch.stack([torch.linalg.vector_norm(p.grad.detach()) for p in parameters])
    return bool(torch.isfinite(norms).all())


def _drop_gradients(parameters: list[torch.nn.Parameter]) -> None:
    for parameter in parameters:
        parameter.grad = None

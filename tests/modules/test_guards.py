"""NonFiniteLossGuard: skipped batches change nothing, streaks stop the run naming the objective.

Trained for real (tiny equivariant transformer, the first NCI molecules) with an objective that
turns its loss (or only its gradient) into NaN at chosen training calls.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch_geometric.data import Batch

from molssl.encoders.base import EncoderOutput
from molssl.modules import PretrainModule
from molssl.modules.guards import NonFiniteLossError, NonFiniteLossGuard
from molssl.objectives import CoordDenoise, ObjectiveResult
from tests.modules.pretrain_fixtures import (
    prepare_small_cache,
    quiet_trainer,
    small_datamodule,
    tiny_et,
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_small_cache(tmp_path_factory.getbasetemp() / "molssl_cache")


class FlakyDenoise(CoordDenoise):
    """Coordinate denoising whose loss (``mode="loss"``) or gradient (``mode="gradient"``) is
    NaN at the listed training calls (0-based); evaluation calls are never touched."""

    def __init__(
        self, nan_at: tuple[int, ...] = (), mode: str = "loss", name: str = "flaky"
    ) -> None:
        super().__init__(name=name)
        self.nan_at = set(nan_at)
        self.mode = mode
        self.training_calls = 0

    def loss(self, batch: Batch, outputs: Mapping[str, EncoderOutput]) -> ObjectiveResult:
        result = super().loss(batch, outputs)
        if self.training:
            if self.training_calls in self.nan_at:
                if self.mode == "loss":
                    result.loss = result.loss * float("nan")
                else:
                    # Finite value (0), NaN gradient: d sqrt(x) / dx at 0 is inf, times 0.
                    result.loss = result.loss + torch.sqrt(outputs["3d"].node.sum() * 0.0)
            self.training_calls += 1
        return result


def flaky_module(nan_at: tuple[int, ...], mode: str = "loss", **kwargs: object) -> PretrainModule:
    return PretrainModule(
        objectives=[CoordDenoise(), FlakyDenoise(nan_at, mode)],
        encoder_3d=tiny_et(),
        lr=1e-3,
        warmup_steps=1,
        **kwargs,
    )


class StepRecorder(Callback):
    """Per training batch: did any weight or AdamW state change, and the logged counters."""

    def __init__(self) -> None:
        self.weights_changed: list[bool] = []
        self.adam_steps: list[float] = []
        self.skipped: list[float] = []
        self.gradients_skipped: list[float] = []

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: object, batch_idx: int
    ) -> None:
        self._before = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: object,
        batch: object,
        batch_idx: int,
    ) -> None:
        after = pl_module.state_dict()
        parameters = {name for name, _ in pl_module.named_parameters()}
        self.weights_changed.append(
            any(not torch.equal(after[k], self._before[k]) for k in parameters)
        )
        state = trainer.optimizers[0].state
        self.adam_steps.append(max((float(s["step"]) for s in state.values()), default=0.0))
        metrics = trainer.callback_metrics
        self.skipped.append(float(metrics["train/nonfinite_skipped"]))
        self.gradients_skipped.append(float(metrics["train/nonfinite_gradients_skipped"]))


def fit(
    module: PretrainModule, cache_dir: Path, root: Path, **trainer_args: object
) -> StepRecorder:
    recorder = StepRecorder()
    settings = {"limit_val_batches": 0, "callbacks": [recorder], **trainer_args}
    quiet_trainer(root, **settings).fit(module, small_datamodule(cache_dir))
    return recorder


def test_nonfinite_batches_are_skipped_counted_and_change_nothing(
    cache_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    module = flaky_module(nan_at=(1, 3, 4))
    with caplog.at_level(logging.WARNING, logger="molssl.modules.guards"):
        recorder = fit(module, cache_dir, tmp_path, max_steps=6)
    assert recorder.weights_changed == [True, False, True, False, False, True]
    # AdamW's own step count does not move either: its moments are untouched.
    assert recorder.adam_steps == [1, 1, 2, 2, 2, 3]
    assert recorder.skipped == [0, 1, 1, 2, 3, 3]
    assert recorder.gradients_skipped == [0] * 6
    # A skipped step still counts: the step number and the LR schedule move on.
    assert module.trainer.global_step == 6
    warnings = [r.getMessage() for r in caplog.records if r.name == "molssl.modules.guards"]
    assert len(warnings) == 3
    assert all("flaky" in w and "coord_denoise" not in w for w in warnings)
    assert "step 1 " in warnings[0] and "2 in a row" in warnings[2]
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_a_streak_stops_training_naming_the_objective(cache_dir: Path, tmp_path: Path) -> None:
    module = flaky_module(nan_at=(1, 2, 3), max_consecutive_nonfinite=3)
    with pytest.raises(NonFiniteLossError, match="'flaky' in 3") as info:
        fit(module, cache_dir, tmp_path, max_steps=8)
    assert info.value.parts == ("flaky",)
    assert info.value.consecutive == 3
    assert "global steps 1 to 3" in str(info.value)
    assert "coord_denoise" not in str(info.value)


def test_nonfinite_gradients_of_a_finite_loss_are_dropped(cache_dir: Path, tmp_path: Path) -> None:
    module = flaky_module(nan_at=(2,), mode="gradient")
    recorder = fit(module, cache_dir, tmp_path, max_steps=4)
    assert recorder.weights_changed == [True, True, False, True]
    assert recorder.adam_steps == [1, 2, 2, 3]
    assert recorder.gradients_skipped == [0, 0, 1, 1]
    assert recorder.skipped == [0, 0, 0, 0]
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_gradient_streak_is_an_error_too(cache_dir: Path, tmp_path: Path) -> None:
    module = flaky_module(nan_at=(0, 1), mode="gradient", max_consecutive_nonfinite=2)
    with pytest.raises(NonFiniteLossError, match="gradients were non-finite") as info:
        fit(module, cache_dir, tmp_path, max_steps=4)
    assert info.value.parts == ("gradients",)


def test_accumulation_steps_with_the_window_s_finite_batches(
    cache_dir: Path, tmp_path: Path
) -> None:
    # Windows of two batches over an epoch of five (18 molecules, batches of 4): calls (0, 1)
    # with one NaN still step, (2, 3) both NaN do not, the epoch's last batch (4) steps alone.
    module = flaky_module(nan_at=(0, 2, 3))
    recorder = fit(module, cache_dir, tmp_path, max_steps=3, accumulate_grad_batches=2)
    # on_train_batch_end runs per batch; the optimiser steps at the last batch of a window.
    assert recorder.weights_changed == [False, True, False, False, True]
    assert recorder.adam_steps == [0, 1, 1, 1, 2]
    assert module.trainer.global_step == 3
    assert recorder.skipped[-1] == 3


def test_skip_loss_gives_every_parameter_a_zero_gradient() -> None:
    module = flaky_module(nan_at=())
    loss = module.nonfinite_guard.skip_loss(module)
    assert loss.item() == 0.0
    loss.backward()
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None, name
        assert torch.count_nonzero(parameter.grad) == 0, name


def test_check_without_a_trainer_counts_and_resets() -> None:
    module = flaky_module(nan_at=())
    guard = NonFiniteLossGuard(max_consecutive=2)
    one, nan, inf = torch.tensor(1.0), torch.tensor(float("nan")), torch.tensor(float("inf"))
    assert guard.check(module, one, {"a": one, "b": one})
    assert not guard.check(module, inf, {"a": one, "b": inf})
    assert (guard.skipped, guard.consecutive) == (1, 1)
    assert guard.check(module, one, {"a": one, "b": one})
    assert guard.consecutive == 0
    assert not guard.check(module, nan, {"a": nan, "b": one})
    # The total alone overflowing (parts finite) is named "total".
    with pytest.raises(NonFiniteLossError, match="'a' in 1") as info:
        guard.check(module, inf, {"a": one, "b": one})
    assert info.value.parts == ("a",)
    assert guard.skipped == 3
    assert guard.state_dict() == {"skipped": 3, "gradients_skipped": 0}


def test_only_the_total_nonfinite_names_the_total() -> None:
    module = flaky_module(nan_at=())
    guard = NonFiniteLossGuard(max_consecutive=1)
    one = torch.tensor(1.0)
    with pytest.raises(NonFiniteLossError, match="'total' in 1") as info:
        guard.check(module, torch.tensor(float("inf")), {"a": one})
    assert info.value.parts == ("total",)


def test_max_consecutive_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_consecutive"):
        NonFiniteLossGuard(max_consecutive=0)


def test_the_stop_error_survives_a_process_boundary() -> None:
    # A fine-tuning grid runs each fit in a worker process and gets its error back by pickle.
    error = NonFiniteLossError("10 non-finite batches in a row", ("total", "homo"), 10)
    restored = pickle.loads(pickle.dumps(error))
    assert isinstance(restored, NonFiniteLossError) and str(restored) == str(error)
    assert (restored.parts, restored.consecutive) == (("total", "homo"), 10)

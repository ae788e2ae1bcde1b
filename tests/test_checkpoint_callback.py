"""``last.ckpt`` holds the state a ``molssl fit`` run ended in (molssl.checkpoint_callback).

Lightning writes ``last.ckpt`` only beside another checkpoint, so without the callback a run
stopped between two ``every_n_train_steps`` multiples (``max_steps``, ``max_time``) or one that
``monitor``-s a metric (best at an early step) leaves an older ``last.ckpt``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from torch import Tensor

from molssl.cli import run_trainer_command
from tests.toy_modules import ToyRegressor

TOY = {
    "model": {"class_path": "tests.toy_modules.ToyRegressor", "init_args": {"num_features": 3}},
    "data": {
        "class_path": "tests.toy_modules.ToyRegressionData",
        "init_args": {"num_samples": 100, "num_features": 3, "seed": 7, "batch_size": 16},
    },
    "trainer": {
        "accelerator": "cpu",
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": False,
    },
}


class SlowToyRegressor(ToyRegressor):
    """The toy regressor, 50 ms a step, so that ``trainer.max_time`` stops it mid-run."""

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        time.sleep(0.05)
        return super().training_step(batch, batch_idx)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))


def _fit(tmp_path: Path, *overrides: str, config: dict = TOY) -> tuple[object, Path]:
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(config))
    folder = tmp_path / "ckpt"
    cli = run_trainer_command(
        ["fit", "--config", str(path), f"--checkpoint.dirpath={folder}", *overrides]
    )
    return cli, folder


def _assert_last_is_final(cli: object, folder: Path) -> dict:
    saved = torch.load(folder / "last.ckpt", weights_only=True)
    trainer, model = cli.trainer, cli.model  # type: ignore[attr-defined]
    assert saved["global_step"] == trainer.global_step
    for name, value in model.state_dict().items():
        torch.testing.assert_close(saved["state_dict"][name], value, rtol=0, atol=0)
    return saved


def test_a_run_stopped_between_periodic_checkpoints_keeps_its_last_step(tmp_path: Path) -> None:
    cli, folder = _fit(tmp_path, "--trainer.max_steps=7", "--checkpoint.every_n_train_steps=3")
    assert cli.trainer.global_step == 7  # type: ignore[attr-defined]
    _assert_last_is_final(cli, folder)
    # The periodic checkpoints are still there, at their own steps.
    assert {p.name for p in folder.glob("*.ckpt")} >= {"last.ckpt", "epoch=1-step=6.ckpt"}


def test_a_run_stopped_by_max_time_keeps_its_last_step(tmp_path: Path) -> None:
    config = {**TOY, "model": {**TOY["model"], "class_path": f"{__name__}.SlowToyRegressor"}}
    cli, folder = _fit(
        tmp_path,
        "--trainer.max_time=00:00:00:01",
        "--trainer.max_steps=1000",
        "--checkpoint.every_n_train_steps=3",
        config=config,
    )
    assert 0 < cli.trainer.global_step < 1000  # type: ignore[attr-defined]
    _assert_last_is_final(cli, folder)


def test_a_monitored_run_keeps_its_last_step_not_its_best(tmp_path: Path) -> None:
    # mode=max on a falling validation error: the best checkpoint is the first epoch's.
    cli, folder = _fit(
        tmp_path,
        "--trainer.max_epochs=4",
        "--checkpoint.monitor=val/mse",
        "--checkpoint.mode=max",
    )
    best = torch.load(cli.trainer.checkpoint_callback.best_model_path, weights_only=True)  # type: ignore[attr-defined]
    last = _assert_last_is_final(cli, folder)
    assert best["global_step"] < last["global_step"] == cli.trainer.global_step  # type: ignore[attr-defined]

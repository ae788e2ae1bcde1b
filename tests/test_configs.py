"""Every shipped config trains: ``molssl fit --config <yaml>`` with tiny sizes, in-process.

Configs are found by globbing ``configs/``, so a new YAML is tested without touching this file.
Sizes are shrunk on the command line (encoder widths, layers and heads; a small embedded default;
tiny batches), never in the configs, which keep the papers' values. Then one short UniCorn run
goes through ``molssl test --ckpt``: pre-training's test stage reports the objectives' losses on
the held-out split, and those numbers are recomputed here from the checkpoint by hand.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer

from molssl.cli import main
from molssl.datamodules import PretrainDataModule
from molssl.modules import PretrainModule
from tests.modules.pretrain_fixtures import (
    TINY_ENCODER_ARGS,
    prepare_small_cache,
    small_data_args,
    weighted_epoch_metrics,
)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted(CONFIG_DIR.rglob("*.yaml"))
ENCODER_KEYS = ("encoder_3d", "encoder_2d", "encoder_blend")


class RecordFitMetrics(Callback):
    """Keeps the metrics of the last fit in this process, for the test to read."""

    last: dict[str, float] = {}

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        RecordFitMetrics.last = {k: float(v) for k, v in trainer.callback_metrics.items()}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_small_cache(tmp_path_factory.getbasetemp() / "molssl_cache")


@pytest.fixture(autouse=True)
def _isolated_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Relative paths in the configs (runs/) land in tmp_path; main() may extend sys.path.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))


def tiny_overrides(config: dict[str, Any], cache_dir: Path) -> list[str]:
    """Command-line arguments shrinking a config's encoders and data to test size."""
    args: list[str] = []
    init_args = config["model"]["init_args"]
    for key in ENCODER_KEYS:
        encoder = init_args.get(key)
        if not encoder:
            continue
        class_path = encoder["class_path"]
        if class_path not in TINY_ENCODER_ARGS:
            pytest.fail(f"no tiny sizes for {class_path}: add them to TINY_ENCODER_ARGS")
        for name, value in TINY_ENCODER_ARGS[class_path].items():
            args += [f"--model.init_args.{key}.init_args.{name}", str(value)]
    for name, value in small_data_args(cache_dir).items():
        args += [f"--data.init_args.{name}", str(value)]
    return [
        *args,
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]


def objective_names(config: dict[str, Any]) -> list[str]:
    """Names the config's objectives log under (the snake-cased class unless given)."""
    from molssl.objectives.base import snake_case

    names = []
    for entry in config["model"]["init_args"]["objectives"]:
        given = (entry.get("init_args") or {}).get("name")
        names.append(given or snake_case(entry["class_path"].rsplit(".", 1)[-1]))
    return names


def test_configs_are_found() -> None:
    names = {path.relative_to(CONFIG_DIR).as_posix() for path in CONFIGS}
    assert {
        "unicorn.yaml",
        "moleblend.yaml",
        "frad.yaml",
        "coord.yaml",
        "attrmask.yaml",
        "ablations/unicorn_no_denoise.yaml",
        "ablations/unicorn_no_mask_contrast.yaml",
    } <= names


@pytest.mark.parametrize("config_path", CONFIGS, ids=lambda p: p.relative_to(CONFIG_DIR).as_posix())
def test_config_runs_fast_dev_run(config_path: Path, cache_dir: Path) -> None:
    config = yaml.safe_load(config_path.read_text())
    assert config_path.read_text().startswith("#"), "each config opens with a header comment"
    RecordFitMetrics.last = {}
    main(
        [
            "fit",
            "--config",
            str(config_path),
            *tiny_overrides(config, cache_dir),
            "--trainer.fast_dev_run=true",
            "--trainer.callbacks+=tests.test_configs.RecordFitMetrics",
        ]
    )
    metrics = RecordFitMetrics.last
    assert math.isfinite(metrics["train/loss"])
    for name in objective_names(config):
        for stage in ("train", "val"):
            value = metrics[f"{stage}/{name}/loss"]
            assert math.isfinite(value), f"{stage}/{name}/loss = {value}"


def test_unicorn_fit_then_test_from_the_checkpoint_alone(cache_dir: Path, tmp_path: Path) -> None:
    config_path = CONFIG_DIR / "unicorn.yaml"
    config = yaml.safe_load(config_path.read_text())
    main(
        [
            "fit",
            "--config",
            str(config_path),
            *tiny_overrides(config, cache_dir),
            "--trainer.max_steps=3",
            "--trainer.val_check_interval=3",
            "--model.init_args.warmup_steps=1",
        ]
    )
    (ckpt,) = tmp_path.rglob("last.ckpt")
    main(["test", "--ckpt", str(ckpt), "--trainer.enable_progress_bar=false"])
    (metrics_path,) = tmp_path.rglob("test_metrics.json")
    logged = json.loads(metrics_path.read_text())["metrics"]

    # By hand: the objective list comes back from the checkpoint's hyper-parameters, the data
    # are the run's held-out split with its fixed views.
    module = PretrainModule.load_from_checkpoint(ckpt)
    data = PretrainDataModule(**small_data_args(cache_dir))
    data.set_views(module.pipeline_views())
    data.setup("test")
    expected = weighted_epoch_metrics(module, data.test_dataloader(), stage="test")
    names = objective_names(config)
    assert [objective.name for objective in module.objectives] == names
    assert {f"test/{name}/loss" for name in names} | {"test/loss"} <= set(logged)
    assert set(logged) == set(expected)
    for key, value in expected.items():
        assert logged[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key

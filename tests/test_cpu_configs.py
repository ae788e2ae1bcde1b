"""configs/cpu/: a CPU-sized sibling of every pre-training config, trained at its own size.

Each sibling must be its paper config with only sizes and the run's length changed (the model,
objectives, views, data module and their other settings the same), so that what a user tries
on a laptop is what the paper config trains. Each one then trains two steps at its own model
size, and its memory estimate is a small fraction of what the paper size needs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightning.pytorch import LightningModule

from molssl.callbacks.memory import estimate_step_memory
from molssl.checkpoints import instantiate_spec
from molssl.cli import main
from tests.modules.pretrain_fixtures import small_datamodule
from tests.test_configs import RecordFitMetrics, finetune_overrides, objective_names

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CPU_DIR = CONFIG_DIR / "cpu"
PRETRAINING = sorted(
    path
    for path in CONFIG_DIR.rglob("*.yaml")
    if path.relative_to(CONFIG_DIR).parts[0] not in ("finetune", "search", "cpu")
)
CPU_CONFIGS = sorted(CPU_DIR.rglob("*.yaml"))
#: Keys a CPU sibling may set differently: sizes, the schedule's length, where it logs.
SIZE_KEYS = {
    "hidden_channels", "ffn_channels", "num_layers", "num_heads", "num_rbf", "num_gaussians",
    "batch_size", "num_workers", "num_molecules", "val_fraction", "max_steps", "max_epochs",
    "val_check_interval", "every_n_train_steps", "log_every_n_steps", "warmup_steps", "lr",
    "min_lr_ratio", "name", "callbacks", "accumulate_grad_batches", "pos_channels", "pair_channels",
}  # fmt: skip


pytestmark = pytest.mark.usefixtures("isolated_cli")


@pytest.fixture
def cache_dir(small_pretrain_cache: Path) -> Path:
    return small_pretrain_cache


def differing_keys(paper: Any, cpu: Any, key: str = "") -> set[str]:
    """Names of the leaves (or whole entries) where two configs differ."""
    if isinstance(paper, dict) and isinstance(cpu, dict):
        found: set[str] = set()
        for name in paper.keys() | cpu.keys():
            found |= differing_keys(paper.get(name), cpu.get(name), name)
        return found
    if isinstance(paper, list) and isinstance(cpu, list) and len(paper) == len(cpu):
        return set().union(*(differing_keys(a, b, key) for a, b in zip(paper, cpu, strict=True)))
    return set() if paper == cpu else {key}


def test_every_pretraining_config_has_a_sibling_differing_only_in_size() -> None:
    assert PRETRAINING
    for paper_path in [*PRETRAINING, CONFIG_DIR / "finetune" / "freesolv.yaml"]:
        cpu_path = CPU_DIR / paper_path.relative_to(CONFIG_DIR)
        assert cpu_path.is_file(), f"no CPU sibling of {paper_path.relative_to(CONFIG_DIR)}"
        paper, cpu = (yaml.safe_load(p.read_text()) for p in (paper_path, cpu_path))
        assert differing_keys(paper, cpu) <= SIZE_KEYS, cpu_path
        assert cpu_path.read_text().startswith("# CPU-sized sibling of configs/"), cpu_path
    assert len(CPU_CONFIGS) == len(PRETRAINING) + 1


@pytest.mark.parametrize(
    "config_path",
    [path for path in CPU_CONFIGS if "finetune" not in path.parts],
    ids=lambda p: p.relative_to(CPU_DIR).as_posix(),
)
def test_cpu_config_trains_at_its_own_model_size(config_path: Path, cache_dir: Path) -> None:
    config = yaml.safe_load(config_path.read_text())
    data = {"num_molecules": 24, "cache_dir": str(cache_dir), "batch_size": 8}
    RecordFitMetrics.last = {}
    main(
        [
            "fit",
            "--config",
            str(config_path),
            *(f"--data.init_args.{name}={value}" for name, value in data.items()),
            "--data.init_args.val_fraction=0.25",
            "--trainer.max_steps=2",
            "--trainer.val_check_interval=2",
            "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false",
            "--trainer.callbacks+=tests.test_configs.RecordFitMetrics",
        ]
    )
    for name in objective_names(config):
        assert math.isfinite(RecordFitMetrics.last[f"train/{name}/loss"]), name


def test_the_cpu_freesolv_config_fine_tunes_the_cpu_unicorn_encoder(tmp_path: Path) -> None:
    # Its encoder is configs/cpu/unicorn.yaml's 3D encoder, so `make demo` initialises it.
    cpu_unicorn = yaml.safe_load((CPU_DIR / "unicorn.yaml").read_text())
    config_path = CPU_DIR / "finetune" / "freesolv.yaml"
    config = yaml.safe_load(config_path.read_text())
    assert (
        config["model"]["init_args"]["encoder"] == cpu_unicorn["model"]["init_args"]["encoder_3d"]
    )
    overrides = finetune_overrides(config, tmp_path)
    encoder_flags = [
        i for i, arg in enumerate(overrides) if arg.startswith("--model.init_args.encoder")
    ]
    overrides = [
        arg
        for i, arg in enumerate(overrides)
        if i not in encoder_flags and i - 1 not in encoder_flags
    ]
    main(["fit", "--config", str(config_path), *overrides, "--trainer.fast_dev_run=true"])


def test_the_paper_size_needs_many_times_the_cpu_sizes_memory(cache_dir: Path) -> None:
    estimates = {}
    for name, path in (("paper", CONFIG_DIR / "unicorn.yaml"), ("cpu", CPU_DIR / "unicorn.yaml")):
        config = yaml.safe_load(path.read_text())
        module = instantiate_spec(config["model"], LightningModule, name)
        data = small_datamodule(cache_dir, batch_size=8)
        data.set_views(module.pipeline_views())
        data.setup("fit")
        batch = next(iter(data.train_dataloader()))
        size = config["data"]["init_args"]["batch_size"]
        estimates[name] = estimate_step_memory(module.train(), batch, batch_size=size).total
    # The paper config was OOM-killed at 23 GB resident on a 24 GB machine.
    assert estimates["paper"] > 16 * 2**30 > 16 * estimates["cpu"]

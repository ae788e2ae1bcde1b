"""``MemoryCheck``: a warning with the estimate before the first CPU step that will not fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import LightningModule

from molssl.callbacks import memory
from molssl.callbacks.memory import estimate_step_memory, machine_memory_bytes
from molssl.checkpoints import instantiate_spec
from molssl.cli import main
from tests.modules.pretrain_fixtures import small_datamodule

CPU_UNICORN = Path(__file__).resolve().parents[2] / "configs" / "cpu" / "unicorn.yaml"


pytestmark = pytest.mark.usefixtures("isolated_cli")


@pytest.fixture
def cache_dir(small_pretrain_cache: Path) -> Path:
    return small_pretrain_cache


def test_the_estimate_leaves_the_module_and_the_random_state_alone(cache_dir: Path) -> None:
    config = yaml.safe_load(CPU_UNICORN.read_text())
    module = instantiate_spec(config["model"], LightningModule, "model").train()
    data = small_datamodule(cache_dir, batch_size=8)
    data.set_views(module.pipeline_views())
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    before = {name: tensor.clone() for name, tensor in module.state_dict().items()}
    rng = torch.get_rng_state()
    estimate = estimate_step_memory(module, batch)
    assert torch.equal(torch.get_rng_state(), rng)  # same state: bit-identity is the promise
    after = module.state_dict()
    assert before.keys() == after.keys()
    # The estimate must not touch the weights at all: bit-identity is the promise.
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert module.training and estimate.batch_size == batch.num_graphs
    assert estimate.activations > 0 and estimate.parameters == 4 * sum(
        p.numel() * p.element_size() for p in module.parameters()
    )
    doubled = estimate_step_memory(module, batch, batch_size=2 * batch.num_graphs)
    assert doubled.activations == pytest.approx(2 * estimate.activations, rel=1e-6)
    assert machine_memory_bytes() > 0


@pytest.mark.parametrize("memory_bytes", [2**26, None], ids=["64 MB machine", "this machine"])
def test_a_warning_before_the_first_step_and_the_run_goes_on(
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    memory_bytes: int | None,
) -> None:
    if memory_bytes is not None:
        monkeypatch.setattr(memory, "machine_memory_bytes", lambda: memory_bytes)
    main(
        [
            "fit",
            "--config",
            str(CPU_UNICORN),
            f"--data.init_args.cache_dir={cache_dir}",
            "--data.init_args.num_molecules=24",
            "--data.init_args.batch_size=8",
            "--data.init_args.val_fraction=0.25",
            "--trainer.max_steps=1",
            "--trainer.limit_val_batches=0",
            "--trainer.enable_progress_bar=false",
        ]
    )
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if line.startswith("molssl fit: warning:")]
    if memory_bytes is None:
        assert warned == []
        return
    (line,) = warned
    assert "one training step needs about" in line and "8 molecules per batch" in line
    assert "configs/cpu/" in line and "0.1 GB" in line  # this machine's 64 MB, rounded
    assert len(list(tmp_path.rglob("last.ckpt"))) == 1  # a warning, not an error

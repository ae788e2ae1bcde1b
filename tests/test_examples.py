"""The README's worked ablation (``examples/``) runs as documented, with no edit to molssl."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import yaml

from molssl.cli import main
from tests.test_configs import CONFIG_DIR, RecordFitMetrics, tiny_overrides
from tests.test_configs import cache_dir as cache_dir

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


@pytest.fixture(autouse=True)
def _run_from_a_copy_of_the_repo_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The README runs from the repository root, where ``examples.heavy_mask`` imports; runs/
    # must land in tmp_path, so work there with the repository root on sys.path.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(REPO), *sys.path])


def test_heavy_mask_subclass_overrides_one_method() -> None:
    from examples.heavy_mask import HeavyAtomFragmentMask

    own = {k for k, v in vars(HeavyAtomFragmentMask).items() if callable(v)}
    assert own == {"choose_mask"}
    source = (EXAMPLES / "heavy_mask.py").read_text().splitlines()
    code = [line for line in source if line.strip() and not line.lstrip().startswith("#")]
    assert len(code) <= 30  # docstrings included; the README promises a short subclass


def test_heavy_mask_keeps_hydrogens_visible(cache_dir: Path) -> None:
    from examples.heavy_mask import HeavyAtomFragmentMask

    from molssl.datamodules import PretrainDataModule
    from tests.modules.pretrain_fixtures import small_data_args

    objective = HeavyAtomFragmentMask()
    data = PretrainDataModule(**small_data_args(cache_dir))
    data.set_views(objective.views())
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch.atom_mask.any()
    assert not batch.atom_mask[batch.z == 1].any()


def test_readme_ablation_command_runs(cache_dir: Path) -> None:
    config = yaml.safe_load((CONFIG_DIR / "unicorn.yaml").read_text())
    RecordFitMetrics.last = {}
    main(
        [
            "fit",
            "--config",
            str(CONFIG_DIR / "unicorn.yaml"),
            "--config",
            str(EXAMPLES / "heavy_mask.yaml"),
            *tiny_overrides(config, cache_dir),
            "--trainer.fast_dev_run=true",
            "--trainer.callbacks+=tests.test_configs.RecordFitMetrics",
        ]
    )
    loss = RecordFitMetrics.last["train/heavy_atom_fragment_mask/loss"]
    assert math.isfinite(loss)

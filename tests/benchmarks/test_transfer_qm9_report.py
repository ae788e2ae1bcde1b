"""QM9 label-efficiency report: selection on validation, and failed runs kept as failed."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tests.benchmarks.scripts import load_script

TRANSFER = Path(__file__).resolve().parents[2] / "benchmarks" / "transfer"


@pytest.fixture(scope="module")
def qm9_report() -> ModuleType:
    sys.path.insert(0, str(TRANSFER))  # its `from common import ...`
    return load_script("transfer/qm9_report.py", "qm9_report")


def finished(part: Path, val: float, homo: float) -> None:
    """A finished run: ``seeds.json`` whose checkpoint path carries its validation MAE."""
    part.mkdir(parents=True)
    run = {"seed": 0, "ckpt_path": str(val), "metrics": {"test/mae/homo": homo}}
    (part / "seeds.json").write_text(json.dumps({"runs": [run]}))


def failed(part: Path, seed: int) -> None:
    part.mkdir(parents=True)
    (part / "failed.json").write_text(json.dumps({"seed": seed, "error": "NonFiniteLossError"}))


def test_report_chooses_on_validation_and_keeps_failed_seeds(
    qm9_report: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(qm9_report, "best_validation_rmse", float)
    monkeypatch.setattr(qm9_report, "checkpoint_head_init", lambda ckpt: "zero")
    root = tmp_path / "finetune"
    for seed, homo in enumerate([100.0, 110.0, 120.0]):
        finished(root / "scratch" / "lr_0.01" / f"part_{seed}", 50.0, homo)
    finished(root / "scratch" / "lr_0.02" / "part_0", 60.0, 10.0)  # best on test, not on val
    finished(root / "frad" / "lr_0.01" / "part_0", 70.0, 90.0)
    failed(root / "frad" / "lr_0.01" / "part_1", 1)
    finished(root / "frad" / "lr_0.01" / "part_2", 70.0, 70.0)
    failed(root / "frad" / "lr_0.02" / "part_0", 0)  # diverged: loses the selection
    args = argparse.Namespace(
        lrs=[0.01, 0.02], encoder_lr_scales=[1.0], seeds=[0, 1, 2], search_seeds=[0],
        targets=["homo"], tag="", train_size=1000, results="results.json",
    )  # fmt: skip
    results = qm9_report.collect(tmp_path, ["scratch", "frad"], args)
    assert math.isinf(results["frad"]["lr_0.02"]["runs"][0]["val_mae_mev"])
    rows = qm9_report.report(tmp_path, results, args)
    record = json.loads((root / "results.json").read_text())
    assert record["chosen"]["scratch"]["point"] == record["chosen"]["frad"]["point"] == "lr_0.01"
    by_arm = {arm: [(r["seed"], r["test_mae_mev"]) for r in rows if r["pretraining"] == arm]
              for arm in ("scratch", "frad")}  # fmt: skip
    assert by_arm == {"scratch": [(0, 100.0), (1, 110.0), (2, 120.0)],
                      "frad": [(0, 90.0), (1, None), (2, 70.0)]}  # fmt: skip
    (failed_row,) = [r for r in rows if r["test_mae_mev"] is None]
    assert "NonFiniteLossError" in failed_row["failed"]
    assert all(r["train_size"] == 1000 and r["target"] == "homo" for r in rows)
    finished_rows = [r for r in rows if r["test_mae_mev"] is not None]
    assert all(r["head"] == "shared" and r["head_init"] == "zero" for r in finished_rows)


def test_head_init_comes_from_the_checkpoint(qm9_report: ModuleType, tmp_path: Path) -> None:
    """The run's own record; a checkpoint from before the option started at Xavier."""
    for name, hparams, expected in [
        ("new.ckpt", {"head": "equivariant", "head_init": "zero"}, "zero"),
        ("old.ckpt", {"head": "equivariant"}, "xavier"),
    ]:
        torch.save({"hyper_parameters": hparams}, tmp_path / name)
        assert qm9_report.checkpoint_head_init(str(tmp_path / name)) == expected

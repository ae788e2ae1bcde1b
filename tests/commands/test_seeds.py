"""``molssl seeds``: fit + test per seed on a real FreeSolv-layout file, then mean ± std."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import yaml

from molssl.cli import main
from molssl.commands.seeds import format_summary, run_seeds, summarise_runs
from tests.test_configs import CONFIG_DIR, finetune_overrides

FREESOLV = CONFIG_DIR / "finetune" / "freesolv.yaml"


@pytest.fixture(autouse=True)
def _isolated_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))


def test_summary_is_mean_and_population_std() -> None:
    runs = [{"metrics": {"test/rmse": v, "test/mae": 1.0}} for v in (1.0, 2.0, 4.0)]
    runs[1]["metrics"]["extra"] = 3.0  # present in one run only: not summarised
    summary = summarise_runs(runs)
    assert sorted(summary) == ["test/mae", "test/rmse"]
    assert summary["test/rmse"]["mean"] == pytest.approx(7 / 3)
    assert summary["test/rmse"]["std"] == pytest.approx(
        math.sqrt(((-4 / 3) ** 2 + (1 / 3) ** 2 + (5 / 3) ** 2) / 3)
    )
    assert summary["test/mae"]["std"] == 0.0
    assert format_summary(summary).splitlines() == [
        "test/mae: 1 ± 0 (n=3)",
        "test/rmse: 2.333 ± 1.2 (n=3)",
    ]


def test_seeds_fit_and_test_each_seed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = yaml.safe_load(FREESOLV.read_text())
    overrides = [*finetune_overrides(config, tmp_path / "files"), "--trainer.max_epochs=2"]
    main(["seeds", "--config", str(FREESOLV), "--seeds", "3", "7", "--output", "out", *overrides])
    record = json.loads((tmp_path / "out" / "seeds.json").read_text())
    assert [run["seed"] for run in record["runs"]] == [3, 7]
    for run in record["runs"]:
        ckpt = Path(run["ckpt_path"])
        assert ckpt.is_file() and ckpt.name != "last.ckpt", "the validation-chosen checkpoint"
        assert (tmp_path / "out" / f"seed_{run['seed']}") in ckpt.parents
        saved = yaml.safe_load(next(ckpt.parents[1].glob("config.yaml")).read_text())
        assert saved["seed_everything"] == run["seed"]
        assert saved["data"]["init_args"]["seed"] == run["seed"]
        # The test metrics are those `molssl test --ckpt` wrote beside the checkpoint.
        beside = json.loads((ckpt.parent / "metrics.json").read_text())
        assert run["metrics"] == pytest.approx(beside["metrics"])
    rmse = [run["metrics"]["test/rmse"] for run in record["runs"]]
    assert rmse[0] != rmse[1], "different seeds, different models"
    assert record["summary"]["test/rmse"]["values"] == rmse
    assert record["summary"]["test/rmse"]["mean"] == pytest.approx(sum(rmse) / 2)
    assert record["summary"]["test/rmse"]["std"] == pytest.approx(abs(rmse[0] - rmse[1]) / 2)
    out = capsys.readouterr().out
    assert format_summary(record["summary"]) in out
    assert "test/rmse: " in out and "(n=2)" in out
    first = torch.load(record["runs"][0]["ckpt_path"], weights_only=True)["state_dict"]
    second = torch.load(record["runs"][1]["ckpt_path"], weights_only=True)["state_dict"]
    assert not torch.equal(first["head.mlp.net.0.weight"], second["head.mlp.net.0.weight"])


def test_bad_seed_lists_and_missing_configs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="distinct seeds"):
        run_seeds(FREESOLV, [1, 1])
    with pytest.raises(SystemExit, match="config not found"):
        main(["seeds", "--config", str(tmp_path / "none.yaml")])

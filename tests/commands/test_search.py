"""``molssl search``: grid x seeds, selected on validation, the selected point tested alone.

The selection must not be able to see the test set: a fake trainer whose test metrics favour
another point than the validation metrics shows that the validation decides and that no other
point is ever tested; a real run on a FreeSolv-layout file shows the same on disk.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from molssl.cli import main
from molssl.commands import seeds as seeds_module
from molssl.commands.search import (
    GridError,
    PointResult,
    format_table,
    read_grid,
    run_search,
    select_point,
)
from molssl.commands.seeds import FitRun
from tests.test_configs import CONFIG_DIR, finetune_overrides

FREESOLV = CONFIG_DIR / "finetune" / "freesolv.yaml"
SEARCH_DIR = CONFIG_DIR / "search"


@pytest.fixture(autouse=True)
def _isolated_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_grid_points_are_the_product_in_file_order(tmp_path: Path) -> None:
    grid = write(
        tmp_path / "g.yaml", "model.init_args.lr: [1.0e-4, 1.0e-3]\ntrainer.max_epochs: 5\n"
    )
    assert read_grid(grid) == [
        {"model.init_args.lr": 1e-4, "trainer.max_epochs": 5},
        {"model.init_args.lr": 1e-3, "trainer.max_epochs": 5},
    ]
    # The paper's Table 9 grids.
    classification = read_grid(SEARCH_DIR / "table9_classification.yaml")
    regression = read_grid(SEARCH_DIR / "table9_regression.yaml")
    assert (len(classification), len(regression)) == (72, 36)
    assert {p["trainer.max_epochs"] for p in classification} == {5, 10, 25, 50}
    assert {p["data.init_args.batch_size"] for p in regression} == {8, 16, 32}
    assert {p["model.init_args.weight_decay"] for p in regression} == {0.0, 1e-5}
    lrs = {p["model.init_args.lr"] for p in regression}
    assert min(lrs) == 1e-4 and max(lrs) == 1e-3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- 1\n- 2\n", "expected a mapping"),
        ("model.init_args.lr: []\n", "at least one value"),
        ("model.init_args.lr: [1\n", "not YAML"),
        ("--lr: [1]\n", "expected a config entry"),
    ],
)
def test_bad_grid_files_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    grid = write(tmp_path / "bad.yaml", text)
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "--config", str(FREESOLV), "--grid", str(grid)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "bad.yaml" in err[0]
    with pytest.raises(GridError, match="not found"):
        read_grid(tmp_path / "none.yaml")


def point(index: int, scores: list[float | None], monitor: str = "val/rmse", mode: str = "min"):
    runs = tuple(FitRun(seed, f"p{index}s{seed}", None, monitor, mode, score)
                 for seed, score in enumerate(scores))  # fmt: skip
    return PointResult(index, {"lr": index}, runs)


def test_selection_reads_the_mean_validation_value() -> None:
    points = [point(0, [1.0, 3.0]), point(1, [1.5, 1.5]), point(2, [0.5, 3.1])]
    assert select_point(points).index == 1  # mean 1.5 beats 2.0 and 1.8
    best = [point(0, [0.7, 0.9], "val/auroc", "max"), point(1, [0.8, 0.8], "val/auroc", "max")]
    assert select_point(best).index == 0  # ties go to the earlier point
    with_nan = [point(0, [None, 0.1]), point(1, [2.0, 2.0])]
    assert select_point(with_nan).index == 1  # a run without a score is never selected
    with pytest.raises(GridError, match="val/ metric"):
        select_point([point(0, [1.0], "test/rmse")])
    with pytest.raises(GridError, match="differently"):
        select_point([point(0, [1.0]), point(1, [1.0], "val/mae")])
    with pytest.raises(GridError, match="finite mean"):
        select_point([point(0, [math.nan])])


class FakeTrainer:
    """``run_trainer_command`` stand-in: validation prefers lr 1e-3, the test set lr 1e-4."""

    VAL = {"0.0001": 2.0, "0.001": 1.0}
    TEST = {"0.0001": 0.1, "0.001": 9.0}

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.lr_of_ckpt: dict[str, str] = {}

    def __call__(self, argv: list[str]) -> SimpleNamespace:
        if argv[0] == "fit":
            lr = next(a.split("=", 1)[1] for a in argv if a.startswith("--model.init_args.lr="))
            seed = int(next(a.split("=", 1)[1] for a in argv if a.startswith("--seed_everything")))
            root = Path(next(a.split("=", 1)[1] for a in argv if "default_root_dir" in a))
            root.mkdir(parents=True)
            ckpt = root / "best.ckpt"
            ckpt.write_text("")
            self.lr_of_ckpt[str(ckpt.resolve())] = lr
            self.calls.append(("fit", lr))
            callback = SimpleNamespace(
                best_model_path=str(ckpt),
                last_model_path=str(ckpt),
                monitor="val/rmse",
                mode="min",
                best_model_score=torch.tensor(self.VAL[lr] + 0.01 * seed),
            )
            return SimpleNamespace(
                trainer=SimpleNamespace(checkpoint_callback=callback, log_dir=str(root))
            )
        assert argv[0] == "test", argv
        lr = self.lr_of_ckpt[argv[argv.index("--ckpt") + 1]]
        self.calls.append(("test", lr))
        metrics = {"test/rmse": torch.tensor(self.TEST[lr])}
        return SimpleNamespace(trainer=SimpleNamespace(callback_metrics=metrics))


def test_test_metrics_cannot_steer_the_selection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeTrainer()
    monkeypatch.setattr(seeds_module, "run_trainer_command", fake)
    grid = write(tmp_path / "g.yaml", "model.init_args.lr: [0.0001, 0.001]\n")
    record = run_search(FREESOLV, grid, [0, 1], tmp_path / "out")
    # Validation chose lr 1e-3 although the test set would have preferred lr 1e-4 ...
    assert record["selected"] == 1
    assert record["points"][1]["settings"] == {"model.init_args.lr": 0.001}
    assert record["test"]["summary"]["test/rmse"]["mean"] == pytest.approx(9.0)
    # ... because nothing was tested before every fit was done, and only lr 1e-3 was tested.
    kinds = [kind for kind, _ in fake.calls]
    assert kinds == ["fit"] * 4 + ["test"] * 2
    assert [lr for kind, lr in fake.calls if kind == "test"] == ["0.001", "0.001"]
    assert record["points"][0]["validation"]["values"] == pytest.approx([2.0, 2.01])
    assert all(set(entry) == {"index", "settings", "validation", "ckpt_paths"}
               for entry in record["points"])  # fmt: skip


def test_search_on_a_freesolv_file_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = yaml.safe_load(FREESOLV.read_text())
    overrides = finetune_overrides(config, tmp_path / "files")
    grid = write(
        tmp_path / "g.yaml", "model.init_args.lr: [1.0e-5, 3.0e-3]\ntrainer.max_epochs: [2]\n"
    )
    main(["search", "--config", str(FREESOLV), "--grid", str(grid), "--seeds", "0", "1",
          "--output", "out", *overrides])  # fmt: skip
    record = json.loads((tmp_path / "out" / "search.json").read_text())
    assert record["selected_on"]["monitor"] == "val/rmse"
    means = []
    for entry in record["points"]:
        scores = []
        for ckpt in entry["ckpt_paths"]:
            assert Path(ckpt).name != "last.ckpt", "the validation-chosen checkpoint"
            state = torch.load(ckpt, weights_only=False)["callbacks"]
            # molssl's checkpoint callback (a ModelCheckpoint subclass) keys its state by its name.
            (saved,) = [v for k, v in state.items() if "Checkpoint{" in k]
            scores.append(float(saved["best_model_score"]))
        assert entry["validation"]["values"] == pytest.approx(scores)
        means.append(sum(scores) / len(scores))
        tested = entry["index"] == record["selected"]
        # `molssl test --ckpt` writes metrics.json beside the checkpoint: only where selected.
        beside = [(Path(ckpt).parent / "metrics.json").is_file() for ckpt in entry["ckpt_paths"]]
        assert beside == [tested] * 2
    assert record["selected"] == means.index(min(means))
    runs = record["test"]["runs"]
    rmse = [run["metrics"]["test/rmse"] for run in runs]
    assert record["test"]["summary"]["test/rmse"]["mean"] == pytest.approx(sum(rmse) / 2)
    out = capsys.readouterr().out
    assert format_table(record) in out and "test/rmse: " in out and "(n=2)" in out
    table = format_table(record).splitlines()
    assert table[1 + record["selected"]].startswith("*")

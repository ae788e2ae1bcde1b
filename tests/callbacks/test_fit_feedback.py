"""What ``molssl fit``/``test`` tell the user while and after they run (molssl.callbacks).

Runs of the toy regressor through ``main``: the progress bar shows the global step and
molecules per second, which also reach TensorBoard; a run that leaves ``log_every_n_steps``
unset still logs several points per epoch; ``fit`` ends with the best validation metric and its
checkpoint; ``test`` prints one table; a run that fails before its first step leaves no folder.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from molssl.callbacks import THROUGHPUT_KEY, steps_between_logs
from molssl.cli import main
from tests.test_cli import TOY_CONFIG, write_yaml

# 400 samples: 240 training samples, 15 batches of 16 per epoch.
DATA = {**TOY_CONFIG["data"], "init_args": {**TOY_CONFIG["data"]["init_args"], "num_samples": 400}}


pytestmark = pytest.mark.usefixtures("isolated_cli")


def fit(tmp_path: Path, trainer: dict, *extra: str) -> Path:
    """Fits the toy regressor with these trainer settings; returns the run's log dir."""
    config = {**TOY_CONFIG, "data": DATA, "trainer": {**TOY_CONFIG["trainer"], **trainer}}
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = write_yaml(tmp_path / "toy.yaml", config)
    main(["fit", "--config", str(path), "--trainer.default_root_dir", str(tmp_path), *extra])
    (log_dir,) = {p.parent for p in tmp_path.rglob("config.yaml") if p.parent != tmp_path}
    return log_dir


def scalars(log_dir: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


def test_the_bar_shows_the_step_and_molecules_per_second_also_logged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_dir = fit(tmp_path, {"max_steps": 24, "enable_progress_bar": True})
    shown = capsys.readouterr().out  # Lightning's bar writes to stdout
    assert "step=24/24" in shown
    rates = [float(r) for r in re.findall(r"mol/s=(\d+)", shown)]
    assert rates and min(rates) > 0
    logged = scalars(log_dir, THROUGHPUT_KEY)
    assert logged and all(value > 0 for _, value in logged)


def test_a_few_points_per_epoch_unless_the_interval_is_set(tmp_path: Path) -> None:
    assert [steps_between_logs(n) for n in (1, 4, 17, 80, 1e9, float("inf"))] == [
        1, 1, 4, 20, 50, 50
    ]  # fmt: skip
    unset = fit(tmp_path / "unset", {"max_steps": -1, "max_epochs": 3, "log_every_n_steps": None})
    steps = [step for step, _ in scalars(unset, "train/mse")]
    assert len(steps) >= 3 * 4  # 15 batches per epoch: every 3 steps
    assert max(b - a for a, b in itertools.pairwise(steps)) == 3
    explicit = fit(tmp_path / "set", {"max_steps": -1, "max_epochs": 3, "log_every_n_steps": 20})
    assert [step for step, _ in scalars(explicit, "train/mse")] == [19, 39]


def test_fit_ends_with_the_best_validation_metric_and_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_dir = fit(
        tmp_path,
        {"max_steps": -1, "max_epochs": 3},
        "--checkpoint.monitor=val/mse",
        "--checkpoint.mode=min",
    )
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    match = re.fullmatch(
        r"molssl fit: best val/mse (\S+) \(checkpoint (\S+)\); last (\S+)", last_line
    )
    assert match, last_line
    best = min(value for _, value in scalars(log_dir, "val/mse"))
    assert float(match.group(1)) == pytest.approx(best, rel=1e-5)
    assert Path(match.group(2)).is_file() and Path(match.group(3)).name == "last.ckpt"


def test_test_prints_one_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log_dir = fit(tmp_path, {"max_steps": 4})
    capsys.readouterr()
    main(["test", "--ckpt", str(log_dir / "checkpoints" / "last.ckpt")])
    out = capsys.readouterr().out
    assert out.count("test/mse") == 1 and "Test metric" not in out and "DataLoader 0" not in out


def test_a_run_failing_before_its_first_step_leaves_no_run_folder(tmp_path: Path) -> None:
    # The data have 4 features, the model takes 3: the first forward pass fails.
    data = {**DATA, "init_args": {**DATA["init_args"], "num_features": 4}}
    config = {**TOY_CONFIG, "data": data}
    path = write_yaml(tmp_path / "bad.yaml", config)
    (tmp_path / "runs").mkdir()
    with pytest.raises(RuntimeError):
        main(["fit", "--config", str(path)])
    assert list((tmp_path / "runs").iterdir()) == []

"""The ``molssl`` command line, run in-process on a tiny linear regressor (tests/toy_modules.py)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser, Namespace

from molssl import __version__
from molssl.cli import (
    EXTRA_SUBCOMMANDS,
    ExtraSubcommand,
    format_metrics_table,
    main,
    register_subcommand,
    split_declared_options,
)
from tests.toy_modules import ToyRegressionData, ToyRegressor, ToyRegressorWithData

MODEL_ARGS = {"num_features": 3, "lr": 0.05}
DATA_ARGS = {"num_samples": 100, "num_features": 3, "noise": 0.1, "seed": 7, "batch_size": 16}
TOY_CONFIG = {
    "model": {"class_path": "tests.toy_modules.ToyRegressor", "init_args": MODEL_ARGS},
    "data": {"class_path": "tests.toy_modules.ToyRegressionData", "init_args": DATA_ARGS},
    "trainer": {
        "max_steps": 6,
        "accelerator": "cpu",
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "log_every_n_steps": 1,
    },
}


@pytest.fixture(autouse=True)
def _isolated_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Relative defaults (runs/) must land in tmp_path; main() may add the cwd to sys.path.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))


def write_yaml(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def fit_toy(root: Path, config: dict = TOY_CONFIG) -> Path:
    """Trains the toy regressor under ``root``; returns the run's log dir."""
    root.mkdir(parents=True, exist_ok=True)
    config_path = write_yaml(root / "toy.yaml", config)
    main(["fit", "--config", str(config_path), "--trainer.default_root_dir", str(root)])
    (log_dir,) = {path.parent for path in root.rglob("config.yaml")}
    return log_dir


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Log dir of one short ``molssl fit`` of the toy regressor, shared by this module's tests."""
    return fit_toy(tmp_path_factory.mktemp("fit"))


def direct_test_mse(ckpt_path: Path, **data_overrides: int) -> float:
    """Test MSE of a checkpoint's weights, computed without Lightning or the CLI."""
    model = ToyRegressor(**MODEL_ARGS)
    model.load_state_dict(torch.load(ckpt_path, weights_only=True)["state_dict"])
    x, y = ToyRegressionData(**{**DATA_ARGS, **data_overrides}).test_set.tensors
    with torch.no_grad():
        return torch.mean((model(x) - y) ** 2).item()


def read_metrics(root: Path, subcommand: str) -> dict[str, float]:
    (path,) = root.rglob(f"{subcommand}_metrics.json")
    return json.loads(path.read_text())["metrics"]


def run_expecting_exit(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit code and stderr of a command that must stop through SystemExit."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code, capsys.readouterr().err


# --- help, version and extra subcommands --------------------------------------------------------


def test_help_lists_trainer_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: molssl")
    for subcommand in ("fit", "validate", "test", "predict"):
        assert f"\n    {subcommand} " in out


def test_version_prints_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"molssl {__version__}"


@pytest.fixture
def echo_subcommand(monkeypatch: pytest.MonkeyPatch) -> list[Namespace]:
    """Registers a non-Trainer subcommand ``echo --count INT``; returns what its runs received."""
    received: list[Namespace] = []

    def add_arguments(parser: ArgumentParser) -> None:
        parser.add_argument("--count", type=int, required=True, help="How many times.")

    monkeypatch.setitem(
        EXTRA_SUBCOMMANDS, "echo", ExtraSubcommand("Repeat a word.", add_arguments, received.append)
    )
    return received


def test_extra_subcommand_runs_before_lightning(echo_subcommand: list[Namespace]) -> None:
    main(["echo", "--count", "3"])
    assert [ns.count for ns in echo_subcommand] == [3]
    assert not Path("runs").exists()


def test_extra_subcommand_is_listed_in_help(
    echo_subcommand: list[Namespace], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "\n    echo" in out
    assert "Repeat a word." in out
    assert "\n    fit " in out


def test_extra_subcommand_rejects_bad_arguments(
    echo_subcommand: list[Namespace], capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_expecting_exit(["echo", "--count", "many"], capsys)
    assert code == 2
    assert "count" in err and "many" in err
    assert "Traceback" not in err
    assert echo_subcommand == []


def test_forwarding_subcommand_receives_undeclared_options_as_overrides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    received: list[Namespace] = []

    def add_arguments(parser: ArgumentParser) -> None:
        parser.add_argument("--seeds", type=int, nargs="+", required=True)
        parser.add_argument("--output", default="out")

    monkeypatch.setitem(
        EXTRA_SUBCOMMANDS,
        "repeat",
        ExtraSubcommand("Repeat a run.", add_arguments, received.append, forward_unknown=True),
    )
    main(["repeat", "--seeds", "0", "1", "--trainer.max_epochs", "5", "--output=o", "--x=-1"])
    (namespace,) = received
    assert namespace.seeds == [0, 1] and namespace.output == "o"
    assert namespace.overrides == ["--trainer.max_epochs", "5", "--x=-1"]


def test_split_declared_options_keeps_values_with_their_option() -> None:
    parser = ArgumentParser()
    parser.add_argument("--config")
    parser.add_argument("--seeds", type=int, nargs="+")
    known, unknown = split_declared_options(
        parser,
        ["--config", "a.yaml", "--model.init_args.lr", "-0.5", "--seeds", "0", "-1", "--b=c"],
    )
    assert known == ["--config", "a.yaml", "--seeds", "0", "-1"]
    assert unknown == ["--model.init_args.lr", "-0.5", "--b=c"]


def test_register_subcommand_refuses_taken_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("molssl.cli.EXTRA_SUBCOMMANDS", {})
    register_subcommand("echo", "Repeat.", lambda parser: None, lambda ns: None)
    for name in ("fit", "test", "echo"):
        with pytest.raises(ValueError, match=name):
            register_subcommand(name, "Again.", lambda parser: None, lambda ns: None)


# --- fit, then evaluate a checkpoint on its own --------------------------------------------------


def test_fit_saves_config_last_checkpoint_and_tensorboard_log(trained_run: Path) -> None:
    saved = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert saved["model"]["class_path"] == "tests.toy_modules.ToyRegressor"
    assert saved["model"]["init_args"] == MODEL_ARGS
    assert saved["data"]["init_args"] == DATA_ARGS
    assert saved["seed_everything"] == 0
    # Our modules own their optimisers: the CLI adds no optimizer/lr_scheduler groups.
    assert "optimizer" not in saved and "lr_scheduler" not in saved
    assert (trained_run / "checkpoints" / "last.ckpt").is_file()
    assert list(trained_run.glob("events.out.tfevents.*"))
    assert (
        torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
        == TOY_CONFIG["trainer"]["max_steps"]
    )


@pytest.mark.parametrize("flag", ["--ckpt", "--ckpt_path"])
def test_test_with_checkpoint_alone_matches_direct_evaluation(
    trained_run: Path, tmp_path: Path, flag: str
) -> None:
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    main(["test", flag, str(ckpt), "--trainer.default_root_dir", str(tmp_path / "eval")])
    expected = direct_test_mse(ckpt)
    assert read_metrics(tmp_path / "eval", "test")["test/mse"] == pytest.approx(expected, rel=1e-5)
    # The trained weights, not a fresh initialisation, were evaluated.
    untrained = ToyRegressor(**MODEL_ARGS)
    x, y = ToyRegressionData(**DATA_ARGS).test_set.tensors
    with torch.no_grad():
        assert torch.mean((untrained(x) - y) ** 2).item() != pytest.approx(expected, rel=1e-3)


def test_test_writes_metrics_beside_the_checkpoint_and_prints_a_table(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    main(["test", "--ckpt", str(ckpt), "--trainer.default_root_dir", str(tmp_path / "eval")])
    beside = json.loads((ckpt.parent / "metrics.json").read_text())
    (in_log_dir,) = (tmp_path / "eval").rglob("test_metrics.json")
    assert beside == json.loads(in_log_dir.read_text())
    assert beside["ckpt_path"] == str(ckpt)
    expected = direct_test_mse(ckpt)
    assert beside["metrics"]["test/mse"] == pytest.approx(expected, rel=1e-5)
    out = capsys.readouterr().out
    logged = beside["metrics"]["test/mse"]
    assert f"molssl test: {ckpt}\n  metric    value\n  test/mse  {logged:.6g}" in out


def test_metrics_table_sorts_names_and_aligns_values() -> None:
    table = format_metrics_table({"test/rmse": 1.23456789, "test/auroc": 0.5}, title="t")
    assert table.splitlines() == [
        "t",
        "  metric      value",
        "  test/auroc  0.5",
        "  test/rmse   1.23457",
    ]


def test_relative_checkpoint_named_like_a_lightning_alias(
    trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "last.ckpt" is a file here, not Lightning's "last" alias.
    monkeypatch.chdir(trained_run / "checkpoints")
    main(["test", "--ckpt", "last.ckpt", "--trainer.default_root_dir", str(tmp_path)])
    assert read_metrics(tmp_path, "test")["test/mse"] == pytest.approx(
        direct_test_mse(trained_run / "checkpoints" / "last.ckpt"), rel=1e-5
    )


ABLATION_MODULE = "molssl_test_ablation"
ABLATION_SOURCE = """
import torch
from tests.toy_modules import ToyRegressor


class RegressorWithMAE(ToyRegressor):
    def test_step(self, batch, batch_idx):
        super().test_step(batch, batch_idx)
        x, y = batch
        self.log("test/mae", torch.mean(torch.abs(self(x) - y)), batch_size=x.shape[0])
"""


def test_model_subclass_in_the_working_directory(tmp_path: Path) -> None:
    # The user's own subclass, next to the config and named by class_path: no registry edit.
    (tmp_path / f"{ABLATION_MODULE}.py").write_text(ABLATION_SOURCE)
    class_path = f"{ABLATION_MODULE}.RegressorWithMAE"
    config = {**TOY_CONFIG, "model": {**TOY_CONFIG["model"], "class_path": class_path}}
    try:
        log_dir = fit_toy(tmp_path / "fit", config)
        ckpt = log_dir / "checkpoints" / "last.ckpt"
        assert torch.load(ckpt, weights_only=True)["hyper_parameters"]["_class_path"] == class_path
        (log_dir / "config.yaml").unlink()
        main(["test", "--ckpt", str(ckpt), "--trainer.default_root_dir", str(tmp_path / "eval")])
    finally:
        sys.modules.pop(ABLATION_MODULE, None)
    metrics = read_metrics(tmp_path / "eval", "test")
    assert set(metrics) == {"test/mse", "test/mae"}
    assert metrics["test/mse"] == pytest.approx(direct_test_mse(ckpt), rel=1e-5)


def test_fit_without_checkpointing(tmp_path: Path) -> None:
    config = {**TOY_CONFIG, "trainer": {**TOY_CONFIG["trainer"], "enable_checkpointing": False}}
    log_dir = fit_toy(tmp_path, config)
    assert list(tmp_path.rglob("*.ckpt")) == []
    assert (log_dir / "config.yaml").is_file()


def test_test_falls_back_to_checkpoint_hyperparameters(trained_run: Path, tmp_path: Path) -> None:
    # A checkpoint copied away from its run: no config.yaml beside it or up to two folders above.
    ckpt = tmp_path / "elsewhere" / "deeper" / "model.ckpt"
    ckpt.parent.mkdir(parents=True)
    shutil.copy(trained_run / "checkpoints" / "last.ckpt", ckpt)
    main(["test", "--ckpt", str(ckpt)])
    assert read_metrics(tmp_path / "runs", "test")["test/mse"] == pytest.approx(
        direct_test_mse(ckpt), rel=1e-5
    )
    evaluated = yaml.safe_load(next((tmp_path / "runs").rglob("test_config.yaml")).read_text())
    assert evaluated["data"]["init_args"] == DATA_ARGS


def test_module_with_its_own_data_needs_no_datamodule(tmp_path: Path) -> None:
    model_args = {"num_features": 3, "lr": 0.05, "num_samples": 80, "seed": 3}
    config = {
        "model": {"class_path": "tests.toy_modules.ToyRegressorWithData", "init_args": model_args},
        "trainer": {**TOY_CONFIG["trainer"], "limit_val_batches": 0},
    }
    log_dir = fit_toy(tmp_path / "fit", config)
    ckpt = log_dir / "checkpoints" / "last.ckpt"
    (log_dir / "config.yaml").unlink()
    main(["test", "--ckpt", str(ckpt), "--trainer.default_root_dir", str(tmp_path / "eval")])
    model = ToyRegressorWithData(**model_args)
    model.load_state_dict(torch.load(ckpt, weights_only=True)["state_dict"])
    x, y = model.data.test_set.tensors
    with torch.no_grad():
        expected = torch.mean((model(x) - y) ** 2).item()
    assert read_metrics(tmp_path / "eval", "test")["test/mse"] == pytest.approx(expected, rel=1e-5)


def test_validate_with_checkpoint_alone(trained_run: Path, tmp_path: Path) -> None:
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    main(["validate", "--ckpt", str(ckpt), "--trainer.default_root_dir", str(tmp_path)])
    model = ToyRegressor(**MODEL_ARGS)
    model.load_state_dict(torch.load(ckpt, weights_only=True)["state_dict"])
    x, y = ToyRegressionData(**DATA_ARGS).val_set.tensors
    with torch.no_grad():
        expected = torch.mean((model(x) - y) ** 2).item()
    assert read_metrics(tmp_path, "validate")["val/mse"] == pytest.approx(expected, rel=1e-5)


def test_command_line_overrides_the_runs_config(trained_run: Path, tmp_path: Path) -> None:
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    main(
        [
            "test",
            "--ckpt",
            str(ckpt),
            "--trainer.default_root_dir",
            str(tmp_path),
            "--model.init_args.lr",
            "0.7",
            "--data.init_args.num_samples",
            "60",
        ]
    )
    evaluated = yaml.safe_load(next(tmp_path.rglob("test_config.yaml")).read_text())
    assert evaluated["model"]["init_args"]["lr"] == 0.7
    assert evaluated["data"]["init_args"]["num_samples"] == 60
    assert read_metrics(tmp_path, "test")["test/mse"] == pytest.approx(
        direct_test_mse(ckpt, num_samples=60), rel=1e-5
    )


def test_test_does_not_overwrite_the_training_config(tmp_path: Path) -> None:
    # A logger with a fixed version makes the evaluation log into the training run's own dir.
    config = {
        **TOY_CONFIG,
        "trainer": {
            **TOY_CONFIG["trainer"],
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(tmp_path), "name": "toy", "version": "run0"},
            },
        },
    }
    log_dir = fit_toy(tmp_path, config)
    assert log_dir == tmp_path / "toy" / "run0"
    training_config = (log_dir / "config.yaml").read_bytes()
    main(
        ["test", "--ckpt", str(log_dir / "checkpoints" / "last.ckpt"), "--model.init_args.lr", "1"]
    )
    assert (log_dir / "config.yaml").read_bytes() == training_config
    assert yaml.safe_load((log_dir / "test_config.yaml").read_text())["model"]["init_args"][
        "lr"
    ] == pytest.approx(1.0)
    assert (log_dir / "test_metrics.json").is_file()


# --- errors are jsonargparse's or ours, never a traceback ---------------------------------------


def test_unknown_config_key_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = {**TOY_CONFIG, "model": {**TOY_CONFIG["model"]}}
    bad["model"]["init_args"] = {**MODEL_ARGS, "hidden_size": 8}
    code, err = run_expecting_exit(
        ["fit", "--config", str(write_yaml(tmp_path / "b.yaml", bad))], capsys
    )
    assert code != 0
    assert "hidden_size" in err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_wrong_type_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = {**TOY_CONFIG, "model": {**TOY_CONFIG["model"]}}
    bad["model"]["init_args"] = {**MODEL_ARGS, "num_features": "three"}
    code, err = run_expecting_exit(
        ["fit", "--config", str(write_yaml(tmp_path / "b.yaml", bad))], capsys
    )
    assert code != 0
    assert "num_features" in err and "three" in err
    assert "Traceback" not in err


def test_wrong_type_on_the_command_line_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_yaml(tmp_path / "toy.yaml", TOY_CONFIG))
    code, err = run_expecting_exit(["fit", "-c", config, "--trainer.max_steps", "ten"], capsys)
    assert code != 0
    assert "max_steps" in err
    assert "Traceback" not in err


def test_fit_resumes_from_checkpoint(trained_run: Path, tmp_path: Path) -> None:
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    steps = TOY_CONFIG["trainer"]["max_steps"]
    config = str(write_yaml(tmp_path / "toy.yaml", TOY_CONFIG))
    main(["fit", "-c", config, "--ckpt", str(ckpt), "--trainer.max_steps", str(steps + 2)])
    (resumed,) = tmp_path.rglob("last.ckpt")
    assert torch.load(resumed, weights_only=True)["global_step"] == steps + 2


@pytest.mark.parametrize("subcommand", ["fit", "test", "validate", "predict"])
def test_missing_checkpoint_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], subcommand: str
) -> None:
    missing = tmp_path / "no" / "such.ckpt"
    io = ["--input", "x.smi", "--output", "p.csv"] if subcommand == "predict" else []
    code, err = run_expecting_exit([subcommand, "--ckpt", str(missing), *io], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(f"molssl {subcommand}: error: checkpoint not found: {missing}")


def test_unreadable_checkpoint_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    code, err = run_expecting_exit(["test", f"--ckpt={garbage}"], capsys)
    assert code == 2
    assert f"cannot read checkpoint {garbage}" in err
    assert "Traceback" not in err


def test_checkpoint_without_config_or_class_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Saved hyper-parameters without the class LightningCLI records: nothing to rebuild from.
    ckpt = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": dict(MODEL_ARGS)}, ckpt)
    code, err = run_expecting_exit(["test", "--ckpt", str(ckpt)], capsys)
    assert code == 2
    assert "no config.yaml found" in err and "--config" in err
    assert "Traceback" not in err

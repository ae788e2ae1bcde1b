"""The transfer experiment's command-line overrides name real settings of the shipped configs.

A misspelt override would only fail deep into a long run; here every override the script
passes is parsed by the real CLI against the config it is meant for (``--print_config``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from molssl.cli import main
from tests.benchmarks.scripts import load_script


@pytest.fixture(scope="module")
def run_script() -> ModuleType:
    return load_script("transfer/run.py", "transfer_run")


def script_args(run_script: ModuleType, tmp_path: Path, *extra: str) -> argparse.Namespace:
    """The script's own parser, with tiny sizes and a FreeSolv path under ``tmp_path``."""
    sizes = ["--hidden", "32", "--layers", "2", "--heads", "2", "--rbf", "16", "--epochs", "3"]
    return run_script.build_parser().parse_args(
        ["--freesolv", str(tmp_path / "SAMPL.csv"), *sizes, *extra]
    )


def printed_config(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_finetune_overrides_set_what_they_say(
    run_script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = script_args(run_script, tmp_path)
    init_from = tmp_path / "last.ckpt"
    overrides = run_script.finetune_overrides(args, 2e-3, init_from, 0.1)
    config = printed_config(
        capsys, ["fit", "--config", str(run_script.FINETUNE_CONFIG), *overrides]
    )
    model = config["model"]["init_args"]
    assert model["lr"] == 2e-3
    assert model["encoder_lr_scale"] == 0.1
    assert model["init_from"] == str(init_from)
    assert model["encoder"]["init_args"]["hidden_channels"] == 32
    assert model["encoder"]["init_args"]["num_rbf"] == 16
    assert config["data"]["init_args"]["path"] == str(args.freesolv)
    assert config["trainer"]["max_epochs"] == 3


@pytest.mark.parametrize("variant", ["unicorn", "unicorn_no_denoise", "frad"])
def test_pretrain_overrides_fit_each_config(
    run_script: ModuleType, variant: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = script_args(
        run_script, tmp_path, "--rbf", "0", "--hidden-2d", "48", "--heads-2d", "4",
        "--pretrain-val-fraction", "0.04",
    )  # fmt: skip
    config_path = run_script.PRETRAIN_CONFIGS[variant]
    overrides = run_script.pretrain_overrides(config_path, args, tmp_path / "pretrain")
    config = printed_config(capsys, ["fit", "--config", str(config_path), *overrides])
    model = config["model"]["init_args"]
    encoder_3d = model["encoder_3d"]["init_args"]
    assert (encoder_3d["hidden_channels"], encoder_3d["num_layers"]) == (32, 2)
    # rbf 0 keeps the config's radial basis.
    shipped = yaml.safe_load(config_path.read_text())["model"]["init_args"]["encoder_3d"]
    assert encoder_3d["num_rbf"] == shipped["init_args"]["num_rbf"]
    if model.get("encoder_2d") is not None:
        encoder_2d = model["encoder_2d"]["init_args"]
        assert (encoder_2d["hidden_channels"], encoder_2d["num_heads"]) == (48, 4)
    assert config["trainer"]["max_steps"] == 1000
    assert model["max_steps"] == 1000
    assert config["data"]["init_args"]["root"] == str(tmp_path / "pool_prepared")
    assert config["data"]["init_args"]["val_fraction"] == pytest.approx(0.04)


@pytest.fixture(scope="module")
def qm9_script() -> ModuleType:
    return load_script("transfer/qm9_label_efficiency.py", "qm9_label")


def test_qm9_finetune_overrides_set_what_they_say(
    qm9_script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = qm9_script.build_parser().parse_args(["--hidden", "32", "--layers", "2"])
    init_from = tmp_path / "last.ckpt"
    overrides = qm9_script.finetune_overrides(args, 5e-4, 0.5, init_from)
    config = printed_config(
        capsys, ["fit", "--config", str(qm9_script.FINETUNE_CONFIG), *overrides]
    )
    model, data = config["model"]["init_args"], config["data"]["init_args"]
    assert (model["lr"], model["encoder_lr_scale"], model["init_from"]) == (
        5e-4, 0.5, str(init_from)
    )  # fmt: skip
    assert model["num_tasks"] == 3 and data["targets"] == ["homo", "lumo", "gap"]
    assert model["encoder"]["init_args"]["hidden_channels"] == 32
    assert (data["root"], data["split_seed"]) == ("qm9pack", 0)
    # Counts stay counts (the int | float parsing bug would make 1000 the float 1000.0).
    assert (data["train_size"], data["val_size"], data["test_size"]) == (1000, 500, 3000)
    assert all(type(data[k]) is int for k in ("train_size", "val_size", "test_size"))
    assert config["trainer"]["max_steps"] == model["max_steps"] == args.steps


@pytest.mark.parametrize("arm", ["frad", "coord", "unicorn", "unicorn_no_denoise"])
def test_qm9_pretrain_overrides_fit_each_arm(
    qm9_script: ModuleType, arm: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = qm9_script.build_parser().parse_args(["--hidden", "32", "--pretrain-steps", "77"])
    config_path = qm9_script.PRETRAIN_CONFIGS[arm]
    overrides = qm9_script.pretrain_overrides(config_path, args, tmp_path / "pretrain")
    config = printed_config(capsys, ["fit", "--config", str(config_path), *overrides])
    model = config["model"]["init_args"]
    assert model["encoder_3d"]["init_args"]["hidden_channels"] == 32
    if model.get("encoder_2d") is not None:
        assert model["encoder_2d"]["init_args"]["hidden_channels"] == 32
    assert config["trainer"]["max_steps"] == model["max_steps"] == 77
    assert config["checkpoint"]["save_top_k"] == -1


def test_qm9_pretrain_variant_has_its_own_run_and_overrides(
    qm9_script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--pretrain-extra`` reaches the config after the experiment's own overrides, and
    ``--pretrain-tag`` names the run so that the recorded ``pretrain/<arm>`` is not reused."""
    denoise = '{"class_path":"molssl.objectives.CoordDenoise","init_args":{"sigma":0.1}}'
    args = qm9_script.build_parser().parse_args(
        ["--pretrain-tag", "noise0.1", f"--pretrain-extra=--model.init_args.objectives=[{denoise}]"]
    )
    assert qm9_script.run_name("unicorn", args) == "unicorn_noise0.1"
    assert qm9_script.run_name("unicorn", qm9_script.build_parser().parse_args([])) == "unicorn"
    config_path = qm9_script.PRETRAIN_CONFIGS["unicorn"]
    overrides = qm9_script.pretrain_overrides(config_path, args, tmp_path / "pretrain")
    config = printed_config(capsys, ["fit", "--config", str(config_path), *overrides])
    objectives = config["model"]["init_args"]["objectives"]
    assert [o["init_args"]["sigma"] for o in objectives] == [0.1]

"""Bad checkpoints and configs given to ``molssl fit`` / ``molssl test``."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import yaml

from tests.bad_inputs.shared import REPO, SharedInputs, one_line_exit, run_cli, write_config
from tests.datamodules.moleculenet_files import write_moleculenet_csv


def _exit_2(args: list[str], work: Path) -> str:
    exited = run_cli(args, work)
    assert exited is not None and exited.code == 2, exited
    assert "Traceback" not in exited.stderr
    return f"exit 2: {exited.stderr.strip().splitlines()[-1]}"


def _truncated(work: Path, shared: SharedInputs) -> Path:
    path = work / "alone" / "last.ckpt"  # no config.yaml beside it
    path.parent.mkdir()
    data = shared.checkpoint.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def missing_checkpoint(work: Path, shared: SharedInputs) -> str:
    return _exit_2(["test", "--ckpt", str(work / "absent.ckpt")], work)


def truncated_checkpoint_test(work: Path, shared: SharedInputs) -> str:
    return _exit_2(["test", "--ckpt", str(_truncated(work, shared))], work)


def truncated_checkpoint_fit(work: Path, shared: SharedInputs) -> str:
    args = ["fit", "--config", str(shared.unicorn_config)]
    return _exit_2([*args, "--ckpt_path", str(_truncated(work, shared))], work)


def other_objectives(work: Path, shared: SharedInputs) -> str:
    config = yaml.safe_load(shared.unicorn_config.read_text())
    objectives = config["model"]["init_args"]["objectives"]
    config["model"]["init_args"]["objectives"] = objectives[:2]
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(work / "runs")
    path = work / "two_objectives.yaml"
    path.write_text(yaml.safe_dump(config))
    return _exit_2(["fit", "--config", str(path), "--ckpt_path", str(shared.checkpoint)], work)


def other_module(work: Path, shared: SharedInputs) -> str:
    csv = write_moleculenet_csv(work / "SAMPL.csv", "freesolv", n=12).path
    tiny = yaml.safe_load(shared.unicorn_config.read_text())
    encoder = tiny["model"]["init_args"]["encoder_3d"]["init_args"]
    args = ["test", "--config", str(REPO / "configs" / "finetune" / "freesolv.yaml")]
    args += [f"--model.init_args.encoder.init_args.{k}={v}" for k, v in encoder.items()]
    args += ["--ckpt", str(shared.checkpoint), f"--data.init_args.path={csv}"]
    args += [f"--data.init_args.cache_dir={work / 'cache'}", "--data.init_args.num_workers=0"]
    args += ["--data.init_args.optimize_conformers=false", "--data.init_args.progress=false"]
    args += [f"--trainer.logger.init_args.save_dir={work / 'runs'}"]
    return _exit_2(args, work)


def unknown_config_key(work: Path, shared: SharedInputs) -> str:
    config = yaml.safe_load(shared.unicorn_config.read_text())
    config["model"]["init_args"]["objectives"][0]["init_args"]["mask_ratoi"] = 0.3
    path = work / "typo.yaml"
    path.write_text(yaml.safe_dump(config))
    exited = run_cli(["fit", "--config", str(path)], work)
    assert exited is not None and exited.code == 2 and "mask_ratoi" in exited.stderr, exited
    assert not (work / "runs").exists() and "Traceback" not in exited.stderr
    lines = [line.strip() for line in exited.stderr.splitlines() if "mask_ratoi" in line]
    return f"exit 2: {lines[0]}"


# -- the cases of issue #17 ------------------------------------------------------------------


def _edited_unicorn(work: Path, shared: SharedInputs, edit: Callable[[dict], None]) -> Path:
    config = yaml.safe_load(shared.unicorn_config.read_text())
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(work / "runs")
    edit(config)
    return write_config(work / "edited.yaml", config)


def class_path_typo(work: Path, shared: SharedInputs) -> str:
    def typo(config: dict) -> None:
        encoder = config["model"]["init_args"]["encoder_3d"]
        encoder["class_path"] = "molssl.encoders.EquivariantTransformr"

    path = _edited_unicorn(work, shared, typo)
    observed = one_line_exit(["fit", "--config", str(path)], work)
    number = int(observed.rsplit("line ", 1)[1].rstrip(")"))
    assert "EquivariantTransformr" in path.read_text().splitlines()[number - 1]
    return observed


def damaged_run_config(work: Path, shared: SharedInputs) -> str:
    run = work / "run"
    shutil.copytree(shared.checkpoint.parents[1], run)  # version_0: config.yaml, checkpoints/
    config = run / "config.yaml"
    lines = config.read_text().splitlines()
    lines.insert(3, "broken: [1, 2")  # line 4: a list never closed
    config.write_text("\n".join(lines) + "\n")
    observed = one_line_exit(["test", "--ckpt", str(run / "checkpoints" / "last.ckpt")], work)
    assert f"{config}, line " in observed and "<unicode string>" not in observed
    return observed


def resume_other_encoder_size(work: Path, shared: SharedInputs) -> str:
    def wider(config: dict) -> None:
        config["model"]["init_args"]["encoder_3d"]["init_args"]["hidden_channels"] = 32

    path = _edited_unicorn(work, shared, wider)
    args = ["fit", "--config", str(path), "--ckpt_path", str(shared.checkpoint)]
    return one_line_exit(args, work)


def invalid_option_value(work: Path, shared: SharedInputs) -> str:
    args = ["fit", "--config", str(shared.unicorn_config), "--data.init_args.val_fraction=1.5"]
    return one_line_exit(args, work)

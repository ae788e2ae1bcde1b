"""Inputs several bad-input cases start from, built once per session (lazily, in one folder)."""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import yaml

from molssl.cli import main
from tests.conftest import read_nci_smiles
from tests.datamodules.qm9_files import QM9RawFiles, write_qm9_raw
from tests.modules.pretrain_fixtures import TINY_ENCODER_ARGS, prepare_small_cache

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Exited:
    """What a command that ended with ``SystemExit`` left: its code and stderr."""

    code: int | str | None
    stderr: str


@contextlib.contextmanager
def in_folder(folder: Path) -> Iterator[None]:
    """Runs with ``folder`` as working directory and ``sys.path`` restored afterwards (the CLI
    appends the working directory to it)."""
    saved_path = list(sys.path)
    with contextlib.chdir(folder):
        try:
            yield
        finally:
            sys.path[:] = saved_path


def run_cli(args: list[str], folder: Path) -> Exited | None:
    """``molssl <args>`` in-process in ``folder``; an ``Exited`` if it exited, else ``None``.

    Exceptions other than ``SystemExit`` propagate, for the case to judge.
    """
    stderr = io.StringIO()
    with in_folder(folder), contextlib.redirect_stderr(stderr):
        try:
            main(args)
        except SystemExit as exited:
            return Exited(exited.code, stderr.getvalue())
    return None


def one_line_exit(args: list[str], folder: Path) -> str:
    """``molssl <args>`` must exit 2 with one error line and no traceback; ``exit 2: <line>``."""
    exited = run_cli(args, folder)
    assert exited is not None and exited.code == 2, exited
    assert "Traceback" not in exited.stderr, exited.stderr
    errors = [line for line in exited.stderr.splitlines() if line.startswith("molssl ")]
    errors = [line for line in errors if ": error: " in line]
    assert len(errors) == 1 and exited.stderr.rstrip().endswith(errors[0]), exited.stderr
    return f"exit 2: {errors[0]}"


def tiny_finetune_config(name: str, data: dict, save_dir: Path) -> dict:
    """``configs/finetune/<name>.yaml`` at test sizes, two steps, the given data arguments."""
    config = yaml.safe_load((REPO / "configs" / "finetune" / f"{name}.yaml").read_text())
    config["model"]["init_args"]["encoder"]["init_args"].update(
        TINY_ENCODER_ARGS["molssl.encoders.EquivariantTransformer"]
    )
    config["model"]["init_args"]["warmup_steps"] = 1
    config["trainer"].update(
        max_steps=2, max_epochs=1, accelerator="cpu", enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
    )  # fmt: skip
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(save_dir)
    config["data"]["init_args"].update({"num_workers": 0, **data})
    return config


def write_config(path: Path, config: dict) -> Path:
    """``config`` as YAML at ``path``."""
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def tiny_unicorn_config(cache_dir: Path, save_dir: Path) -> dict:
    """configs/unicorn.yaml at test sizes on the small embedded default, one step."""
    config = yaml.safe_load((REPO / "configs" / "unicorn.yaml").read_text())
    init_args = config["model"]["init_args"]
    for key in ("encoder_3d", "encoder_2d"):
        init_args[key]["init_args"].update(TINY_ENCODER_ARGS[init_args[key]["class_path"]])
    init_args.update(warmup_steps=1, max_steps=2)
    config["trainer"].update(
        max_steps=1,
        val_check_interval=None,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(save_dir)
    config["data"]["init_args"].update(
        num_molecules=24,
        batch_size=4,
        num_workers=0,
        val_fraction=0.25,
        cache_dir=str(cache_dir),
        prepare_workers=1,
    )
    return config


class SharedInputs:
    """A small embedded cache, a tiny UniCorn run with its ``last.ckpt``, QM9 raw files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    @cached_property
    def cache_dir(self) -> Path:
        return prepare_small_cache(self.folder / "cache")

    @cached_property
    def unicorn_config(self) -> Path:
        path = self.folder / "unicorn_tiny.yaml"
        config = tiny_unicorn_config(self.cache_dir, self.folder / "runs")
        path.write_text(yaml.safe_dump(config))
        return path

    @cached_property
    def checkpoint(self) -> Path:
        """``last.ckpt`` of one step of tiny UniCorn (its ``config.yaml`` beside the version)."""
        exited = run_cli(["fit", "--config", str(self.unicorn_config)], self.folder)
        assert exited is None, exited
        (path,) = (self.folder / "runs").rglob("last.ckpt")
        return path

    @cached_property
    def prepared(self) -> Path:
        """``molssl prepare`` of 40 NCI molecules named ``m<i>``, 4 shards of 10."""
        source = self.folder / "nci40.smi"
        source.write_text("".join(f"{s}\tm{i}\n" for i, s in enumerate(read_nci_smiles(40))))
        output = self.folder / "prepared"
        args = ["prepare", "--input", str(source), "--output", str(output), "--shard-size", "10"]
        assert run_cli([*args, "--no-progress"], self.folder) is None
        return output

    def pretrain_config(self, root: Path, save_dir: Path) -> dict:
        """Tiny UniCorn on a prepared ``root``: one epoch over every shard (none held out)."""
        config = tiny_unicorn_config(self.cache_dir, save_dir)
        config["data"]["init_args"] = {
            "root": str(root), "batch_size": 8, "num_workers": 0, "val_fraction": 0.0,
        }  # fmt: skip
        config["trainer"].update(max_steps=-1, max_epochs=1, limit_val_batches=0)
        config["model"]["init_args"]["max_steps"] = 10
        return config

    @cached_property
    def qm9(self) -> QM9RawFiles:
        """12 QM9-format molecules, ``gdb_3`` listed as uncharacterized."""
        return write_qm9_raw(self.folder / "qm9", n=12, uncharacterized=(3,), unsanitizable=None)

"""Every shipped config trains: ``molssl fit --config <yaml>`` with tiny sizes, in-process.

Configs are found by globbing ``configs/``, so a new YAML is tested without touching this file.
Sizes are shrunk on the command line (encoder widths, layers and heads; a small embedded default;
tiny batches), never in the configs, which keep the papers' values. Then one short UniCorn run
goes through ``molssl test --ckpt``: pre-training's test stage reports the objectives' losses on
the held-out split, and those numbers are recomputed here from the checkpoint by hand.

Fine-tuning configs (``configs/finetune/``) run on small files in the true formats, written by
the data tests' writers (MoleculeNet CSV, raw QM9, sGDML ``.npz``). FreeSolv goes the whole way
of the README: a tiny UniCorn pre-training, ``fit --model.init_args.init_from`` its checkpoint,
then ``molssl test --ckpt`` alone, whose RMSE is recomputed here by hand.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer

from molssl.cli import main
from molssl.datamodules import PretrainDataModule
from molssl.datamodules.md import MD17_FILES, MD22_FILES
from molssl.datamodules.moleculenet import MoleculeNetDataModule
from molssl.datamodules.moleculenet_presets import get_preset
from molssl.modules import FinetuneModule, PretrainModule
from molssl.task_link import declared_tasks_of
from tests.datamodules.md_files import write_sgdml
from tests.datamodules.moleculenet_files import TASK_COLUMNS, write_moleculenet_csv
from tests.datamodules.qm9_files import write_qm9_raw
from tests.modules.pretrain_fixtures import (
    TINY_ENCODER_ARGS,
    prepare_small_cache,
    small_data_args,
    weighted_epoch_metrics,
)

#: The QM9 targets of paper Table 1 as the configs name them (configs/finetune/qm9_<name>).
QM9_CONFIG_TARGETS = ("mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "u0", "u", "h", "g", "cv")
#: MoleculeNet's tasks of paper Tables 2 and 4 (configs/finetune/<name>).
MOLECULENET_CONFIGS = (
    "bbbp", "tox21", "toxcast", "sider", "clintox", "hiv", "muv", "bace",
    "esol", "freesolv", "lipophilicity",
)  # fmt: skip
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
# configs/search holds grids of `molssl search`, not configs (tests/commands/test_search.py).
# Paper-size pre-training configs; configs/cpu/ (run at their own size): tests/test_cpu_configs.py.
CONFIGS = sorted(
    path
    for path in CONFIG_DIR.rglob("*.yaml")
    if path.relative_to(CONFIG_DIR).parts[0] not in ("finetune", "search", "cpu")
)
FINETUNE_CONFIGS = sorted((CONFIG_DIR / "finetune").glob("*.yaml"))
ENCODER_KEYS = ("encoder_3d", "encoder_2d", "encoder_blend")


class RecordFitMetrics(Callback):
    """Keeps the metrics of the last fit in this process, for the test to read."""

    last: dict[str, float] = {}

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        RecordFitMetrics.last = {k: float(v) for k, v in trainer.callback_metrics.items()}


class RecordAtoms(Callback):
    """Counts the atoms and the hydrogen atoms of the batches each stage sees."""

    seen: dict[str, list[int]] = {}

    @staticmethod
    def record(stage: str, batch: Any) -> None:
        counts = RecordAtoms.seen.setdefault(stage, [0, 0])
        counts[0] += int(batch.z.numel())
        counts[1] += int((batch.z == 1).sum())

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.record("train", batch)

    def on_test_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.record("test", batch)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_small_cache(tmp_path_factory.getbasetemp() / "molssl_cache")


@pytest.fixture(autouse=True)
def _isolated_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Relative paths in the configs (runs/) land in tmp_path; main() may extend sys.path.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))


def tiny_overrides(config: dict[str, Any], cache_dir: Path) -> list[str]:
    """Command-line arguments shrinking a config's encoders and data to test size."""
    args: list[str] = []
    init_args = config["model"]["init_args"]
    for key in ENCODER_KEYS:
        encoder = init_args.get(key)
        if not encoder:
            continue
        class_path = encoder["class_path"]
        if class_path not in TINY_ENCODER_ARGS:
            pytest.fail(f"no tiny sizes for {class_path}: add them to TINY_ENCODER_ARGS")
        for name, value in TINY_ENCODER_ARGS[class_path].items():
            args += [f"--model.init_args.{key}.init_args.{name}", str(value)]
    for name, value in small_data_args(cache_dir).items():
        args += [f"--data.init_args.{name}", str(value)]
    return [
        *args,
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]


def objective_names(config: dict[str, Any]) -> list[str]:
    """Names the config's objectives log under (the snake-cased class unless given)."""
    from molssl.objectives.base import snake_case

    names = []
    for entry in config["model"]["init_args"]["objectives"]:
        given = (entry.get("init_args") or {}).get("name")
        names.append(given or snake_case(entry["class_path"].rsplit(".", 1)[-1]))
    return names


def test_configs_are_found() -> None:
    names = {path.relative_to(CONFIG_DIR).as_posix() for path in CONFIGS}
    assert {
        "unicorn.yaml",
        "moleblend.yaml",
        "frad.yaml",
        "coord.yaml",
        "attrmask.yaml",
        "ablations/unicorn_no_denoise.yaml",
        "ablations/unicorn_no_mask_contrast.yaml",
        "ablations/unicorn_masked_key.yaml",
    } <= names
    # Every task of UniCorn's tables: QM9 (Table 1), MoleculeNet (Tables 2 and 4), MD17
    # (Table 3), MD22 (Table 7).
    assert {path.stem for path in FINETUNE_CONFIGS} >= {
        *(f"qm9_{target}" for target in QM9_CONFIG_TARGETS),
        *MOLECULENET_CONFIGS,
        *(f"md17_{molecule}" for molecule in MD17_FILES),
        *(f"md22_{molecule}" for molecule in MD22_FILES),
    }


@pytest.mark.parametrize("config_path", CONFIGS, ids=lambda p: p.relative_to(CONFIG_DIR).as_posix())
def test_config_runs_fast_dev_run(config_path: Path, cache_dir: Path) -> None:
    config = yaml.safe_load(config_path.read_text())
    assert config_path.read_text().startswith("#"), "each config opens with a header comment"
    RecordFitMetrics.last = {}
    main(
        [
            "fit",
            "--config",
            str(config_path),
            *tiny_overrides(config, cache_dir),
            "--trainer.fast_dev_run=true",
            "--trainer.callbacks+=tests.test_configs.RecordFitMetrics",
        ]
    )
    metrics = RecordFitMetrics.last
    assert math.isfinite(metrics["train/loss"])
    for name in objective_names(config):
        for stage in ("train", "val"):
            value = metrics[f"{stage}/{name}/loss"]
            assert math.isfinite(value), f"{stage}/{name}/loss = {value}"


def test_unicorn_fit_then_test_from_the_checkpoint_alone(cache_dir: Path, tmp_path: Path) -> None:
    config_path = CONFIG_DIR / "unicorn.yaml"
    config = yaml.safe_load(config_path.read_text())
    main(
        [
            "fit",
            "--config",
            str(config_path),
            *tiny_overrides(config, cache_dir),
            "--trainer.max_steps=3",
            "--trainer.val_check_interval=3",
            "--model.init_args.warmup_steps=1",
        ]
    )
    (ckpt,) = tmp_path.rglob("last.ckpt")
    main(["test", "--ckpt", str(ckpt), "--trainer.enable_progress_bar=false"])
    (metrics_path,) = tmp_path.rglob("test_metrics.json")
    logged = json.loads(metrics_path.read_text())["metrics"]

    # By hand: the objective list comes back from the checkpoint's hyper-parameters, the data
    # are the run's held-out split with its fixed views.
    module = PretrainModule.load_from_checkpoint(ckpt)
    data = PretrainDataModule(**small_data_args(cache_dir))
    data.set_views(module.pipeline_views())
    data.setup("test")
    expected = weighted_epoch_metrics(module, data.test_dataloader(), stage="test")
    names = objective_names(config)
    assert [objective.name for objective in module.objectives] == names
    assert {f"test/{name}/loss" for name in names} | {"test/loss"} <= set(logged)
    assert set(logged) == set(expected)
    for key, value in expected.items():
        assert logged[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


# --- fine-tuning configs -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finetune_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder for the true-format data files (written on first use) and the conformer cache."""
    return tmp_path_factory.mktemp("finetune_files")


def finetune_data_overrides(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``data.init_args`` pointing a fine-tuning config at small true-format files."""
    class_name = data["class_path"].rsplit(".", 1)[-1]
    args = dict(data["init_args"])
    if class_name == "MoleculeNetDataModule":
        path = folder / Path(args["path"]).name
        if not path.exists():
            write_moleculenet_csv(path, args["preset"], n=40, missing_every=5)
        return {
            "path": str(path),
            "cache_dir": str(folder / "cache"),
            "optimize_conformers": False,
            "prepare_workers": 1,
            "progress": False,
            "batch_size": 8,
            "num_workers": 0,
        }
    if class_name == "QM9DataModule":
        root = folder / "qm9"
        if not root.exists():
            write_qm9_raw(root, n=24)
        return {
            "root": str(root),
            "cache_dir": str(folder / "cache"),
            "batch_size": 4,
            "num_workers": 0,
        }
    if class_name in ("MD17DataModule", "MD22DataModule"):
        path = folder / f"{class_name}.npz"
        if not path.exists():
            write_sgdml(path, frames=40)
        return {
            "path": str(path),
            "molecule": None,
            "train_size": 0.6,
            "val_size": 0.2,
            "batch_size": 4,
            "eval_batch_size": 4,
            "num_workers": 0,
        }
    pytest.fail(f"no small data files for {data['class_path']}: add them here")


def finetune_overrides(config: dict[str, Any], folder: Path) -> list[str]:
    """Command-line arguments shrinking a fine-tuning config's encoder and data to test size."""
    encoder = config["model"]["init_args"]["encoder"]
    args: list[str] = []
    for name, value in TINY_ENCODER_ARGS[encoder["class_path"]].items():
        args += [f"--model.init_args.encoder.init_args.{name}", str(value)]
    preset = config["data"]["init_args"].get("preset")
    if preset == "toxcast":
        # The test file holds 3 of ToxCast's 617 assay columns.
        args.append(f"--model.init_args.num_tasks={len(TASK_COLUMNS[preset])}")
    for name, value in finetune_data_overrides(config["data"], folder).items():
        args.append(f"--data.init_args.{name}={'null' if value is None else value}")
    return [
        *args,
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]


def tiny_encoder(config: dict[str, Any]) -> torch.nn.Module:
    """The config's encoder class with its settings, shrunk to the tiny test sizes."""
    encoder = config["model"]["init_args"]["encoder"]
    module_name, _, class_name = encoder["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**{**encoder.get("init_args", {}), **TINY_ENCODER_ARGS[encoder["class_path"]]})


@pytest.mark.parametrize(
    "config_path", FINETUNE_CONFIGS, ids=lambda p: p.relative_to(CONFIG_DIR).as_posix()
)
def test_finetune_config_runs_fast_dev_run(config_path: Path, finetune_files: Path) -> None:
    text = config_path.read_text()
    config = yaml.safe_load(text)
    assert text.startswith("#"), "each config opens with a header comment"
    header = text.split("\nseed_everything")[0]
    # The header cites where its settings come from: the paper's table, or the official
    # fine-tuning script (MoleBLEND's configs follow its code).
    assert "Table" in header or "shells/finetune/" in header, "the header cites its source"
    checkpoint = config["checkpoint"]
    # What molssl fit fills in from the data: a MoleculeNet test file has its preset's columns.
    preset = config["data"]["init_args"].get("preset")
    if preset is not None:
        task, names = get_preset(preset).task_type, list(TASK_COLUMNS[get_preset(preset).name])
    else:
        task, names = declared_tasks_of(config["data"])
    module = FinetuneModule(
        tiny_encoder(config),
        **{k: v for k, v in config["model"]["init_args"].items() if k != "encoder"},
        task=task,
        num_tasks=len(names),
    )
    assert (checkpoint["monitor"], checkpoint["mode"]) == module.monitor
    RecordFitMetrics.last = {}
    main(
        [
            "fit",
            "--config",
            str(config_path),
            *finetune_overrides(config, finetune_files),
            "--trainer.fast_dev_run=true",
            "--trainer.callbacks+=tests.test_configs.RecordFitMetrics",
        ]
    )
    metrics = RecordFitMetrics.last
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["val/loss"])
    assert checkpoint["monitor"] in metrics
    if not checkpoint["monitor"].endswith("auroc"):  # one tiny val batch may lack a class
        assert math.isfinite(metrics[checkpoint["monitor"]])


def tiny_pretraining(name: str, cache_dir: Path, root: Path, *args: str) -> Path:
    """Runs ``configs/<name>.yaml`` with tiny sizes and no validation; its ``last.ckpt``."""
    config = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    main(
        [
            "fit",
            "--config",
            str(CONFIG_DIR / f"{name}.yaml"),
            *tiny_overrides(config, cache_dir),
            "--trainer.limit_val_batches=0",
            "--model.init_args.warmup_steps=1",
            *args,
        ]
    )
    (checkpoint,) = (root / "runs" / name).rglob("last.ckpt")
    return checkpoint


def finetune_from(pretrained: Path, name: str, folder: Path, *args: str) -> dict[str, Any]:
    """Fits ``configs/finetune/<name>.yaml`` on small files from ``pretrained``; its config."""
    config_path = CONFIG_DIR / "finetune" / f"{name}.yaml"
    config = yaml.safe_load(config_path.read_text())
    main(
        [
            "fit",
            "--config",
            str(config_path),
            *finetune_overrides(config, folder),
            f"--model.init_args.init_from={pretrained}",
            "--model.init_args.warmup_steps=1",
            *args,
        ]
    )
    return config


def test_freesolv_from_pretraining_then_test_from_the_checkpoint_alone(
    cache_dir: Path, finetune_files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pretrained = tiny_pretraining("unicorn", cache_dir, tmp_path, "--trainer.max_steps=2")
    config = finetune_from(pretrained, "freesolv", finetune_files, "--trainer.max_epochs=2")
    run = tmp_path / "runs" / "freesolv"
    (best,) = [p for p in run.rglob("*.ckpt") if p.name != "last.ckpt"]
    saved = torch.load(best, weights_only=True)
    encoder_tensors = [k for k in saved["state_dict"] if k.startswith("encoder.")]
    assert saved["molssl"]["init_from"]["loaded"] == len(encoder_tensors)
    assert saved["molssl"]["init_from"]["path"] == str(pretrained)

    pretrained.unlink()  # evaluation must not need the pre-training file
    capsys.readouterr()
    main(["test", "--ckpt", str(best)])
    beside = json.loads((best.parent / "metrics.json").read_text())["metrics"]
    assert "test/rmse" in capsys.readouterr().out

    # By hand: the model from the checkpoint alone, the data module from the same arguments.
    module = FinetuneModule.load_from_checkpoint(best)
    data = MoleculeNetDataModule(
        **{**config["data"]["init_args"], **finetune_data_overrides(config["data"], finetune_files)}
    )
    data.setup("test")
    module.eval()
    errors = []
    with torch.no_grad():
        for batch in data.test_dataloader():
            errors.append(module(batch).reshape(-1) - batch.y.reshape(-1))
    error = torch.cat(errors)
    error = error[~torch.isnan(error)]  # blank labels in the file are missing, not errors
    assert error.numel() > 0
    assert beside["test/rmse"] == pytest.approx(error.pow(2).mean().sqrt().item(), rel=1e-4)
    assert beside["test/mae"] == pytest.approx(error.abs().mean().item(), rel=1e-4)


def test_moleblend_pretraining_initialises_its_finetune_config(
    cache_dir: Path, finetune_files: Path, tmp_path: Path
) -> None:
    """configs/moleblend.yaml's checkpoint loads into every tensor of the fine-tuning encoder
    of configs/finetune/moleblend_bbbp.yaml (2D input), which then tests from its own file;
    pre-training, fine-tuning and the test all see heavy-atom graphs, as officially."""
    record = "--trainer.callbacks+=tests.test_configs.RecordAtoms"
    RecordAtoms.seen = {}
    pretrained = tiny_pretraining(
        "moleblend",
        cache_dir,
        tmp_path,
        "--trainer.max_steps=1",
        "--trainer.accumulate_grad_batches=1",
        record,
    )
    atoms, hydrogens = RecordAtoms.seen.pop("train")
    assert atoms > 0 and hydrogens == 0
    finetune_from(pretrained, "moleblend_bbbp", finetune_files, "--trainer.max_epochs=1", record)
    atoms, hydrogens = RecordAtoms.seen.pop("train")
    assert atoms > 0 and hydrogens == 0
    (last,) = (tmp_path / "runs" / "moleblend_bbbp").rglob("last.ckpt")
    saved = torch.load(last, weights_only=True)
    encoder_tensors = [k for k in saved["state_dict"] if k.startswith("encoder.")]
    assert saved["molssl"]["init_from"]["loaded"] == len(encoder_tensors)
    module = FinetuneModule.load_from_checkpoint(last)
    assert not module.encoder.use_3d and module.encoder.relation_mode == "all"
    pretrained.unlink()  # evaluation must not need the pre-training file
    main(["test", "--ckpt", str(last), record])
    beside = json.loads((last.parent / "metrics.json").read_text())["metrics"]
    assert "test/loss" in beside and math.isfinite(beside["test/loss"])
    atoms, hydrogens = RecordAtoms.seen.pop("test")
    assert atoms > 0 and hydrogens == 0
    # Without the run's config.yaml the data module comes from the checkpoint's
    # hyper-parameters, the transform included.
    (run_config,) = (tmp_path / "runs" / "moleblend_bbbp").rglob("config.yaml")
    run_config.unlink()
    main(["test", "--ckpt", str(last), record])
    atoms, hydrogens = RecordAtoms.seen.pop("test")
    assert atoms > 0 and hydrogens == 0

"""``molssl fit`` killed mid-epoch and restarted with ``--ckpt_path last`` carries on exactly.

Three in-process runs of tiny UniCorn (configs/unicorn.yaml with test sizes, no dropout): one
uninterrupted run of 8 steps; one killed by an exception at step 5 (as a pre-empted job: its
``last.ckpt`` is the periodic one of step 4, saved mid-epoch); and the restart of the killed run
from ``last``. The restart must begin at global step 4 with the weights and AdamW state of the
uninterrupted run at step 4, follow its learning rate step by step, and end on its weights.

Data order. Lightning resumes a mid-epoch checkpoint with a fresh iterator of a loader that
keeps no position (it warns that the loader is not resumable): the rest of the epoch is drawn
from the start of a new pass, and the global RNG is not restored, so the views of the shuffled
default loader differ from the uninterrupted run's. To compare weights, the runs here train
on :class:`RepeatedBatches`, whose every batch is the same four molecules with views fixed by
molecule id, so the data cannot depend on the loader's position or on the RNG.

``last`` is resolved by ``molssl fit`` (:mod:`molssl.last_checkpoint`): in the checkpoint
callback's ``dirpath`` when one is set (as in the first test), else in the logger's version
folders, where a restart logs into a new one (the second test).

The second test resumes the streaming data module on a prepared directory (uneven shards, two
loader workers, a shuffle buffer): the killed run's batches plus the resumed run's rest of the
epoch hold each training molecule exactly once, in the uninterrupted run's batches.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from molssl.chem.conformers import ConformerOptions
from molssl.cli import main
from molssl.datamodules.embedded import embedded_default, molecule_seed
from molssl.datamodules.records import RECORD_FORMAT_VERSION
from molssl.datamodules.shards import write_json_atomic, write_shard
from tests.modules.pretrain_fixtures import NUM_MOLECULES, TINY_ENCODER_ARGS, prepare_small_cache

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "unicorn.yaml"
TOTAL_STEPS = 8
CRASH_STEP = 5
CHECKPOINT_EVERY = 2


class RepeatedBatches(LightningDataModule):
    """``repeats`` identical training batches per epoch: the first ``batch_size`` molecules of
    the small embedded default, each with views seeded by its molecule id."""

    def __init__(self, cache_dir: str, batch_size: int = 4, repeats: int = 5) -> None:
        super().__init__()
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.repeats = repeats

    def setup(self, stage: str | None = None) -> None:
        options = ConformerOptions(num_conformers=1)
        prepared = embedded_default(NUM_MOLECULES, options, self.cache_dir, workers=1)
        views = self.trainer.lightning_module.pipeline_views()
        self.samples = [self._sample(prepared.records[i], views) for i in range(self.batch_size)]

    @staticmethod
    def _sample(record: Any, views: list) -> Data:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(molecule_seed(0, record.mol_id))
            data = record.to_data(0)
            for view in views:
                data = view(data)
        for key in ("torsion_atoms", "torsion_moving"):
            if key in data:
                del data[key]
        return data

    def train_dataloader(self) -> DataLoader:
        samples = [copy.copy(data) for _ in range(self.repeats) for data in self.samples]
        return DataLoader(samples, batch_size=self.batch_size, shuffle=False)


class StepLog(Callback):
    """Records, per run in this process: learning rate per global step, and the weights and
    AdamW state at the start of training, at step ``CRASH_STEP - 1`` and at the end."""

    runs: list[dict[str, Any]] = []

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        StepLog.runs.append({"lr": {}, "start": snapshot(trainer), "at": {}})

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        run = StepLog.runs[-1]
        run["lr"][trainer.global_step] = trainer.optimizers[0].param_groups[0]["lr"]
        if trainer.global_step == CRASH_STEP - 1:
            run["at"][trainer.global_step] = snapshot(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        StepLog.runs[-1]["end"] = snapshot(trainer)


class PreemptedError(RuntimeError):
    """The job was killed."""


class CrashAt(Callback):
    """Raises :class:`PreemptedError` when training reaches ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step:
            raise PreemptedError(f"killed at step {self.step}")


def snapshot(trainer: Trainer) -> dict[str, Any]:
    module = trainer.lightning_module
    optimizer = trainer.optimizers[0]
    return {
        "global_step": trainer.global_step,
        "weights": {k: v.detach().clone() for k, v in module.state_dict().items()},
        "adam": copy.deepcopy(optimizer.state_dict()["state"]),
    }


def run_config(tmp_path: Path, cache_dir: Path, name: str, crash: bool) -> Path:
    config = yaml.safe_load(CONFIG.read_text())
    init_args = config["model"]["init_args"]
    for key in ("encoder_3d", "encoder_2d"):
        encoder = init_args[key]
        encoder["init_args"].update(TINY_ENCODER_ARGS[encoder["class_path"]])
    # Dropout draws from the global RNG, which a restart does not restore.
    init_args["encoder_2d"]["init_args"].update(attention_dropout=0.0, activation_dropout=0.0)
    init_args.update(warmup_steps=3, max_steps=TOTAL_STEPS)
    callbacks: list[dict[str, Any]] = [{"class_path": "tests.test_resume.StepLog"}]
    if crash:
        callbacks.append(
            {"class_path": "tests.test_resume.CrashAt", "init_args": {"step": CRASH_STEP}}
        )
    config["trainer"].update(
        max_steps=TOTAL_STEPS,
        val_check_interval=None,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / name / "logs")
    config["checkpoint"] = {
        "save_last": True,
        "every_n_train_steps": CHECKPOINT_EVERY,
        "dirpath": str(tmp_path / name / "checkpoints"),
    }
    config["data"] = {
        "class_path": "tests.test_resume.RepeatedBatches",
        "init_args": {"cache_dir": str(cache_dir)},
    }
    path = tmp_path / f"{name}{'_crash' if crash else ''}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def assert_same(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], **tol: Any):
    assert actual.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], msg=key, **tol)


def assert_same_adam(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for index, state in expected.items():
        assert_same(actual[index], state, rtol=0, atol=0)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    StepLog.runs = []
    MolIdLog.runs = []


def test_a_killed_run_resumes_from_last_where_it_stopped(tmp_path: Path) -> None:
    cache_dir = prepare_small_cache(tmp_path / "cache")
    main(["fit", "--config", str(run_config(tmp_path, cache_dir, "straight", crash=False))])
    with pytest.raises(PreemptedError):
        main(["fit", "--config", str(run_config(tmp_path, cache_dir, "killed", crash=True))])
    saved = sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir())
    assert saved == ["epoch=0-step=4.ckpt", "last.ckpt"]  # save_top_k=1 keeps the newest
    checkpoint = torch.load(
        tmp_path / "killed" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    assert checkpoint["global_step"] == CRASH_STEP - 1
    main(
        [
            "fit",
            "--config",
            str(run_config(tmp_path, cache_dir, "killed", crash=False)),
            "--ckpt_path",
            "last",
        ]
    )
    straight, killed, resumed = StepLog.runs
    # The killed run is the straight one until it dies: same seed, same batches.
    assert sorted(killed["lr"]) == list(range(CRASH_STEP + 1))

    start = resumed["start"]
    assert start["global_step"] == CRASH_STEP - 1
    reference = straight["at"][CRASH_STEP - 1]
    assert_same(start["weights"], reference["weights"], rtol=0, atol=0)
    assert_same_adam(start["adam"], reference["adam"])
    assert {int(s["step"]) for s in start["adam"].values()} == {CRASH_STEP - 1}

    # The LR schedule continues from the same position, step by step.
    assert sorted(resumed["lr"]) == list(range(CRASH_STEP - 1, TOTAL_STEPS))
    for step, lr in resumed["lr"].items():
        assert lr == straight["lr"][step], step
    assert len(set(straight["lr"].values())) > 4  # warm-up and decay: the check has teeth

    assert resumed["end"]["global_step"] == straight["end"]["global_step"] == TOTAL_STEPS
    assert_same(resumed["end"]["weights"], straight["end"]["weights"], rtol=1e-5, atol=1e-6)
    moved = [
        not torch.equal(straight["end"]["weights"][k], reference["weights"][k])
        for k in reference["weights"]
    ]
    assert sum(moved) > len(moved) // 2  # training after the restart point did change them


# -- streaming resume through `--ckpt_path last` ----------------------------------------------

#: Uneven shards of the small default's 24 molecules (one empty, as when all its molecules fail).
STREAM_SHARD_COUNTS = (5, 2, 7, 0, 3, 4, 3)
STREAM_BATCH = 5  # 24 molecules: 5 batches per epoch, the two loader workers hold 2 and 3
STREAM_EPOCH_BATCHES = 5
STREAM_CRASH_STEP = 3  # right after the periodic checkpoint of step 3: batches 0-2 are in it


def write_uneven_prepared(cache_dir: Path, root: Path, counts: tuple[int, ...]) -> list[int]:
    """A ``molssl prepare``-layout directory of the small default's records in shards of
    ``counts`` records; returns every mol_id written."""
    prepared = embedded_default(NUM_MOLECULES, ConformerOptions(num_conformers=1), cache_dir)
    records = list(prepared.records)
    assert sum(counts) <= len(records)
    root.mkdir(parents=True)
    shards, start = [], 0
    for index, count in enumerate(counts):
        part = records[start : start + count]
        shards.append(write_shard(root / f"shard-{index:06d}.tar", part, chunk_size=2).to_dict())
        start += count
    manifest = {
        "shards": shards,
        "ok": start,
        "failed": 0,
        "read": start,
        "failures_by_reason": {},
        "record_format_version": RECORD_FORMAT_VERSION,
    }
    write_json_atomic(root / "manifest.json", manifest)
    return [record.mol_id for record in records[:start]]


class MolIdLog(Callback):
    """Records ``(epoch, batch_idx, mol_ids)`` of every training batch, per run in this process."""

    runs: list[list[tuple[int, int, list[int]]]] = []

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        MolIdLog.runs.append([])

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        ids = [int(i) for i in batch.mol_id]
        MolIdLog.runs[-1].append((trainer.current_epoch, batch_idx, ids))


def stream_config(tmp_path: Path, data_root: Path, name: str, crash: bool) -> Path:
    """Tiny UniCorn on a prepared directory, 2 loader workers, a shuffle buffer, 2 epochs."""
    config = yaml.safe_load(CONFIG.read_text())
    init_args = config["model"]["init_args"]
    for key in ("encoder_3d", "encoder_2d"):
        encoder = init_args[key]
        encoder["init_args"].update(TINY_ENCODER_ARGS[encoder["class_path"]])
    init_args.update(warmup_steps=2, max_steps=2 * STREAM_EPOCH_BATCHES)
    # The crash goes first, so that the batch it kills is not logged as seen.
    callbacks: list[dict[str, Any]] = [{"class_path": "tests.test_resume.MolIdLog"}]
    if crash:
        callbacks.insert(
            0, {"class_path": "tests.test_resume.CrashAt", "init_args": {"step": STREAM_CRASH_STEP}}
        )
    config["trainer"].update(
        max_steps=2 * STREAM_EPOCH_BATCHES,
        val_check_interval=None,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    # No checkpoint dirpath: `last` must be found in the logger's earlier version folder.
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / name / "logs")
    config["checkpoint"] = {"save_last": True, "every_n_train_steps": STREAM_CRASH_STEP}
    config["data"] = {
        "class_path": "molssl.datamodules.PretrainDataModule",
        "init_args": {
            "root": str(data_root),
            "batch_size": STREAM_BATCH,
            "num_workers": 2,
            "val_fraction": 0.0,
            "shuffle_buffer": 8,
            "seed": 3,
        },
    }
    path = tmp_path / f"{name}{'_crash' if crash else ''}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_killed_streaming_run_resumes_its_epoch_without_repeating_molecules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache_dir = prepare_small_cache(tmp_path / "cache")
    data_root = tmp_path / "prepared"
    every_id = write_uneven_prepared(cache_dir, data_root, STREAM_SHARD_COUNTS)
    straight_config = stream_config(tmp_path, data_root, "straight", crash=False)
    # `last` before any checkpoint exists: said plainly, then a fresh start.
    main(["fit", "--config", str(straight_config), "--ckpt_path", "last"])
    assert "no last.ckpt in" in capsys.readouterr().err
    with pytest.raises(PreemptedError):
        main(["fit", "--config", str(stream_config(tmp_path, data_root, "run", crash=True))])
    run_config = stream_config(tmp_path, data_root, "run", crash=False)
    main(["fit", "--config", str(run_config), "--ckpt_path", "last"])
    expected = tmp_path / "run" / "logs" / "unicorn" / "version_0" / "checkpoints" / "last.ckpt"
    assert f"resuming from {expected}" in capsys.readouterr().err
    assert (tmp_path / "run" / "logs" / "unicorn" / "version_1").is_dir()

    straight, killed, resumed = MolIdLog.runs
    assert [(e, b) for e, b, _ in killed] == [(0, b) for b in range(STREAM_CRASH_STEP)]
    assert [(e, b) for e, b, _ in resumed] == [
        (0, b) for b in range(STREAM_CRASH_STEP, STREAM_EPOCH_BATCHES)
    ] + [(1, b) for b in range(STREAM_EPOCH_BATCHES)]
    # Epoch 0 across the killed and the resumed run: every training molecule exactly once ...
    epoch0 = [i for _, _, ids in killed for i in ids]
    epoch0 += [i for e, _, ids in resumed if e == 0 for i in ids]
    assert sorted(epoch0) == sorted(every_id)
    # ... in the uninterrupted run's batches, and the next epoch is the uninterrupted one too.
    assert [ids for _, _, ids in killed + resumed] == [ids for _, _, ids in straight]
    assert [ids for e, _, ids in straight if e == 0] != [ids for e, _, ids in straight if e == 1]

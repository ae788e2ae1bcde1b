"""``molssl fit --config configs/unicorn.yaml`` under DDP on two CPU processes (gloo), end to end.

The second test streams a ``molssl prepare`` directory of uneven shards (one empty) through
``PretrainDataModule`` on the same two processes, two loader workers each, for two epochs with
validation, and checks from per-rank mol_id files that every training molecule is seen once per
epoch across the ranks, every validation molecule once, both ranks yield the same number of
batches, and the run ends (no rank waits forever on the other).

The DDP run is a subprocess of the ``molssl`` console script, as a user types it (Lightning's
DDP launcher re-executes the command line for rank 1). It is compared with a single-process
run on the same global batches: 2 processes x 2 molecules per step against 1 x 4, on
:class:`FixedBatches` (unshuffled, views fixed per molecule), so that Lightning's distributed
sampler hands rank r the molecules r, r + 2, ... of each global batch of four.

What must hold: the command exits 0; one log folder and one set of checkpoints are written
(rank 0 only); both ranks end on the same weights; a NaN produced on rank 1 alone is skipped
by both ranks on the same step; and the weights after the run match the single-process run's:
the gap between the two is a small fraction of how far training moved them. They are not
identical: each rank averages its loss over its own atoms (the all-reduce then averages the
two ranks' gradients, not the atoms'), and the cross-modal InfoNCE draws its negatives from
the rank's own molecules, as in the UniCorn and Frad code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer
from torch_geometric.data import Batch

from molssl.chem.conformers import ConformerOptions
from molssl.cli import main
from molssl.datamodules.embedded import embedded_default
from molssl.encoders.base import EncoderOutput
from molssl.modules import PretrainModule
from molssl.objectives import Objective, ObjectiveResult
from tests.modules.pretrain_fixtures import (
    NUM_MOLECULES,
    TINY_ENCODER_ARGS,
    prepare_small_cache,
)
from tests.test_resume import RepeatedBatches, write_uneven_prepared

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "unicorn.yaml"
STEPS = 4
NAN_STEP = 1
GLOBAL_BATCH = 4


class FixedBatches(RepeatedBatches):
    """One pass over the first ``global_batch * steps`` molecules, in order, fixed views."""

    def __init__(self, cache_dir: str, batch_size: int = GLOBAL_BATCH, steps: int = STEPS):
        super().__init__(cache_dir, batch_size=batch_size, repeats=1)
        self.global_batch = GLOBAL_BATCH
        self.steps = steps

    def setup(self, stage: str | None = None) -> None:
        self.batch_size = self.global_batch * self.steps  # samples built by the parent
        super().setup(stage)
        self.batch_size = self.global_batch // self.trainer.world_size


class LastRankNaN(Objective):
    """Zero loss tied to the 3D encoder, NaN on the last process at training call ``NAN_STEP``:
    on one process that is rank 0, under DDP rank 1 alone."""

    requires = ("3d",)

    def __init__(self, weight: float = 1.0, name: str | None = None) -> None:
        super().__init__(weight=weight, name=name)
        self.calls = 0

    def loss(self, batch: Batch, outputs: Mapping[str, EncoderOutput]) -> ObjectiveResult:
        loss = outputs["3d"].node.sum() * 0.0
        if self.training:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
            world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
            if self.calls == NAN_STEP and rank == world - 1:
                loss = loss * float("nan")
            self.calls += 1
        return ObjectiveResult(loss=loss)


class RankReport(Callback):
    """Writes, per process, its rank, steps, counters and weights into ``folder``."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        torch.save(pl_module.state_dict(), self.folder / f"init_rank{trainer.global_rank}.pt")

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        rank = trainer.global_rank
        torch.save(pl_module.state_dict(), self.folder / f"end_rank{rank}.pt")
        guard = pl_module.nonfinite_guard
        report = {
            "rank": rank,
            "world_size": trainer.world_size,
            "global_step": trainer.global_step,
            "skipped": guard.skipped,
            "pid": os.getpid(),
        }
        (self.folder / f"rank{rank}.json").write_text(json.dumps(report))


def write_config(tmp_path: Path, cache_dir: Path, name: str) -> Path:
    config = yaml.safe_load(CONFIG.read_text())
    init_args = config["model"]["init_args"]
    for key in ("encoder_3d", "encoder_2d"):
        init_args[key]["init_args"].update(TINY_ENCODER_ARGS[init_args[key]["class_path"]])
    init_args["encoder_2d"]["init_args"].update(attention_dropout=0.0, activation_dropout=0.0)
    init_args["objectives"].append({"class_path": "tests.test_ddp.LastRankNaN"})
    init_args.update(lr=2e-3, warmup_steps=1, max_steps=STEPS)
    report = {
        "class_path": "tests.test_ddp.RankReport",
        "init_args": {"folder": str(tmp_path / name)},
    }
    config["trainer"].update(
        max_steps=STEPS,
        val_check_interval=None,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[report],
    )
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / name / "logs")
    config["checkpoint"] = {"save_last": True, "every_n_train_steps": STEPS}
    config["data"] = {
        "class_path": "tests.test_ddp.FixedBatches",
        "init_args": {"cache_dir": str(cache_dir)},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def evaluation_loss(module: PretrainModule, cache_dir: Path) -> float:
    """Mean total loss over the run's training molecules in batches of four, eval mode."""
    prepared = embedded_default(NUM_MOLECULES, ConformerOptions(num_conformers=1), cache_dir)
    views = module.pipeline_views()
    samples = [
        RepeatedBatches._sample(prepared.records[i], views) for i in range(GLOBAL_BATCH * STEPS)
    ]
    module.eval()
    with torch.no_grad():
        totals = [
            module.objective_results(Batch.from_data_list(samples[i : i + GLOBAL_BATCH]))[0]
            for i in range(0, len(samples), GLOBAL_BATCH)
        ]
    return float(torch.stack(totals).mean())


def flat(state: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([value.flatten().double() for value in state.values()])


def test_ddp_fit_on_two_cpu_processes_matches_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir = prepare_small_cache(tmp_path / "cache")
    molssl = Path(sys.executable).parent / "molssl"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    command = [
        str(molssl),
        "fit",
        "--config",
        str(write_config(tmp_path, cache_dir, "ddp")),
        "--trainer.strategy",
        "ddp",
        "--trainer.devices",
        "2",
        "--trainer.accelerator",
        "cpu",
    ]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]

    reports = [json.loads((tmp_path / "ddp" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in reports] == [0, 1]
    assert reports[0]["pid"] != reports[1]["pid"]
    assert all(r["world_size"] == 2 and r["global_step"] == STEPS for r in reports)
    # Rank 1's NaN was skipped by both processes, on the same step.
    assert [r["skipped"] for r in reports] == [1, 1]
    end = [torch.load(tmp_path / "ddp" / f"end_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert torch.equal(flat(end[0]), flat(end[1]))

    # Rank 0 alone logs and checkpoints: one version folder, one last.ckpt.
    (version,) = (tmp_path / "ddp" / "logs" / "unicorn").iterdir()
    checkpoints = sorted(p.name for p in (version / "checkpoints").iterdir())
    assert checkpoints == [f"epoch=0-step={STEPS}.ckpt", "last.ckpt"]
    saved = torch.load(version / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["molssl"]["nonfinite"]["skipped"] == 1
    assert torch.equal(flat(saved["state_dict"]), flat(end[0]))

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    main(["fit", "--config", str(write_config(tmp_path, cache_dir, "single"))])
    (single_report,) = [json.loads((tmp_path / "single" / "rank0.json").read_text())]
    assert single_report["world_size"] == 1 and single_report["skipped"] == 1
    init = flat(torch.load(tmp_path / "single" / "init_rank0.pt", weights_only=True))
    assert torch.equal(
        init, flat(torch.load(tmp_path / "ddp" / "init_rank0.pt", weights_only=True))
    )
    # The loss after the run, recomputed on the same batches of four for both: what training
    # gained, DDP and one process gained alike.
    (single_ckpt,) = (tmp_path / "single" / "logs").rglob("last.ckpt")
    losses = {}
    for name, state in (
        ("init", torch.load(tmp_path / "single" / "init_rank0.pt", weights_only=True)),
        ("single", torch.load(single_ckpt, weights_only=True)["state_dict"]),
        ("ddp", saved["state_dict"]),
    ):
        module = PretrainModule.load_from_checkpoint(single_ckpt)
        module.load_state_dict(state)
        losses[name] = evaluation_loss(module, cache_dir)
    gained = losses["init"] - losses["single"]
    assert gained > 0, losses
    assert abs(losses["ddp"] - losses["single"]) < 0.1 * gained, losses


# -- the streaming data module under DDP -------------------------------------------------------

#: 24 molecules in uneven shards; seed 0 holds out shards 1 and 4 (6 molecules), leaving 18 for
#: training: 9 per rank, 3 batches of 3 split 1 + 2 between the two loader workers.
DDP_SHARD_COUNTS = (5, 3, 7, 0, 3, 4, 2)
DDP_EPOCHS = 2


class MolIdFiles(Callback):
    """Writes, per rank, the mol_ids of its training and validation batches per epoch."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.seen: dict[str, dict[int, list[list[int]]]] = {"train": {}, "val": {}}

    def _add(self, stage: str, trainer: Trainer, batch: Batch) -> None:
        ids = [int(i) for i in batch.mol_id]
        self.seen[stage].setdefault(trainer.current_epoch, []).append(ids)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Batch, batch_idx: int
    ) -> None:
        self._add("train", trainer, batch)

    def on_validation_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: Batch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.sanity_checking:
            self._add("val", trainer, batch)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"mol_ids_rank{trainer.global_rank}.json"
        path.write_text(json.dumps(self.seen))


def write_stream_config(tmp_path: Path, data_root: Path) -> Path:
    config = yaml.safe_load(CONFIG.read_text())
    init_args = config["model"]["init_args"]
    for key in ("encoder_3d", "encoder_2d"):
        init_args[key]["init_args"].update(TINY_ENCODER_ARGS[init_args[key]["class_path"]])
    init_args.update(warmup_steps=1, max_steps=10)
    ids = {"class_path": "tests.test_ddp.MolIdFiles", "init_args": {"folder": str(tmp_path)}}
    config["trainer"].update(
        max_steps=-1,
        max_epochs=DDP_EPOCHS,
        val_check_interval=None,
        check_val_every_n_epoch=1,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ids],
    )
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / "logs")
    config["checkpoint"] = {"save_last": True}
    config["data"] = {
        "class_path": "molssl.datamodules.PretrainDataModule",
        "init_args": {
            "root": str(data_root),
            "batch_size": 3,
            "num_workers": 2,
            "val_fraction": 0.25,
            "shuffle_buffer": 4,
            "seed": 0,
        },
    }
    path = tmp_path / "stream.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_ddp_streams_uneven_shards_each_molecule_once_per_epoch(tmp_path: Path) -> None:
    cache_dir = prepare_small_cache(tmp_path / "cache")
    every_id = write_uneven_prepared(cache_dir, tmp_path / "prepared", DDP_SHARD_COUNTS)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    command = [
        str(Path(sys.executable).parent / "molssl"),
        "fit",
        "--config",
        str(write_stream_config(tmp_path, tmp_path / "prepared")),
        "--trainer.strategy",
        "ddp",
        "--trainer.devices",
        "2",
        "--trainer.accelerator",
        "cpu",
    ]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]

    ranks = [json.loads((tmp_path / f"mol_ids_rank{r}.json").read_text()) for r in (0, 1)]
    val = [i for rank in ranks for batch in rank["val"]["0"] for i in batch]
    assert len(val) == len(set(val)) == 6  # shards 1 and 4, each molecule on one rank
    train = set(every_id) - set(val)
    assert len(train) == 18
    orders = []
    for epoch in map(str, range(DDP_EPOCHS)):
        batches = [rank["train"][epoch] for rank in ranks]
        assert [len(b) for b in batches] == [3, 3]  # equal batch counts: no rank waits
        seen = Counter(i for rank in batches for batch in rank for i in batch)
        assert set(seen) == train and set(seen.values()) == {1}, seen
        # The next validation pass sees the same molecules again, once each.
        again = [i for rank in ranks for batch in rank["val"][epoch] for i in batch]
        assert sorted(again) == sorted(val)
        orders.append(batches)
    assert orders[0] != orders[1]  # a fresh order each epoch

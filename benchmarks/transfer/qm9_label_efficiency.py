"""QM9 label efficiency, one command: does pre-training on QM9's geometries help at 1,000 labels?

The direction of UniCorn's Table 5 at a scale this CPU can run. Stages, each skipped when its
output exists (so an interrupted run continues where it stopped):

1. ``pool``: the unlabelled geometries of QM9's standard training split (:mod:`qm9_pool`;
   validation and test molecules left out) as one qm9pack-layout CSV.
2. ``prepare``: ``molssl prepare`` on it (DFT coordinates kept, shards of 5,000).
3. ``pretrain``: each ``--pretrain`` arm (``configs/<arm>.yaml``) with the same small encoders,
   batch, learning rate and step budget (``--pretrain-steps``; steps, not wall time, so that the
   machine's load cannot favour an arm).
4. ``finetune``: HOMO, LUMO and gap together (one equivariant head with three outputs on the
   ET; ``configs/finetune/qm9_homo.yaml`` with ``targets`` overridden), ``--train-size``
   labelled molecules drawn from the training split by the seed, validation and test subsets
   fixed by ``split_seed`` 0 (the same molecules for every arm and seed), from scratch and from
   each arm's final pre-trained weights, over ``--lrs`` x ``--encoder-lr-scales`` x
   ``--search-seeds`` (every point), then the chosen point (lowest mean validation MAE over
   the search seeds) with the rest of ``--seeds``; in each run the checkpoint with the lowest
   validation MAE (mean over the three targets) is tested.
5. ``report``: per arm the grid point with the lowest mean validation MAE over the search seeds, its
   test MAE per target (mean ± std over seeds) and the change against scratch; every run in
   ``results.json``; the selected runs in the schema of ``docs/results/qm9_label_efficiency.json``
   (``--results-json``).

    OMP_NUM_THREADS=1 python benchmarks/transfer/qm9_label_efficiency.py --output runs/qm9_label
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    MOLSSL,
    PRETRAIN_CONFIGS,
    REPO,
    encoder_overrides,
    last_checkpoint,
    open_output,
    record_time,
    run_logged,
    trainer_overrides,
)
from qm9_pool import write_pool
from qm9_report import FAILED_FILE, choose, collect, finetune_dir, grid_key, report

from machine_info import load_average
from molssl.commands.seeds import SEEDS_FILE, run_seeds

FINETUNE_CONFIG = REPO / "configs" / "finetune" / "qm9_homo.yaml"
TARGETS = ("homo", "lumo", "gap")


def pretrain_overrides(config: Path, args: argparse.Namespace, output: Path) -> list[str]:
    """The arm's config with the experiment's sizes, batch, schedule, step budget and pool."""
    text = config.read_text()
    overrides = encoder_overrides("encoder_3d", args.hidden, args.layers, args.heads, args.rbf)
    if "encoder_2d:" in text:
        overrides += encoder_overrides("encoder_2d", args.hidden, args.layers, args.heads, None)
    return [
        *overrides,
        *trainer_overrides(args),
        f"--trainer.max_steps={args.pretrain_steps}",
        f"--trainer.val_check_interval={args.pretrain_val_every}",
        # 20 batches of the held-out shard: the same 640 molecules at every validation.
        "--trainer.limit_val_batches=20",
        f"--trainer.logger.init_args.save_dir={output}",
        f"--checkpoint.every_n_train_steps={args.pretrain_val_every}",
        # Every periodic checkpoint stays: fine-tuning from them measures transfer against
        # pre-training length without pre-training again.
        "--checkpoint.save_top_k=-1",
        f"--model.init_args.lr={args.pretrain_lr}",
        f"--model.init_args.warmup_steps={args.pretrain_warmup}",
        f"--model.init_args.max_steps={args.pretrain_steps}",
        f"--data.init_args.root={output.parent / 'pool_prepared'}",
        f"--data.init_args.batch_size={args.pretrain_batch}",
        "--data.init_args.num_workers=0",
        "--data.init_args.val_fraction=0.05",
        *args.pretrain_extra,
    ]


def finetune_overrides(
    args: argparse.Namespace, lr: float, scale: float, init_from: Path | None
) -> list[str]:
    """The same fine-tuning for every arm; only ``init_from`` differs."""
    data = {
        "root": "qm9pack",
        "targets": "[" + ",".join(args.targets) + "]",
        "split_seed": 0,
        "train_size": args.train_size,
        "val_size": args.val_size,
        "test_size": args.test_size,
        "batch_size": args.batch,
        "eval_batch_size": 128,
        "num_workers": 0,
    }
    return [
        *encoder_overrides("encoder", args.hidden, args.layers, args.heads, args.rbf),
        *(f"--data.init_args.{key}={value}" for key, value in data.items()),
        *trainer_overrides(args),
        f"--trainer.max_steps={args.steps}",
        "--trainer.max_epochs=-1",
        f"--trainer.check_val_every_n_epoch={args.val_every_epochs}",
        f"--model.init_args.num_tasks={len(args.targets)}",
        f"--model.init_args.lr={lr}",
        f"--model.init_args.encoder_lr_scale={scale}",
        f"--model.init_args.warmup_steps={args.warmup}",
        f"--model.init_args.max_steps={args.steps}",
        *([f"--model.init_args.init_from={init_from}"] if init_from is not None else []),
        *args.finetune_extra,
    ]


def run_name(arm: str, args: argparse.Namespace) -> str:
    """The pre-training run's (and its fine-tuning arm's) name: the arm, or ``<arm>_<tag>``
    with ``--pretrain-tag``, so that a variant (``--pretrain-extra``) never reuses or
    overwrites the recorded ``pretrain/<arm>``."""
    return f"{arm}_{args.pretrain_tag}" if args.pretrain_tag else arm


def stage_pretrain(output: Path, arm: str, args: argparse.Namespace) -> Path:
    """Pre-trains ``arm`` for the step budget; returns its final ``last.ckpt``."""
    folder, name = output / "pretrain", run_name(arm, args)
    existing = last_checkpoint(folder / name) if (folder / name).is_dir() else None
    if existing is not None:
        return existing
    folder.mkdir(parents=True, exist_ok=True)
    config = PRETRAIN_CONFIGS[arm]
    start = time.perf_counter()
    command = [*MOLSSL, "fit", "--config", str(config), *pretrain_overrides(config, args, folder)]
    run_logged([*command, f"--trainer.logger.init_args.name={name}"], folder / f"{name}.log")
    record_time(output, f"pretrain/{name}", time.perf_counter() - start)
    ckpt = last_checkpoint(folder / name)
    if ckpt is None:
        raise SystemExit(f"pre-training {name} wrote no last.ckpt under {folder / name}")
    return ckpt


def _run_one(folder: Path, seed: int, overrides: list[str]) -> None:
    """One fit + test; a run that stops with an error (a learning rate that diverges: 10
    non-finite batches in a row) is recorded in ``failed.json`` as a finished, failed run."""
    torch.set_num_threads(1)
    part = folder / f"part_{seed}"
    try:
        run_seeds(FINETUNE_CONFIG, [seed], part, overrides)
    except Exception as error:  # any failure of the run is its result, not the grid's end
        part.mkdir(parents=True, exist_ok=True)
        record = {"seed": seed, "error": f"{type(error).__name__}: {error}"}
        (part / FAILED_FILE).write_text(json.dumps(record, indent=2) + "\n")


def _done(part: Path) -> bool:
    return (part / SEEDS_FILE).is_file() or (part / FAILED_FILE).is_file()


def _missing(folder: Path, seeds: list[int], overrides: list[str]) -> list[tuple]:
    return [(folder, seed, overrides) for seed in seeds if not _done(folder / f"part_{seed}")]


def _run_all(todo: list[tuple], jobs: int) -> None:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=context) as pool:
        for future in [pool.submit(_run_one, *item) for item in todo]:
            future.result()


def stage_finetune(
    output: Path, checkpoints: dict[str, Path | None], args: argparse.Namespace
) -> None:
    """The search, then the chosen points' other seeds; ``--jobs`` runs at a time.

    1. Every grid point of every arm with the ``--search-seeds``.
    2. Per arm, the point with the lowest mean validation MAE over the search seeds
       (:func:`choose`) with the rest of ``--seeds``.
    """
    start = time.perf_counter()
    search: list[tuple] = []
    for arm, init_from in checkpoints.items():
        for lr in args.lrs:
            for scale in args.encoder_lr_scales:
                folder = finetune_dir(output, args) / arm / grid_key(lr, scale)
                overrides = finetune_overrides(args, lr, scale, init_from)
                search += _missing(folder, args.search_seeds, overrides)
    _run_all(search, args.jobs)
    confirm: list[tuple] = []
    results = collect(output, list(checkpoints), args)
    for arm, init_from in checkpoints.items():
        point = choose(results[arm], args.search_seeds)
        folder = finetune_dir(output, args) / arm / point
        entry = results[arm][point]
        overrides = finetune_overrides(args, entry["lr"], entry["encoder_lr_scale"], init_from)
        confirm += _missing(folder, args.seeds, overrides)
    _run_all(confirm, args.jobs)
    if search or confirm:
        count = len(search) + len(confirm)
        record_time(output, f"finetune ({count} runs)", time.perf_counter() - start)


def build_parser() -> argparse.ArgumentParser:
    """The script's options (its defaults are the settings of the recorded runs)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--output", type=Path, default=REPO / "runs" / "qm9_label")
    add("--pretrain", nargs="*", default=["frad", "unicorn", "unicorn_no_denoise"])
    add("--pretrain-steps", type=int, default=1500)
    add("--pretrain-batch", type=int, default=32)
    add("--pretrain-lr", type=float, default=5e-4)
    add("--pretrain-warmup", type=int, default=100)
    add("--pretrain-val-every", type=int, default=250)
    add("--hidden", type=int, default=64)
    add("--layers", type=int, default=3)
    add("--heads", type=int, default=4)
    add("--rbf", type=int, default=32)
    add("--targets", nargs="+", default=list(TARGETS))
    add("--train-size", type=int, default=1000)
    add("--val-size", type=int, default=500)
    add("--test-size", type=int, default=3000)
    add("--batch", type=int, default=32)
    add("--steps", type=int, default=600)
    add("--warmup", type=int, default=50)
    add("--val-every-epochs", type=int, default=3)
    add("--lrs", type=float, nargs="+", default=[6e-3, 1.2e-2, 2.4e-2, 4.8e-2, 9.6e-2])
    add("--encoder-lr-scales", type=float, nargs="+", default=[1.0])
    add("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the chosen point")
    add("--search-seeds", type=int, nargs="+", default=[0], help="seeds of every grid point")
    add("--pretrain-extra", nargs="*", default=[], help="more pre-training overrides")
    add("--pretrain-tag", default="", help="a pre-training variant: runs in pretrain/<arm>_<tag>/")
    add("--finetune-extra", nargs="*", default=[], help="more fine-tuning overrides")
    add("--tag", default="", help="a fine-tuning variant: runs in finetune_<tag>/")
    add("--arms", nargs="*", default=None, help="fine-tune only these (default all)")
    add("--accelerator", default="cpu")
    add("--precision", default="32-true")
    add("--jobs", type=int, default=2)
    add("--results", default="results.json")
    add("--results-json", type=Path, default=None, help="write the selected runs here")
    add("--stages", nargs="+", default=["pool", "prepare", "pretrain", "finetune", "report"])
    return parser


def main() -> None:
    args = build_parser().parse_args()
    output = open_output(args.output)
    if "pool" in args.stages and not (output / "pool.csv").is_file():
        start = time.perf_counter()
        write_pool(output / "pool.csv", split_seed=0)
        record_time(output, "pool", time.perf_counter() - start)
    if "prepare" in args.stages and not (output / "pool_prepared" / "manifest.json").is_file():
        start = time.perf_counter()
        command = [*MOLSSL, "prepare", "--input", str(output / "pool.csv"), "--output"]
        command += [str(output / "pool_prepared"), "--shard-size", "5000", "--no-progress"]
        run_logged(command, output / "prepare.log")
        record_time(output, "prepare", time.perf_counter() - start)
    checkpoints: dict[str, Path | None] = {"scratch": None}
    for arm in args.pretrain:
        name = run_name(arm, args)
        if "pretrain" in args.stages:
            checkpoints[name] = stage_pretrain(output, arm, args)
        elif (ckpt := last_checkpoint(output / "pretrain" / name)) is not None:
            checkpoints[name] = ckpt
    if args.arms is not None:
        checkpoints = {arm: ckpt for arm, ckpt in checkpoints.items() if arm in args.arms}
    if "finetune" in args.stages:
        stage_finetune(output, checkpoints, args)
    if "report" in args.stages:
        rows = report(output, collect(output, list(checkpoints), args), args)
        if args.results_json is not None:
            args.results_json.parent.mkdir(parents=True, exist_ok=True)
            args.results_json.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()

"""FreeSolv transfer experiment, one command: does pre-training help at CPU scale?

Stages, in order (each skipped when its output already exists, so an interrupted run goes on):

1. ``pool``: :mod:`build_pool` (RDKit NCI 5K + shared ChEMBL sample + micro ZINC, canonical
   dedup, every FreeSolv molecule removed) -> ``pool.smi`` and ``pool.json`` (counts).
2. ``prepare``: ``molssl prepare`` (one ETKDG + MMFF conformer each, shards of 400 so that
   validation can be held out by shard).
3. ``pretrain``: ``molssl fit`` of each pre-training config (default UniCorn) with small
   encoders under a wall-clock budget (``--trainer.max_time``).
4. ``finetune``: ``molssl seeds`` on FreeSolv (scaffold split, seeds change init and batch
   order only) from scratch and from each pre-trained checkpoint, with the same encoder size,
   epochs and learning-rate search; per variant the learning rate with the lowest mean
   validation RMSE is chosen and its test RMSE reported.
5. ``embed``: ``molssl embed`` on FreeSolv for each pre-trained encoder and a random-init one.
6. ``probe``: ridge regression on those frozen embeddings (:mod:`probe`), on the fine-tuning
   split and on 10 seeded balanced scaffold splits, paired against the random-init encoder.
7. ``report``: the tables (mean ± std test RMSE over seeds, change against scratch; the probe),
   written to ``results.json`` and printed.

    OMP_NUM_THREADS=1 python benchmarks/transfer/run.py --output runs/transfer
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import yaml

BENCHMARKS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCHMARKS))
sys.path.insert(0, str(BENCHMARKS / "transfer"))

from common import (  # noqa: E402
    MOLSSL,
    PRETRAIN_CONFIGS,
    REPO,
    best_validation_rmse,
    encoder_overrides,
    last_checkpoint,
    open_output,
    record_time,
    run_logged,
    trainer_overrides,
)
from report import report, result_rows, stage_probe  # noqa: E402

from freesolv_scratch import mean_predictor_rmse  # noqa: E402
from machine_info import load_average  # noqa: E402
from molssl.commands.seeds import SEEDS_FILE, run_seeds, summarise_runs  # noqa: E402
from molssl.datamodules.moleculenet import MoleculeNetDataModule  # noqa: E402

FREESOLV = REPO.parent / "shared" / "data" / "freesolv.csv"
FINETUNE_CONFIG = REPO / "configs" / "finetune" / "freesolv.yaml"


def pretrain_overrides(config: Path, args: argparse.Namespace, output: Path) -> list[str]:
    """Encoder sizes, device, wall-clock budget, prepared pool; the config's objectives as given."""
    model_args = (yaml.safe_load(config.read_text())["model"] or {}).get("init_args", {})
    overrides: list[str] = []
    if "encoder_3d" in model_args:
        overrides += encoder_overrides("encoder_3d", args.hidden, args.layers, args.heads, args.rbf)
    if "encoder_2d" in model_args:
        overrides += encoder_overrides(
            "encoder_2d",
            args.hidden_2d or args.hidden,
            args.layers_2d or args.layers,
            args.heads_2d or args.heads,
            None,
        )
    minutes = args.pretrain_minutes
    return [
        *overrides,
        *trainer_overrides(args),
        # Whichever comes first: the end of the cosine schedule or the wall budget.
        f"--trainer.max_steps={args.pretrain_horizon}",
        f"--trainer.max_time=00:{minutes // 60:02d}:{minutes % 60:02d}:00",
        f"--trainer.val_check_interval={args.pretrain_val_every}",
        # At most 20 batches of the held-out shards: the same molecules at every validation.
        "--trainer.limit_val_batches=20",
        f"--trainer.logger.init_args.save_dir={output}",
        f"--checkpoint.every_n_train_steps={args.pretrain_val_every}",
        f"--model.init_args.lr={args.pretrain_lr}",
        f"--model.init_args.warmup_steps={args.pretrain_warmup}",
        # A run cut by max_time ends before the decay does: the horizon is an estimate of the
        # steps the budget reaches (1000 in about 10 minutes on the shared 2-core CPU).
        f"--model.init_args.max_steps={args.pretrain_horizon}",
        f"--data.init_args.root={output.parent / 'pool_prepared'}",
        f"--data.init_args.batch_size={args.pretrain_batch}",
        f"--data.init_args.num_workers={args.pretrain_workers}",
        f"--data.init_args.val_fraction={args.pretrain_val_fraction}",
    ]


FREESOLV_DATA = {"preset": "freesolv", "split": "scaffold", "batch_size": 32}


def freesolv_datamodule(args: argparse.Namespace) -> MoleculeNetDataModule:
    """The FreeSolv datamodule every fine-tuning run uses (for the cache and the baseline)."""
    return MoleculeNetDataModule(
        path=str(args.freesolv), **FREESOLV_DATA, num_workers=0, progress=False
    )


def finetune_overrides(
    args: argparse.Namespace, lr: float, init_from: Path | None, encoder_lr_scale: float = 1.0
) -> list[str]:
    """The same FreeSolv settings for every variant; only ``init_from`` differs."""
    data = {
        "path": str(args.freesolv),
        **FREESOLV_DATA,
        "num_workers": 0,
        "progress": False,
        "prepare_workers": 1,
    }
    return [
        *encoder_overrides("encoder", args.hidden, args.layers, args.heads, args.rbf),
        *(f"--data.init_args.{key}={value}" for key, value in data.items()),
        f"--trainer.max_epochs={args.epochs}",
        *trainer_overrides(args),
        f"--model.init_args.lr={lr}",
        f"--model.init_args.encoder_lr_scale={encoder_lr_scale}",
        *([f"--model.init_args.init_from={init_from}"] if init_from is not None else []),
    ]


def merge_seed_runs(folder: Path, seeds: list[int]) -> dict[str, Any]:
    """Merges the ``part_<seed>/seeds.json`` records of one grid point into ``seeds.json``."""
    parts = [json.loads((folder / f"part_{seed}" / SEEDS_FILE).read_text()) for seed in seeds]
    runs = [run for part in parts for run in part["runs"]]
    record = {**parts[0], "output": str(folder), "seeds": list(seeds), "runs": runs}
    record["summary"] = summarise_runs(runs)
    (folder / SEEDS_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def run_finetune_grid(points: list[tuple[Path, list[str]]], seeds: list[int], jobs: int) -> None:
    """Every seed of every grid point ``(folder, overrides)``, ``jobs`` runs at a time.

    Each seed runs in its own process and folder (``part_<seed>``); a point's seeds are merged
    in seed order into its ``seeds.json`` once all of them have finished. A seed whose
    ``part_<seed>/seeds.json`` exists (an interrupted grid) is not run again.
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=context) as pool:
        futures = [
            pool.submit(run_seeds, FINETUNE_CONFIG, [seed], folder / f"part_{seed}", overrides)
            for folder, overrides in points
            for seed in seeds
            if not (folder / f"part_{seed}" / SEEDS_FILE).is_file()
        ]
        for future in futures:
            future.result()
    for folder, _ in points:
        merge_seed_runs(folder, seeds)


def stage_pool(output: Path, args: argparse.Namespace) -> None:
    """``pool.smi`` and its counts (:mod:`build_pool`, ``--pool-source`` small or moses)."""
    if (output / "pool.smi").is_file():
        return
    start = time.perf_counter()
    script = Path(__file__).with_name("build_pool.py")
    command = [sys.executable, str(script), "--output", str(output / "pool.smi")]
    command += ["--shared-data", str(args.freesolv.parent), "--source", args.pool_source]
    command += ["--moses-size", str(args.moses_size)]
    run_logged(command, output / "pool.log")
    record_time(output, "pool", time.perf_counter() - start)


def stage_prepare(output: Path, workers: int, shard_size: int) -> None:
    """Conformers and shards of the pool."""
    if (output / "pool_prepared" / "manifest.json").is_file():
        return
    start = time.perf_counter()
    command = [*MOLSSL, "prepare", "--input", str(output / "pool.smi")]
    command += ["--output", str(output / "pool_prepared"), "--workers", str(workers)]
    command += ["--shard-size", str(shard_size), "--no-progress"]
    run_logged(command, output / "prepare.log")
    record_time(output, "prepare", time.perf_counter() - start)


def stage_pretrain(output: Path, variant: str, args: argparse.Namespace) -> Path:
    """Pre-trains ``variant`` under the wall budget; returns its ``last.ckpt``."""
    folder = output / "pretrain"
    config = PRETRAIN_CONFIGS[variant]
    name_override = f"--trainer.logger.init_args.name={variant}"
    existing = last_checkpoint(folder / variant) if (folder / variant).is_dir() else None
    if existing is not None:
        return existing
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    command = [*MOLSSL, "fit", "--config", str(config), *pretrain_overrides(config, args, folder)]
    run_logged([*command, name_override], folder / f"{variant}.log")
    record_time(output, f"pretrain/{variant}", time.perf_counter() - start)
    ckpt = last_checkpoint(folder / variant)
    if ckpt is None:
        raise SystemExit(f"pre-training {variant} wrote no last.ckpt under {folder / variant}")
    return ckpt


def grid_key(lr: float, encoder_lr_scale: float) -> str:
    """Name of a fine-tuning grid point (and of its folder, after ``lr_``)."""
    return f"{lr:g}" if encoder_lr_scale == 1.0 else f"{lr:g}_enc{encoder_lr_scale:g}"


def stage_finetune(
    output: Path, checkpoints: dict[str, Path | None], args: argparse.Namespace
) -> dict[str, Any]:
    """Seeds x learning rates x encoder learning-rate scales for every variant.

    The missing grid points of all variants run together (``--jobs`` at a time); per variant
    the point with the lowest mean validation RMSE over the seeds is chosen.
    """
    grid = [(lr, scale) for lr in args.lrs for scale in args.encoder_lr_scales]
    missing: list[tuple[Path, list[str]]] = []
    for variant, init_from in checkpoints.items():
        for lr, scale in grid:
            folder = output / "finetune" / variant / f"lr_{grid_key(lr, scale)}"
            if not (folder / SEEDS_FILE).is_file():
                missing.append((folder, finetune_overrides(args, lr, init_from, scale)))
    if missing:
        # Conformers once, before the parallel runs would each compute them.
        freesolv_datamodule(args).prepare_data()
        start = time.perf_counter()
        run_finetune_grid(missing, args.seeds, args.jobs)
        names = ", ".join(str(folder.relative_to(output)) for folder, _ in missing)
        record_time(output, f"finetune ({names})", time.perf_counter() - start)
    results: dict[str, Any] = {}
    for variant, init_from in checkpoints.items():
        by_lr: dict[str, Any] = {}
        for lr, scale in grid:
            key = grid_key(lr, scale)
            seeds_file = output / "finetune" / variant / f"lr_{key}" / SEEDS_FILE
            record = json.loads(seeds_file.read_text())
            val = [best_validation_rmse(run["ckpt_path"]) for run in record["runs"]]
            test = record["summary"]["test/rmse"]
            by_lr[key] = {
                "val_rmse": val,
                "val_rmse_mean": sum(val) / len(val),
                "test": test,
                "seeds": [run["seed"] for run in record["runs"]],
            }
        chosen = min(by_lr, key=lambda key: by_lr[key]["val_rmse_mean"])
        results[variant] = {
            "init_from": str(init_from) if init_from else None,
            "by_lr": by_lr,
            "chosen_lr": chosen,
        }
    return results


def stage_embed(
    output: Path, checkpoints: dict[str, Path], args: argparse.Namespace
) -> dict[str, Any]:
    """t-SNE + Davies-Bouldin on FreeSolv for each pre-trained encoder and a random-init one.

    The random-init encoder takes the architecture of the first pre-trained checkpoint.
    """
    if not checkpoints:
        return {}
    runs = [(name, ckpt, []) for name, ckpt in checkpoints.items()]
    runs.append(("random_init", next(iter(checkpoints.values())), ["--random-init"]))
    results: dict[str, Any] = {}
    for name, ckpt, extra in runs:
        folder = output / "embed" / name
        if not (folder / "metrics.json").is_file():
            start = time.perf_counter()
            command = [*MOLSSL, "embed", "--ckpt", str(ckpt), "--input", str(args.freesolv)]
            command += ["--output", str(folder), "--smiles-column", "smiles"]
            command += ["--label-column", "expt", "--threads", "1", *extra]
            folder.mkdir(parents=True, exist_ok=True)
            run_logged(command, output / "embed" / f"{name}.log")
            record_time(output, f"embed/{name}", time.perf_counter() - start)
        results[name] = json.loads((folder / "metrics.json").read_text())
    return results


def build_parser() -> argparse.ArgumentParser:
    """The script's command line (also read by the tests, so their settings are the script's)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=REPO / "runs" / "transfer")
    parser.add_argument("--freesolv", type=Path, default=FREESOLV)
    parser.add_argument(
        "--pretrain",
        nargs="*",
        default=["unicorn", "frad", "unicorn_no_denoise"],
        choices=PRETRAIN_CONFIGS,
    )
    parser.add_argument("--pretrain-minutes", type=int, default=15)
    parser.add_argument("--pretrain-lr", type=float, default=1e-3)
    parser.add_argument("--pretrain-warmup", type=int, default=50)
    parser.add_argument("--pretrain-horizon", type=int, default=1000, help="cosine and max steps")
    parser.add_argument("--pretrain-batch", type=int, default=32)
    parser.add_argument("--pretrain-val-every", type=int, default=100, help="steps")
    parser.add_argument(
        "--pretrain-val-fraction",
        type=float,
        default=0.05,
        help="held-out shards: ceil(fraction x shards) (0.04 of 21 shards holds out one)",
    )
    parser.add_argument("--prepare-workers", type=int, default=2)
    parser.add_argument("--pool-source", choices=["small", "moses"], default="small")
    parser.add_argument("--moses-size", type=int, default=105_000, help="with --pool-source moses")
    parser.add_argument("--shard-size", type=int, default=400, help="prepared shards (by entries)")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--rbf", type=int, default=32, help="0 keeps the config's")
    parser.add_argument("--hidden-2d", type=int, default=None, help="Graphormer; default --hidden")
    parser.add_argument("--layers-2d", type=int, default=None, help="default --layers")
    parser.add_argument("--heads-2d", type=int, default=None, help="default --heads")
    parser.add_argument("--accelerator", default="cpu", help="cpu or gpu (Lightning's names)")
    parser.add_argument("--precision", default="32-true", help="e.g. bf16-mixed on a GPU")
    parser.add_argument("--pretrain-workers", type=int, default=1, help="loader processes")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lrs", type=float, nargs="+", default=[5e-4, 1e-3, 2e-3, 4e-3, 8e-3])
    parser.add_argument(
        "--encoder-lr-scales",
        type=float,
        nargs="+",
        default=[1.0],
        help="encoder learning rate as a fraction of the head's (searched for every variant)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--results", default="results.json", help="report file, in --output")
    parser.add_argument("--results-json", type=Path, default=None, help="the chosen runs' rows")
    parser.add_argument("--jobs", type=int, default=1, help="fine-tuning runs at once")
    parser.add_argument(
        "--stages",
        nargs="+",
        default=["pool", "prepare", "pretrain", "finetune", "embed", "probe", "report"],
        help="run only these stages (finetune runs scratch plus every pre-trained variant)",
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    output = open_output(args.output)
    if "pool" in args.stages:
        stage_pool(output, args)
    if "prepare" in args.stages:
        stage_prepare(output, args.prepare_workers, args.shard_size)
    checkpoints: dict[str, Path | None] = {"scratch": None}
    for variant in args.pretrain:
        if "pretrain" in args.stages:
            checkpoints[variant] = stage_pretrain(output, variant, args)
        elif (ckpt := last_checkpoint(output / "pretrain" / variant)) is not None:
            checkpoints[variant] = ckpt
    finetune: dict[str, Any] = {}
    if "finetune" in args.stages:
        finetune = stage_finetune(output, checkpoints, args)
    elif "report" in args.stages:
        done = {v: c for v, c in checkpoints.items() if (output / "finetune" / v).is_dir()}
        finetune = stage_finetune(output, done, args) if done else {}
    if "embed" in args.stages:
        pretrained = {v: c for v, c in checkpoints.items() if c is not None}
        embed = stage_embed(output, pretrained, args)
        print(json.dumps({k: v["davies_bouldin"] for k, v in embed.items()}, indent=2))
    probe = stage_probe(output, args) if "probe" in args.stages else {}
    if "report" in args.stages and finetune:
        baseline = mean_predictor_rmse(freesolv_datamodule(args))
        report(output / args.results, finetune, baseline, probe)
        if args.results_json is not None:
            rows = result_rows(finetune, {})
            args.results_json.parent.mkdir(parents=True, exist_ok=True)
            args.results_json.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()

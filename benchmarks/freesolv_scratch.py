"""FreeSolv from scratch: test RMSE over 3 seeds with a small ET, on CPU in a few minutes.

The real data (``../shared/data/freesolv.csv``: 642 molecules, SMILES column ``smiles``,
hydration free energy ``expt`` in kcal/mol) go through exactly what users run:
``molssl seeds --config configs/finetune/freesolv.yaml`` with the deterministic scaffold split
8:1:1, RDKit conformers, the MLP head on mean-pooled atom features and model selection on the
validation RMSE, only with a smaller encoder and fewer epochs so that the three seeds fit a
CPU budget. Printed, with the wall time of each part:

* the test RMSE (and MAE) per seed and as mean ± std (population std, n=3);
* the baseline of the same run: predicting the training mean for every test molecule, and
  the ratio model / baseline (below 1: the model learned something);
* the paper's numbers for context (UniCorn pre-trained: 1.555 ± 0.075 RMSE, Table 4; the
  paper has no FreeSolv train-from-scratch row, and uses the full-size ET).

    OMP_NUM_THREADS=1 python benchmarks/freesolv_scratch.py --epochs 30
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

from machine_info import load_average
from molssl.commands.seeds import format_summary, run_seeds
from molssl.datamodules.moleculenet import MoleculeNetDataModule

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "finetune" / "freesolv.yaml"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "freesolv.csv"
PAPER_UNICORN_RMSE = (1.555, 0.075)


def small_encoder_overrides(hidden: int, layers: int, heads: int, rbf: int) -> list[str]:
    """Command-line overrides shrinking the config's paper-size ET."""
    prefix = "--model.init_args.encoder.init_args"
    return [
        f"{prefix}.hidden_channels={hidden}",
        f"{prefix}.num_layers={layers}",
        f"{prefix}.num_heads={heads}",
        f"{prefix}.num_rbf={rbf}",
    ]


def mean_predictor_rmse(data: MoleculeNetDataModule) -> float:
    """Test RMSE of predicting the training split's mean label (the same split as the runs)."""
    data.setup("fit")
    train_mean = float(data.target_statistics()["mean"][0])
    targets = torch.cat([batch.y.reshape(-1) for batch in data.test_dataloader()])
    targets = targets[~torch.isnan(targets)]
    return math.sqrt(float(((targets - train_mean) ** 2).mean()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="FreeSolv CSV.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--rbf", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads.")
    parser.add_argument("--cache-dir", default=None, help="Conformer cache (default molssl's).")
    parser.add_argument("--output", type=Path, default=None, help="Runs (default: a temp dir).")
    args = parser.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"FreeSolv file not found: {args.data} (pass --data)")
    torch.set_num_threads(args.threads)
    print(f"load average before: {load_average()}; torch threads {torch.get_num_threads()}")

    data_args = {
        "path": str(args.data),
        "preset": "freesolv",
        "split": "scaffold",
        "batch_size": args.batch_size,
        "num_workers": 0,
        "progress": False,
        "prepare_workers": 1,
        **({"cache_dir": args.cache_dir} if args.cache_dir else {}),
    }
    start = time.perf_counter()
    baseline = mean_predictor_rmse(MoleculeNetDataModule(**data_args))
    prepare_s = time.perf_counter() - start
    print(f"data + conformers (cached after the first run): {prepare_s:.1f} s")

    overrides = [
        *small_encoder_overrides(args.hidden, args.layers, args.heads, args.rbf),
        *(f"--data.init_args.{key}={value}" for key, value in data_args.items()),
        f"--trainer.max_epochs={args.epochs}",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--model.init_args.lr={args.lr}",
    ]
    with tempfile.TemporaryDirectory() as scratch:
        output = args.output or Path(scratch) / "seeds"
        start = time.perf_counter()
        record = run_seeds(CONFIG, args.seeds, output, overrides)
        train_s = time.perf_counter() - start

    print()
    print(
        f"FreeSolv from scratch: ET {args.hidden} ch / {args.layers} layers / {args.heads} heads, "
        f"{args.epochs} epochs, batch {args.batch_size}, lr {args.lr}, scaffold split"
    )
    for run in record["runs"]:
        metrics = run["metrics"]
        print(
            f"  seed {run['seed']}: test RMSE {metrics['test/rmse']:.3f}, "
            f"MAE {metrics['test/mae']:.3f} kcal/mol"
        )
    summary = {k: v for k, v in record["summary"].items() if k in ("test/rmse", "test/mae")}
    print(format_summary(summary))
    rmse = record["summary"]["test/rmse"]["mean"]
    print(f"baseline (train mean for every test molecule): RMSE {baseline:.3f} kcal/mol")
    print(f"ratio model / baseline RMSE: {rmse / baseline:.2f}")
    paper_mean, paper_std = PAPER_UNICORN_RMSE
    print(f"paper, UniCorn pre-trained (full-size ET): {paper_mean} ± {paper_std}")
    seeds = len(record["runs"])
    print(
        f"wall time: {prepare_s + train_s:.0f} s ({prepare_s:.0f} s data, {train_s:.0f} s for "
        f"{seeds} seeds of fit + test, {train_s / seeds:.0f} s per seed); "
        f"load average after: {load_average()}"
    )


if __name__ == "__main__":
    main()

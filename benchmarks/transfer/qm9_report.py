"""Selection and report of the QM9 label-efficiency grid (:mod:`qm9_label_efficiency`).

Every fine-tuning run lives in ``<finetune>/<arm>/<point>/part_<seed>/``: ``seeds.json`` when it
finished, ``failed.json`` when it stopped with an error (a learning rate that diverged). A failed
run is a result, not a gap: it loses the selection at its grid point (validation MAE infinite),
and at a chosen point it is counted and written as failed instead of being dropped, so a point
that diverges on one seed out of three cannot pass for a stable one.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from common import best_validation_rmse, checkpoint_head_init

from molssl.commands.seeds import SEEDS_FILE

__all__ = ["FAILED_FILE", "choose", "collect", "finetune_dir", "grid_key", "report"]

FAILED_FILE = "failed.json"


def finetune_dir(output: Path, args: argparse.Namespace) -> Path:
    """Where the fine-tuning runs go: ``finetune`` or, for a ``--tag``-ged variant,
    ``finetune_<tag>`` (same pre-trained weights, other fine-tuning settings)."""
    return output / ("finetune" if not args.tag else f"finetune_{args.tag}")


def grid_key(lr: float, scale: float) -> str:
    """Folder name of one grid point."""
    return f"lr_{lr:g}" if scale == 1.0 else f"lr_{lr:g}_enc{scale:g}"


def choose(points: dict[str, Any], search_seeds: list[int]) -> str:
    """The grid point with the lowest mean validation MAE over the search seeds."""

    def score(key: str) -> float:
        values = [r["val_mae_mev"] for r in points[key]["runs"] if r["seed"] in search_seeds]
        if len(values) != len(search_seeds):
            return float("inf")
        return sum(values) / len(values)

    best = min(points, key=score)
    if score(best) == float("inf"):
        raise SystemExit(f"no grid point has all search seeds {search_seeds} finished")
    return best


def collect(output: Path, arms: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Every finished or failed run's validation and test MAE, by arm and grid point."""
    results: dict[str, Any] = {}
    for arm in arms:
        points: dict[str, Any] = {}
        for lr in args.lrs:
            for scale in args.encoder_lr_scales:
                key = grid_key(lr, scale)
                runs = []
                for seed in sorted(set(args.seeds) | set(args.search_seeds)):
                    part = finetune_dir(output, args) / arm / key / f"part_{seed}"
                    if (part / FAILED_FILE).is_file():
                        error = json.loads((part / FAILED_FILE).read_text())["error"]
                        runs.append({"seed": seed, "val_mae_mev": math.inf, "failed": error})
                        continue
                    if not (part / SEEDS_FILE).is_file():
                        continue
                    (run,) = json.loads((part / SEEDS_FILE).read_text())["runs"]
                    test = {t: run["metrics"][f"test/mae/{t}"] for t in args.targets}
                    val = best_validation_rmse(run["ckpt_path"])
                    head_init = checkpoint_head_init(run["ckpt_path"])
                    runs.append(
                        {"seed": seed, "val_mae_mev": val, "test_mae_mev": test,
                         "head_init": head_init}
                    )  # fmt: skip
                if runs:
                    points[key] = {"lr": lr, "encoder_lr_scale": scale, "runs": runs}
        results[arm] = points
    return results


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and population standard deviation (NaN for no values)."""
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    return mean, (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5


def _finished(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if "failed" not in r]


def _print_grid(results: dict[str, Any], args: argparse.Namespace) -> None:
    print("\nEvery grid point, search seeds " + str(args.search_seeds) + ": val MAE | test MAE")
    for arm, points in results.items():
        for key, point in points.items():
            runs = [r for r in point["runs"] if r["seed"] in args.search_seeds]
            if any("failed" in r for r in runs):
                print(f"  {arm} {key}: failed ({runs[0].get('failed', '')[:80]})")
            elif runs:
                val = _mean_std([r["val_mae_mev"] for r in runs])[0]
                tests = [_mean_std([r["test_mae_mev"][t] for r in runs])[0] for t in args.targets]
                print(f"  {arm} {key}: {val:.1f} | " + " / ".join(f"{t:.1f}" for t in tests))


def _rows(arm: str, runs: list[dict[str, Any]], args: argparse.Namespace) -> list[dict]:
    """The runs in the schema of ``docs/results/qm9_label_efficiency.json``; a failed run
    has ``test_mae_mev`` null and its error under ``failed``.

    ``head`` is ``"shared"``: since ``26b8055`` ``FinetuneModule``'s equivariant head shares
    its gated blocks between the targets, the only form a config can build (the file's rows
    from before that commit say ``"per_task"``). ``head_init`` is the run's, as its checkpoint
    records it (``null`` for a failed run).
    """
    rows = []
    for run in runs:
        for target in args.targets:
            row = {"pretraining": arm, "target": target, "train_size": args.train_size}
            row |= {"head": "shared", "head_init": run.get("head_init")}
            row["seed"] = run["seed"]
            if "failed" in run:
                rows.append(row | {"test_mae_mev": None, "failed": run["failed"]})
            else:
                rows.append(row | {"test_mae_mev": round(run["test_mae_mev"][target], 3)})
    return rows


def report(output: Path, results: dict[str, Any], args: argparse.Namespace) -> list[dict]:
    """Chooses each arm's grid point on validation; prints the table; returns the JSON rows.

    Means and stds are over the chosen point's finished seeds; failed seeds are named in the
    table and kept in the rows.
    """
    chosen: dict[str, Any] = {}
    for arm, points in results.items():
        if points:
            key = choose(points, args.search_seeds)
            runs = [r for r in points[key]["runs"] if r["seed"] in args.seeds]
            chosen[arm] = {"point": key, **points[key], "runs": runs}
    _print_grid(results, args)
    print(f"\nQM9, {args.train_size} labels, test MAE (meV), mean ± std over seeds {args.seeds}")
    print("| arm | point chosen on val | val MAE | " + " | ".join(args.targets) + " | runs |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in args.targets) + " | --- |")
    scratch = _finished(chosen["scratch"]["runs"]) if "scratch" in chosen else None
    rows = []
    for arm, entry in chosen.items():
        done = _finished(entry["runs"])
        val = _mean_std([r["val_mae_mev"] for r in done])
        cells = []
        for target in args.targets:
            mean, std = _mean_std([r["test_mae_mev"][target] for r in done])
            cell = f"{mean:.1f} ± {std:.1f}"
            if scratch and arm != "scratch":
                base = _mean_std([r["test_mae_mev"][target] for r in scratch])[0]
                cell += f" ({100 * (mean - base) / base:+.1f}%)"
            cells.append(cell)
        failed = [r["seed"] for r in entry["runs"] if "failed" in r]
        count = f"{len(done)} finished" + (f", seed {failed} diverged" if failed else "")
        print(f"| {arm} | {entry['point']} | {val[0]:.1f} | " + " | ".join(cells) + f" | {count} |")
        rows += _rows(arm, entry["runs"], args)
    record = {"settings": vars(args) | {"output": str(output)}, "chosen": chosen, "all": results}
    (finetune_dir(output, args) / args.results).write_text(
        json.dumps(record, indent=2, default=str) + "\n"
    )
    return rows

"""``molssl seeds``: one fine-tuning config over several seeds, reported as mean ± std.

UniCorn's tables (like most of the literature) report fine-tuning results as the mean and
standard deviation over three seeds. For each seed this command runs, in-process,

1. ``molssl fit --config CONFIG [overrides] --seed_everything S --data.init_args.seed S`` (the
   model's initialisation, the batch order and, for seeded splits, the split), with the run
   under ``OUTPUT/seed_S``;
2. ``molssl test --ckpt BEST`` on the checkpoint the validation metric chose (``last.ckpt``
   when the config monitors nothing), from that checkpoint and its saved config alone;

then writes ``OUTPUT/seeds.json`` (every run's checkpoint, log dir and test metrics, and per
metric the mean, the population standard deviation (``ddof=0``, as ``numpy.std``) and the
values) and prints ``test/rmse: 1.555 ± 0.075 (n=3)`` for each test metric::

    molssl seeds --config configs/finetune/freesolv.yaml --seeds 0 1 2 \\
        --model.init_args.init_from runs/unicorn/version_0/checkpoints/last.ckpt

Options it does not know (``--model.*``, ``--trainer.*``, ...) go to every ``fit``. Runs are
sequential in one process: for several GPUs per run, launch ``molssl fit`` per seed instead.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from molssl.errors import UserError

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser, Namespace

__all__ = [
    "FitRun",
    "checkpoint_test_metrics",
    "fit_seeds",
    "run_seeds",
    "summarise_runs",
    "tested_runs",
]

SEEDS_FILE = "seeds.json"


def run_trainer_command(argv: list[str]) -> Any:
    """:func:`molssl.trainer_cli.run_trainer_command`, imported on the first call, so that
    ``molssl seeds --help`` and ``molssl search --help`` do not import Lightning."""
    from molssl.trainer_cli import run_trainer_command as run

    return run(argv)


def add_arguments(parser: ArgumentParser) -> None:
    """Options of ``molssl seeds``."""
    parser.add_argument("--config", "-c", required=True, help="Fine-tuning config (YAML).")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="Seeds to run (default 0 1 2)."
    )
    parser.add_argument(
        "--output",
        default=None,
        help="Folder of the runs and seeds.json (default runs/seeds/<config name>).",
    )


def summarise_runs(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean, population std (ddof=0) and values of every metric present in all runs.

    Args:
        runs: One dict per seed with a ``"metrics"`` mapping of name to value.

    Returns:
        ``{name: {"mean", "std", "n", "values"}}``, names sorted. A NaN value (e.g. a ROC-AUC
        with no scorable task) makes that metric's mean and std NaN.
    """
    if not runs:
        return {}
    names = sorted(set.intersection(*(set(run["metrics"]) for run in runs)))
    summary: dict[str, dict[str, Any]] = {}
    for name in names:
        values = [float(run["metrics"][name]) for run in runs]
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        summary[name] = {"mean": mean, "std": std, "n": len(values), "values": values}
    return summary


def format_summary(summary: dict[str, dict[str, Any]]) -> str:
    """Lines ``name: mean ± std (n=K)``, as the paper's tables report results."""
    return "\n".join(
        f"{name}: {entry['mean']:.4g} ± {entry['std']:.2g} (n={entry['n']})"
        for name, entry in summary.items()
    )


def _logger_save_dir_override(config_path: Path, root: Path) -> list[str]:
    """``--trainer.logger.init_args.save_dir`` for a config naming a logger with a save_dir."""
    config = yaml.safe_load(config_path.read_text()) or {}
    logger = (config.get("trainer") or {}).get("logger")
    if isinstance(logger, dict) and "save_dir" in (logger.get("init_args") or {}):
        return [f"--trainer.logger.init_args.save_dir={root}"]
    return []


def _chosen_checkpoint(trainer: Any, seed: int) -> str:
    callback = trainer.checkpoint_callback
    path = "" if callback is None else (callback.best_model_path or callback.last_model_path)
    if not path or not Path(path).is_file():
        raise RuntimeError(
            f"seed {seed}: the fit wrote no checkpoint to test (checkpointing off, or no "
            "validation ran); keep checkpoint.save_last or a checkpoint.monitor"
        )
    return str(Path(path).resolve())


@dataclass(frozen=True)
class FitRun:
    """One seed's fit: its chosen checkpoint and what validation chose it by. It holds no test
    metric: those come from :func:`checkpoint_test_metrics`, run separately on the checkpoint.

    Attributes:
        seed: The seed of the run.
        ckpt_path: The checkpoint the validation metric chose (``last.ckpt`` without one).
        log_dir: The run's log directory.
        monitor: The validation metric of the config's checkpoint callback, if any.
        mode: ``"min"`` or ``"max"`` for ``monitor``.
        val_score: ``monitor``'s value at the chosen checkpoint (``None`` without a monitor).
    """

    seed: int
    ckpt_path: str
    log_dir: str | None
    monitor: str | None
    mode: str | None
    val_score: float | None


def fit_seeds(
    config: str | Path, seeds: Sequence[int], out: Path, overrides: Sequence[str] = ()
) -> list[FitRun]:
    """``molssl fit`` of ``config`` once per seed under ``out/seed_S``; no test is run.

    Raises:
        FileNotFoundError: If the config does not exist.
        ValueError: On an empty or repeated seed list.
        RuntimeError: If a fit leaves no checkpoint.
    """
    config_path = Path(config)
    if not config_path.is_file():
        raise FileNotFoundError(f"config not found: {config_path}")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"give distinct seeds, got {list(seeds)}")
    runs: list[FitRun] = []
    for seed in seeds:
        root = out / f"seed_{seed}"
        fit = run_trainer_command(
            [
                "fit",
                "--config",
                str(config_path),
                *overrides,
                f"--seed_everything={seed}",
                f"--data.init_args.seed={seed}",
                f"--trainer.default_root_dir={root}",
                *_logger_save_dir_override(config_path, root),
            ]
        )
        callback = fit.trainer.checkpoint_callback
        monitor = getattr(callback, "monitor", None)
        score = getattr(callback, "best_model_score", None)
        runs.append(
            FitRun(
                seed=seed,
                ckpt_path=_chosen_checkpoint(fit.trainer, seed),
                log_dir=fit.trainer.log_dir,
                monitor=monitor,
                mode=getattr(callback, "mode", None) if monitor else None,
                val_score=None if score is None or monitor is None else float(score),
            )
        )
    return runs


def checkpoint_test_metrics(ckpt_path: str) -> dict[str, float]:
    """``molssl test --ckpt`` on one checkpoint (from it and its saved config alone)."""
    test = run_trainer_command(["test", "--ckpt", ckpt_path])
    return {
        name: float(value)
        for name, value in test.trainer.callback_metrics.items()
        if name.startswith("test/")
    }


def tested_runs(runs: Sequence[FitRun]) -> list[dict[str, Any]]:
    """Each fit as a ``seeds.json`` entry, with the test metrics of its chosen checkpoint."""
    return [
        {
            "seed": run.seed,
            "ckpt_path": run.ckpt_path,
            "log_dir": run.log_dir,
            "validation": {run.monitor: run.val_score} if run.monitor else {},
            "metrics": checkpoint_test_metrics(run.ckpt_path),
        }
        for run in runs
    ]


def run_seeds(
    config: str | Path,
    seeds: Sequence[int],
    output: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Fits and tests ``config`` once per seed; writes and returns the ``seeds.json`` record.

    Raises:
        FileNotFoundError: If the config does not exist.
        ValueError: On an empty or repeated seed list.
        RuntimeError: If a fit leaves no checkpoint to test.
    """
    config_path = Path(config)
    out = (
        Path(output) if output is not None else Path("runs") / "seeds" / config_path.stem
    ).resolve()
    runs = tested_runs(fit_seeds(config_path, seeds, out, overrides))
    record = {
        "config": str(config_path),
        "output": str(out),
        "overrides": list(overrides),
        "seeds": list(seeds),
        "std_ddof": 0,
        "runs": runs,
        "summary": summarise_runs(runs),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / SEEDS_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def run(namespace: Namespace) -> None:
    """Runs ``molssl seeds`` and prints the summary."""
    try:
        record = run_seeds(
            namespace.config, namespace.seeds, namespace.output, namespace.overrides or []
        )
    except UserError:
        raise  # molssl.cli.main prints it in one line, exit status 2
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise SystemExit(f"molssl seeds: error: {exc}") from exc
    print(f"molssl seeds: {record['config']} over seeds {record['seeds']}")
    print(format_summary(record["summary"]))
    print(f"written to {Path(record['output']) / SEEDS_FILE}")

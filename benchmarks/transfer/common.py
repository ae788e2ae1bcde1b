"""What the transfer experiments share: configs, the molssl command, overrides, bookkeeping."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCHMARKS))

from machine_info import load_average  # noqa: E402

__all__ = [
    "MOLSSL",
    "PRETRAIN_CONFIGS",
    "REPO",
    "best_validation_rmse",
    "encoder_overrides",
    "last_checkpoint",
    "record_time",
    "run_logged",
    "trainer_overrides",
]

REPO = BENCHMARKS.parent
MOLSSL = [sys.executable, "-c", "from molssl.cli import main; main()"]
PRETRAIN_CONFIGS = {
    "unicorn": REPO / "configs" / "unicorn.yaml",
    "unicorn_no_denoise": REPO / "configs" / "ablations" / "unicorn_no_denoise.yaml",
    "unicorn_no_mask_contrast": REPO / "configs" / "ablations" / "unicorn_no_mask_contrast.yaml",
    "frad": REPO / "configs" / "frad.yaml",
    "coord": REPO / "configs" / "coord.yaml",
}


def encoder_overrides(key: str, hidden: int, layers: int, heads: int, rbf: int | None) -> list[str]:
    """Overrides setting the size of the encoder at ``model.init_args.<key>``.

    ``rbf`` ``None`` or 0 keeps the config's number of radial basis functions.
    """
    prefix = f"--model.init_args.{key}.init_args"
    sizes = [f"{prefix}.hidden_channels={hidden}", f"{prefix}.num_layers={layers}"]
    sizes.append(f"{prefix}.num_heads={heads}")
    return sizes + ([f"{prefix}.num_rbf={rbf}"] if rbf else [])


def trainer_overrides(args: argparse.Namespace) -> list[str]:
    """Device, precision and quiet output, the same for pre-training and fine-tuning."""
    return [
        f"--trainer.accelerator={args.accelerator}",
        "--trainer.devices=1",
        f"--trainer.precision={args.precision}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]


def last_checkpoint(folder: Path) -> Path | None:
    """Newest ``last.ckpt`` of the logger version folders in ``folder``."""
    found = folder.glob("version_*/checkpoints/last.ckpt")
    return max(found, key=lambda path: path.stat().st_mtime, default=None)


def checkpoint_head_init(ckpt: str) -> str:
    """The fine-tuning run's ``head_init`` as its checkpoint records it; ``"xavier"`` for runs
    from before the option existed, whose head started at TorchMD-NET's Xavier scale."""
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    return str(state.get("hyper_parameters", {}).get("head_init", "xavier"))


def best_validation_rmse(ckpt: str) -> float:
    """Best monitored validation RMSE stored by the ModelCheckpoint callback in ``ckpt``."""
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    scores = [
        float(value["best_model_score"])
        for key, value in state.get("callbacks", {}).items()
        # Any ModelCheckpoint subclass (molssl's LastStateCheckpoint) keys its state by name.
        if "Checkpoint" in key and value.get("best_model_score") is not None
    ]
    if not scores:
        raise RuntimeError(f"{ckpt}: no validation score stored by ModelCheckpoint")
    return min(scores)


def open_output(output: Path) -> Path:
    """An experiment's start: one torch thread, the output folder (made, absolute), and the
    machine's load average printed, as both experiment scripts begin."""
    torch.set_num_threads(1)
    output = output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {load_average()}")
    return output


def record_time(output: Path, name: str, seconds: float) -> None:
    """Adds ``name: seconds`` (and the load average) to ``timings.json``."""
    path = output / "timings.json"
    timings = json.loads(path.read_text()) if path.is_file() else {}
    timings[name] = {"wall_s": round(seconds, 1), "load_average_after": load_average()}
    path.write_text(json.dumps(timings, indent=2) + "\n")


def run_logged(command: list[str], log: Path) -> None:
    """Runs ``command`` with stdout and stderr in ``log``; a failure names the log."""
    with log.open("w") as handle:
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        raise SystemExit(f"failed (exit {result.returncode}): see {log}")

"""Small real data and tiny encoders shared by the pre-training module and config tests.

Every test that pre-trains uses the same embedded-default settings, so one cache entry (RDKit's
first NCI molecules, one seeded conformer each) is prepared once per test session and worker.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer
from torch_geometric.data import Batch

from molssl.datamodules import PretrainDataModule
from molssl.encoders import EquivariantTransformer, Graphormer
from molssl.encoders.base import EncoderOutput
from molssl.modules import PretrainModule

#: Molecules of the embedded default used by the tests (the first lines of the NCI file).
NUM_MOLECULES = 24
#: Tiny sizes per encoder class, applied to any config by overriding ``init_args``.
TINY_ENCODER_ARGS: dict[str, dict[str, Any]] = {
    "molssl.encoders.EquivariantTransformer": {
        "hidden_channels": 16,
        "num_layers": 1,
        "num_heads": 2,
        "num_rbf": 8,
    },
    "molssl.encoders.Graphormer": {"hidden_channels": 16, "num_layers": 1, "num_heads": 2},
    "molssl.encoders.MoleBlendTransformer": {
        "hidden_channels": 16,
        "ffn_channels": 16,
        "num_layers": 1,
        "num_heads": 2,
        "num_gaussians": 8,
    },
}


def small_data_args(cache_dir: Path) -> dict[str, Any]:
    """``PretrainDataModule`` arguments of the tests' small embedded default."""
    return {
        "num_molecules": NUM_MOLECULES,
        "num_conformers": 1,
        "batch_size": 4,
        "num_workers": 0,
        "val_fraction": 0.25,
        "seed": 0,
        "cache_dir": str(cache_dir),
        "prepare_workers": 1,
    }


def prepare_small_cache(cache_dir: Path) -> Path:
    """Prepares (or finds) the small embedded default under ``cache_dir``."""
    PretrainDataModule(**small_data_args(cache_dir)).prepare_data()
    return cache_dir


def small_datamodule(cache_dir: Path, **overrides: Any) -> PretrainDataModule:
    """A datamodule on the small embedded default, with overrides."""
    return PretrainDataModule(**{**small_data_args(cache_dir), **overrides})


def quiet_trainer(root: Path, **overrides: Any) -> Trainer:
    """A CPU trainer under ``root`` with no logger, checkpoints, progress bar or summary.

    ``overrides`` are further ``Trainer`` arguments and win over these settings.
    """
    settings: dict[str, Any] = {
        "accelerator": "cpu",
        "default_root_dir": str(root),
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "logger": False,
    }
    return Trainer(**{**settings, **overrides})


def tiny_et(**overrides: Any) -> EquivariantTransformer:
    """An equivariant transformer of the tests' tiny size (``overrides`` change its settings)."""
    return EquivariantTransformer(
        **{**TINY_ENCODER_ARGS["molssl.encoders.EquivariantTransformer"], **overrides}
    )


def tiny_graphormer() -> Graphormer:
    """A Graphormer of the tests' tiny size."""
    return Graphormer(**TINY_ENCODER_ARGS["molssl.encoders.Graphormer"])


class CountingEncoder(torch.nn.Module):
    """Wraps an encoder and counts its forward calls."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.out_dim = inner.out_dim
        self.calls = 0

    def forward(self, batch: Batch) -> EncoderOutput:
        self.calls += 1
        return self.inner(batch)


def weighted_epoch_metrics(
    module: PretrainModule, batches: Iterable[Batch], stage: str = "val"
) -> dict[str, float]:
    """Epoch averages written out by hand: each value weighted by its objective's batch size.

    The reference for what Lightning logs from ``validation_step``/``test_step``: ``<stage>/loss``
    averaged over molecules, every objective's loss and metrics over its own ``batch_size``.
    """
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    module.eval()
    with torch.no_grad():
        for batch in batches:
            total, results = module.objective_results(batch)
            entries = [(f"{stage}/loss", total, batch.num_graphs)]
            for name, result in results.items():
                size = result.batch_size or batch.num_graphs
                entries.append((f"{stage}/{name}/loss", result.loss, size))
                entries += [(f"{stage}/{name}/{k}", v, size) for k, v in result.metrics.items()]
            for key, value, weight in entries:
                sums[key] = sums.get(key, 0.0) + float(value) * weight
                counts[key] = counts.get(key, 0.0) + weight
    return {key: sums[key] / counts[key] for key in sums}

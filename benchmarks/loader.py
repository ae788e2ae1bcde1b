"""Pre-training data throughput: first-use preparation and the per-sample view pipeline.

Two figures, each against a baseline measured in the same run:

* preparation (parse, hydrogens, ETKDGv3 + MMFF94, BRICS, torsions) of the first ``--n``
  NCI molecules into a fresh cache, molecules/s with 1 and with ``--workers`` processes
  (the ratio is the parallel speed-up, pool start-up included);
* the data pipeline: samples/s of the dataset with UniCorn's views (torsion augmentation,
  coordinate noise, fragment mask) against bare ``record.to_data`` (the views' cost), then
  batches through PyG's loader with 0 and ``--workers`` worker processes (samples/s per
  worker).

    python benchmarks/loader.py --n 200 --workers 2 --batch-size 32
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch

from molssl.chem.conformers import ConformerOptions
from molssl.datamodules.embedded import embedded_default
from molssl.datamodules.pretrain import PretrainDataModule, PretrainDataset
from molssl.objectives.base import View
from molssl.objectives.denoise import CoordDenoise
from molssl.objectives.fragment_mask import FragmentMask
from molssl.objectives.views import TorsionAugment


def unicorn_views() -> list[View]:
    """UniCorn's pipeline: torsion augmentation, coordinate noise, fragment mask."""
    return [TorsionAugment(2.0, "deg"), *CoordDenoise(sigma=0.04).views(), *FragmentMask().views()]


def preparation_rate(n: int, workers: int) -> tuple[float, int]:
    """Molecules read per second when preparing ``n`` molecules into an empty cache."""
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        prepared = embedded_default(
            n, ConformerOptions(), cache_dir=cache, workers=workers, progress=False
        )
        seconds = time.perf_counter() - start
    return n / seconds, prepared.manifest["failed"]


def rate(fn: Callable[[], int], min_seconds: float) -> float:
    """Items per second of ``fn`` (which returns how many it processed), run for a while."""
    fn()  # warm-up: first-touch allocations, lazy imports
    items, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        items += fn()
    return items / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="molecules to prepare")
    parser.add_argument("--workers", type=int, default=2, help="parallel workers to compare")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0, help="time per loader figure")
    parser.add_argument("--epoch-samples", type=int, default=4000, help="loader epoch length")
    args = parser.parse_args()
    torch.set_num_threads(1)

    serial, failed = preparation_rate(args.n, 1)
    parallel, _ = preparation_rate(args.n, args.workers)
    print(f"preparation of {args.n} NCI molecules ({failed} failed), fresh cache:")
    print(f"  1 worker : {serial:8.1f} mol/s")
    print(
        f"  {args.workers} workers: {parallel:8.1f} mol/s  (x{parallel / serial:.2f}, "
        "pool start-up included)"
    )

    with tempfile.TemporaryDirectory() as cache:
        dm = PretrainDataModule(
            num_molecules=args.n, batch_size=args.batch_size, cache_dir=cache, val_fraction=0.0
        )
        dm.setup()
        assert dm.records is not None and dm.train_dataset is not None
        indices = dm.train_dataset.indices
        bare = PretrainDataset(dm.records, indices)
        viewed = PretrainDataset(dm.records, indices, unicorn_views())

        def walk(dataset: PretrainDataset) -> Callable[[], int]:
            return lambda: sum(1 for _ in (dataset[i] for i in range(len(dataset))))

        bare_rate = rate(walk(bare), args.seconds)
        view_rate = rate(walk(viewed), args.seconds)
        print(f"per-sample pipeline, one process ({len(indices)} molecules):")
        print(f"  to_data only       : {bare_rate:8.0f} samples/s")
        print(
            f"  + UniCorn views    : {view_rate:8.0f} samples/s  "
            f"(views cost x{bare_rate / view_rate:.2f} of to_data)"
        )

        dm.set_views(unicorn_views())
        # Long epochs, so that worker start-up and epoch boundaries do not dominate.
        repeats = max(1, -(-args.epoch_samples // len(indices)))
        dm.train_dataset.indices = np.tile(indices, repeats)
        print(
            f"loader with collation, batch {args.batch_size}, UniCorn views, "
            f"{len(dm.train_dataset)} samples per epoch:"
        )
        base = None
        for workers in (0, args.workers):
            dm.hparams.num_workers = workers
            loader = dm.train_dataloader()

            def epoch(loader: object = loader) -> int:
                return sum(batch.num_graphs for batch in loader)

            samples = rate(epoch, args.seconds)
            per_worker = samples / max(workers, 1)
            base = base or samples
            print(
                f"  num_workers={workers}: {samples:8.0f} samples/s, "
                f"{per_worker:8.0f} per worker  (x{samples / base:.2f} vs num_workers=0)"
            )


if __name__ == "__main__":
    main()

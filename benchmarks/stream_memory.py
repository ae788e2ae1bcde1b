"""Memory while streaming: peak RSS after 10k samples and at the end of ≥ 200k must be flat.

Writes ``--records`` synthetic-but-valid records (replicas of real prepared NCI molecules with
new mol_ids and jittered coordinates, :mod:`synthetic_shards`) as ``molssl prepare`` shards,
then streams all of them once through ``PretrainDataModule(root=...).train_dataloader()``
with ``--workers`` loader processes, and prints the peak resident set size of the main
process and of each worker (psutil; without it, the main process's ``ru_maxrss``) when
``--report-at`` samples have been seen, when the shuffle buffers are full (each worker's
grows to ``--shuffle-buffer`` records, one every second record read) and at the end. Every
mol_id is checked to come exactly once. The baselines are the same run's figures: growth
from 10k to the end includes the buffers filling; growth after they are full is what
streaming itself adds, and must be about zero.

    OMP_NUM_THREADS=1 python benchmarks/stream_memory.py --records 200000 --workers 2
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from molssl.datamodules.pretrain import PretrainDataModule
from synthetic_shards import nci_records, write_replicated_dataset

MIB = 1024 * 1024

try:
    import psutil
except ImportError:  # psutil is optional: fall back to the main process's own peak
    psutil = None


class PeakMemory:
    """Peak RSS (MiB) per process of this process tree, sampled on :meth:`sample`."""

    def __init__(self) -> None:
        self.peaks: dict[str, float] = {}
        self.process = psutil.Process() if psutil is not None else None

    def sample(self) -> None:
        if self.process is None:
            # ru_maxrss is already a peak, in KiB on Linux.
            self.peaks["main"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            return
        processes = [("main", self.process)]
        processes += [(f"worker {c.pid}", c) for c in self.process.children(recursive=True)]
        for name, process in processes:
            try:
                rss = process.memory_info().rss / MIB
            except psutil.NoSuchProcess:
                continue
            self.peaks[name] = max(self.peaks.get(name, 0.0), rss)

    def snapshot(self) -> dict[str, float]:
        return dict(self.peaks)


def describe(peaks: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.0f}" for name, value in peaks.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--molecules", type=int, default=250, help="real NCI molecules")
    parser.add_argument("--shard-size", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--shuffle-buffer", type=int, default=10_000)
    parser.add_argument("--report-at", type=int, default=10_000, help="baseline sample count")
    parser.add_argument("--print-every", type=int, default=50_000, help="progress lines")
    parser.add_argument("--sample-every", type=int, default=20, help="batches between samples")
    parser.add_argument("--cache-dir", default=None, help="embedded-default cache root")
    parser.add_argument("--output", default=None, help="keep the shards here (else a temp dir)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    base = nci_records(args.molecules, args.cache_dir)
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(args.output or temporary)
        manifest = write_replicated_dataset(base, root, args.records, args.shard_size)
        total = manifest["ok"]
        size = sum(path.stat().st_size for path in root.glob("*.tar")) / MIB
        print(
            f"wrote {total} records in {len(manifest['shards'])} shards ({size:.0f} MiB) in "
            f"{manifest['seconds']:.1f} s ({total / manifest['seconds']:.0f} records/s)"
        )
        dm = PretrainDataModule(
            root=str(root),
            batch_size=args.batch_size,
            num_workers=args.workers,
            val_fraction=0.0,
            shuffle_buffer=args.shuffle_buffer,
        )
        dm.setup("fit")
        memory = PeakMemory()
        memory.sample()
        print(f"before streaming, RSS MiB: {describe(memory.snapshot())}")
        seen = np.zeros(total, dtype=np.int64)
        # Each worker's shuffle buffer grows by one record every second record it reads.
        filled_at = 2 * args.shuffle_buffer * max(args.workers, 1)
        samples, baseline, full, start = 0, None, None, time.perf_counter()
        next_print = args.print_every
        for index, batch in enumerate(dm.train_dataloader()):
            np.add.at(seen, batch.mol_id.numpy(), 1)
            samples += batch.num_graphs
            if samples >= next_print:
                memory.sample()
                print(f"  ... {samples} samples, peak RSS MiB: {describe(memory.snapshot())}")
                next_print += args.print_every
            if index % args.sample_every == 0:
                memory.sample()
            if baseline is None and samples >= args.report_at:
                memory.sample()
                baseline = memory.snapshot()
                print(f"peak RSS MiB after {samples} samples: {describe(baseline)}")
            if full is None and samples >= filled_at:
                memory.sample()
                full = memory.snapshot()
                print(f"peak RSS MiB after {samples} samples (buffers full): {describe(full)}")
        memory.sample()
        seconds = time.perf_counter() - start
        final = memory.snapshot()
        print(f"peak RSS MiB after {samples} samples: {describe(final)}")
        print(f"streamed {samples} samples in {seconds:.1f} s ({samples / seconds:.0f} samples/s)")
        if baseline is None:
            sys.exit(f"fewer than --report-at={args.report_at} samples: no baseline")
        for label, reference in ((f"{args.report_at} samples", baseline), ("buffers full", full)):
            if reference is None:
                continue
            print(f"growth from {label} to the end:")
            for name, value in reference.items():
                if name in final:
                    growth = final[name] - value
                    print(f"  {name:<14} {value:7.0f} -> {final[name]:7.0f} MiB ({growth:+.0f})")
        once = bool(np.all(seen == 1))
        print(f"every one of the {total} mol_ids exactly once: {once}")
        if not once:
            sys.exit(1)


if __name__ == "__main__":
    main()

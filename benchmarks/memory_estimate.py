"""``MemoryCheck``'s estimate of a training step's memory, against the peak it really takes.

For a config and batch sizes, builds the module, estimates one step on a batch of the embedded
default (:func:`molssl.callbacks.memory.estimate_step_memory`), then runs that step (forward,
backward, AdamW) and reads how much the process's peak resident memory grew. Each batch size
runs in a fresh process, so that an earlier peak does not hide a later one. Paper-size configs
only estimate (``--estimate-only``): their step does not fit a small CPU machine.

    python benchmarks/memory_estimate.py --config configs/cpu/unicorn.yaml --batch 32 64 128
    python benchmarks/memory_estimate.py --config configs/unicorn.yaml --batch 256 --estimate-only
"""

from __future__ import annotations

import argparse
import gc
import resource
import subprocess
import sys

GB = 2**30


def one(config_path: str, batch_size: int, estimate_only: bool) -> None:
    """Estimate (and measure) one batch size in this process; prints one row."""
    import torch
    import yaml
    from lightning.pytorch import LightningModule

    from molssl.callbacks.memory import estimate_step_memory
    from molssl.checkpoints import instantiate_spec
    from molssl.datamodules import PretrainDataModule

    with open(config_path) as handle:
        config = yaml.safe_load(handle)
    module = instantiate_spec(config["model"], LightningModule, "model").train()
    loaded = min(batch_size, 128)
    data = PretrainDataModule(num_molecules=300, batch_size=loaded, val_fraction=0.1)
    data.set_views(module.pipeline_views())
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    estimate = estimate_step_memory(module, batch, batch_size=batch_size)
    row = f"batch {batch_size:4d}: estimate {estimate.total / GB:6.2f} GB"
    if not estimate_only and loaded == batch_size:
        optimizer = torch.optim.AdamW(module.parameters())
        gc.collect()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        loss, _ = module.objective_results(batch)
        loss.backward()
        optimizer.step()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        row += f", measured peak growth {(after - before) / GB:6.2f} GB"
        row += f" (estimate / measured {estimate.total / max(1, after - before):.2f})"
    print(row, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--estimate-only", action="store_true")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        one(args.config, args.one, args.estimate_only)
        return
    print(f"{args.config}, {resource.getpagesize()} B pages; one process per batch size")
    for size in args.batch:
        command = [sys.executable, __file__, "--config", args.config, "--one", str(size)]
        command += ["--estimate-only"] if args.estimate_only else []
        subprocess.run(command, check=True, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()

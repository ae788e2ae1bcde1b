"""Pre-training throughput of the UniCorn module, and whether the loader or the model limits it.

Measures, on real molecules (RDKit's bundled NCI set through the embedded default, one seeded
conformer each):

* the model: full training steps of ``PretrainModule`` with UniCorn's objectives (fragment
  masking, torsion-augmented denoising, cross-modal InfoNCE) -- forward of both encoders, every
  loss, backward, gradient clipping at 5, AdamW step -- at the paper size (ET 256/8 layers/8
  heads, Graphormer 512/12/32) and at the demo's small size (64 wide, 3 layers, 4 heads), in
  steps/s and molecules/s after warm-up steps;
* the data pipeline: samples/s of one loader worker (``PretrainDataset.__getitem__`` with all
  views on: torsion augmentation, coordinate noise, fragment mask, plus PyG collation), against
  the same without views as the in-run baseline.

It then prints, per size, how many loader workers the model's rate needs and whether the loader
(with ``--workers`` workers) or the model is the bottleneck.

Usage::

    .venv/bin/python benchmarks/pretrain_step.py                 # CPU, batch 32, both sizes
    .venv/bin/python benchmarks/pretrain_step.py --device cuda --batch 256 --paper-steps 10
    .venv/bin/python benchmarks/pretrain_step.py --device cuda --precision bf16-mixed ...

``--precision bf16-mixed`` runs forward and losses under bfloat16 autocast with float32 weights,
gradients and optimiser state, as Lightning's ``precision="bf16-mixed"`` does. On CUDA the table
also gives the peak GPU memory of the training steps (``torch.cuda.max_memory_allocated``:
weights, AdamW state, activations and batches).
"""

from __future__ import annotations

import argparse
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch_geometric.data import Batch

from machine_info import device_name
from molssl.datamodules import PretrainDataModule
from molssl.datamodules.pretrain import PretrainDataset
from molssl.encoders import EquivariantTransformer, Graphormer
from molssl.modules import PretrainModule
from molssl.objectives import CoordDenoise, CrossModalInfoNCE, FragmentMask, TorsionAugment

SIZES = {
    "paper": {
        "et": {"hidden_channels": 256, "num_layers": 8, "num_heads": 8, "num_rbf": 64},
        "graphormer": {"hidden_channels": 512, "num_layers": 12, "num_heads": 32},
    },
    "small": {
        "et": {"hidden_channels": 64, "num_layers": 3, "num_heads": 4, "num_rbf": 32},
        "graphormer": {"hidden_channels": 64, "num_layers": 3, "num_heads": 4},
    },
}


@dataclass
class ModelTiming:
    """Timed training steps of one model size."""

    size: str
    parameters: int
    steps: int
    seconds: float
    molecules: int
    peak_gpu_bytes: int | None = None

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds

    @property
    def molecules_per_s(self) -> float:
        return self.molecules / self.seconds


def unicorn_module(size: str) -> PretrainModule:
    """The UniCorn objectives on encoders of the given size (paper hyper-parameters otherwise)."""
    sizes = SIZES[size]
    return PretrainModule(
        objectives=[FragmentMask(), CoordDenoise(sigma=0.04), CrossModalInfoNCE(temperature=0.5)],
        encoder_3d=EquivariantTransformer(
            **sizes["et"], rbf_trainable=False, layernorm_on_vec="whitened"
        ),
        encoder_2d=Graphormer(**sizes["graphormer"]),
        views=[TorsionAugment(2.0, unit="deg")],
    )


def training_batches(
    datamodule: PretrainDataModule, module: PretrainModule, count: int
) -> list[Batch]:
    """``count`` training batches with all of the module's views applied (cycled if short)."""
    datamodule.set_views(module.pipeline_views())
    batches: list[Batch] = []
    while len(batches) < count:
        for batch in datamodule.train_dataloader():
            batches.append(batch)
            if len(batches) == count:
                break
    return batches


def time_model(
    size: str,
    datamodule: PretrainDataModule,
    warmup: int,
    steps: int,
    device: torch.device,
    precision: str = "32",
) -> ModelTiming:
    """Warm-up steps, then ``steps`` timed training steps on pre-built batches."""
    torch.manual_seed(0)
    module = unicorn_module(size).to(device)
    module.train()
    batches = [b.to(device) for b in training_batches(datamodule, module, warmup + steps)]
    # The heads are lazy: the first batch builds them, then the optimiser may see every weight.
    with torch.no_grad():
        module.objective_results(batches[0])
    optimizer = torch.optim.AdamW(module.parameters(), lr=4e-4, betas=(0.9, 0.999))

    def autocast() -> torch.autocast | nullcontext:
        if precision == "bf16-mixed":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return nullcontext()

    def step(batch: Batch) -> None:
        with autocast():
            total, _ = module.objective_results(batch)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 5.0)
        optimizer.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for batch in batches[:warmup]:
        step(batch)
    synchronize(device)
    start = time.perf_counter()
    for batch in batches[warmup:]:
        step(batch)
    synchronize(device)
    seconds = time.perf_counter() - start
    molecules = sum(int(b.num_graphs) for b in batches[warmup:])
    parameters = sum(p.numel() for p in module.parameters())
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return ModelTiming(size, parameters, steps, seconds, molecules, peak)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader_samples_per_s(dataset: PretrainDataset, batch_size: int, repeats: int) -> float:
    """Samples/s of one worker: ``__getitem__`` (conformer draw, Data, views) and collation."""
    torch.manual_seed(0)
    count = 0
    start = time.perf_counter()
    for _ in range(repeats):
        for first in range(0, len(dataset), batch_size):
            samples = [dataset[i] for i in range(first, min(first + batch_size, len(dataset)))]
            Batch.from_data_list(samples)
            count += len(samples)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecules", type=int, default=300, help="embedded-default size")
    parser.add_argument("--batch", type=int, default=32, help="molecules per batch")
    parser.add_argument("--sizes", default="small,paper", help="comma-separated: small,paper")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per size")
    parser.add_argument("--small-steps", type=int, default=10, help="timed steps, small size")
    parser.add_argument("--paper-steps", type=int, default=3, help="timed steps, paper size")
    parser.add_argument("--workers", type=int, default=4, help="loader workers to judge with")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:index]")
    parser.add_argument(
        "--precision",
        choices=("32", "bf16-mixed"),
        default="32",
        help="float32, or bfloat16 autocast with float32 weights (as Lightning's bf16-mixed)",
    )
    parser.add_argument("--cache-dir", default=None, help="embedded-default cache root")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA device")

    datamodule = PretrainDataModule(
        num_molecules=args.molecules,
        batch_size=args.batch,
        num_workers=0,
        val_fraction=0.05,
        cache_dir=args.cache_dir,
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    train = datamodule.train_dataset
    assert train is not None
    atoms = [train.records[int(i)].z.shape[0] for i in train.indices]
    dtype = "float32" if args.precision == "32" else "bfloat16 autocast (bf16-mixed)"
    print(
        f"device {device_name(device)}, torch {torch.__version__} "
        f"({torch.get_num_threads()} torch threads, {os.cpu_count()} cores), "
        f"{dtype}, batch {args.batch}; {len(train)} training molecules of RDKit's NCI set, "
        f"{sum(atoms) / len(atoms):.1f} atoms per molecule with H"
    )

    # Data pipeline: one worker, all UniCorn views vs none.
    views = unicorn_module("small").pipeline_views()
    bare = PretrainDataset(train.records, train.indices)
    viewed = PretrainDataset(train.records, train.indices, views=views)
    bare_rate = loader_samples_per_s(bare, args.batch, repeats=2)
    view_rate = loader_samples_per_s(viewed, args.batch, repeats=2)
    names = ", ".join(type(view).__name__ for view in views)
    print("\ndata pipeline, one worker (getitem + collate):")
    print(f"  no views   {bare_rate:9.0f} samples/s")
    print(f"  all views  {view_rate:9.0f} samples/s  ({view_rate / bare_rate:.2f}x; {names})")

    steps = {"small": args.small_steps, "paper": args.paper_steps}
    timings = [
        time_model(size, datamodule, args.warmup, steps[size], device, args.precision)
        for size in args.sizes.split(",")
    ]
    print(
        f"\nUniCorn training step (forward, 3 losses, backward, clip, AdamW), batch {args.batch}:"
    )
    print(
        f"  {'size':<6} {'params':>10} {'steps':>5} {'ms/step':>9} {'steps/s':>8} {'mol/s':>8}"
        f" {'peak GPU':>9}  {'workers needed':>14}  bottleneck ({args.workers} workers)"
    )
    for t in timings:
        needed = t.molecules_per_s / view_rate
        supply = args.workers * view_rate
        verdict = "loader" if supply < t.molecules_per_s else "model"
        peak = f"{t.peak_gpu_bytes / 2**30:6.2f} GB" if t.peak_gpu_bytes is not None else "-"
        print(
            f"  {t.size:<6} {t.parameters / 1e6:9.2f}M {t.steps:>5} "
            f"{1000 * t.seconds / t.steps:9.1f} {t.steps_per_s:8.2f} {t.molecules_per_s:8.1f}"
            f" {peak:>9}"
            f"  {needed:14.2f}  {verdict} (loader {supply:.0f} vs model "
            f"{t.molecules_per_s:.0f} mol/s, {supply / t.molecules_per_s:.1f}x)"
        )


if __name__ == "__main__":
    main()

"""Graphormer and MoleBLEND training steps: the padded batch against packed tokens + buckets.

:class:`~molssl.encoders.transformer.TransformerEncoder` runs its token-wise work (layer norms,
projections, feed-forward) on the real tokens only and its attention per size bucket of
molecules (:mod:`molssl.encoders.packed_layout`); ``packed = False`` runs every block on the
padded batch, the code before issue #18. Both variants start from the same weights and take
turns step by step on the same batches (RDKit's bundled NCI molecules as pre-training records:
explicit H, one seeded conformer, the 2D relations derived in the step as in training).

Step = forward in ``train()`` mode (dropout on), ``mean(node**2) + mean(graph**2)``, backward,
AdamW. Figures: medians over steps of wall and CPU time (this process's user + system seconds,
which other processes on a busy machine disturb much less) and the ratio of each variant to
the padded one (< 1: faster). Before timing, one float64 batch in ``eval()`` mode checks that
both layouts give the same outputs.

    OMP_NUM_THREADS=1 python benchmarks/transformer_layout.py --sizes paper --encoders graphormer
"""

from __future__ import annotations

import argparse
import copy
import os
from collections.abc import Callable

import torch
from torch import nn
from torch_geometric.data import Batch

from machine_info import device_name
from molssl.datamodules.collate import collate_samples
from molssl.datamodules.stream import view_sample
from molssl.encoders import Graphormer, MoleBlendTransformer
from pretrain_step import prepare_records
from step_timing import StepTimes

SIZES = {
    "graphormer": {
        "paper": {"hidden_channels": 512, "num_layers": 12, "num_heads": 32},
        "small": {"hidden_channels": 64, "num_layers": 3, "num_heads": 4},
    },
    "blend": {
        "paper": {"hidden_channels": 768, "num_layers": 12, "num_heads": 32},
        "small": {"hidden_channels": 64, "num_layers": 3, "num_heads": 4, "num_gaussians": 32},
    },
}
ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "graphormer": Graphormer,
    "blend": MoleBlendTransformer,
}


def training_step(model: nn.Module) -> Callable[[Batch], None]:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(batch: Batch) -> None:
        out = model(batch)
        loss = out.node.pow(2).mean() + out.graph.pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def largest_difference(model: nn.Module, batch: Batch) -> float:
    """Largest output difference between the layouts, float64, ``eval()`` (no dropout)."""
    model = copy.deepcopy(model).double().eval()
    double = batch.clone()
    if getattr(double, "pos", None) is not None:
        double.pos = double.pos.double()
    outs = []
    with torch.no_grad():
        for packed in (False, True):
            model.transformer.packed = packed
            outs.append(model(double))
    return max(
        float((outs[0].node - outs[1].node).abs().max()),
        float((outs[0].graph - outs[1].graph).abs().max()),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", default="graphormer,blend")
    parser.add_argument("--sizes", default="small,paper")
    parser.add_argument("--molecules", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    records, _ = prepare_records(args.molecules, 0)
    torch.manual_seed(0)
    samples = [view_sample(record, []) for record in records]
    batches = [
        collate_samples(samples[i : i + args.batch]) for i in range(0, len(samples), args.batch)
    ]
    print(
        f"{device_name(torch.device('cpu'))}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {len(batches)} batches of {args.batch} NCI "
        f"molecules ({sum(r.num_atoms for r in records) / len(records):.1f} atoms with H); "
        "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    )
    for name in args.encoders.split(","):
        for size in args.sizes.split(","):
            torch.manual_seed(0)
            model = ENCODERS[name](**SIZES[name][size])
            difference = largest_difference(model, batches[0])
            padded = copy.deepcopy(model)
            padded.transformer.packed = False
            steps = {"padded": training_step(padded), "packed": training_step(model)}
            times = StepTimes(steps)
            for index in range(args.warmup + args.steps):
                batch = batches[index % len(batches)]
                for key, step in steps.items():
                    if index < args.warmup:
                        step(batch)
                    else:
                        times.run(key, lambda step=step, batch=batch: step(batch))
            print(
                f"\n{name} {size} {SIZES[name][size]}: float64 outputs of the two layouts "
                f"differ by at most {difference:.1e}"
            )
            times.print_table("padded")
    print("\nload average after: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()

"""ET training step against the official TorchMD-NET ET: same weights, same edges, same batches.

Training step = forward, ``mean(x**2) + mean(vec**2)``, backward, AdamW. Batches of RDKit's
bundled NCI molecules (hydrogens, one ETKDG conformer each). Variants, stepped in turn on every
batch so that the load of a shared machine affects them alike:

* ``reference``: TorchMD-NET's ``TorchMD_ET`` (see ``torchmd_reference.py`` for how to get it),
  eager, as its training runs;
* ``molssl``: :class:`~molssl.encoders.et.EquivariantTransformer` as shipped (eager; on the
  CPU, edges as undirected pairs, or in chunks where the edge tensors are large);
* ``molssl plain``: the same with pairs and chunks off (one directed edge at a time, the path
  both share);
* ``molssl compiled``: ``compile_layers=True`` (``--no-compile`` skips it);
* ``reference compiled`` (``--compile-reference``): the reference's layers through the same
  ``torch.compile``, to see what compilation alone gives it.

Before timing, one float64 batch checks that both models give the same outputs.

The figures are medians over steps of wall time and of this process's CPU time (user +
system, which other processes on a busy machine disturb much less), and each variant's ratio
to the reference's median (< 1: faster). No neighbour cap (``max_num_neighbors=None``):
TorchMD-NET keeps every pair within the cutoff.

``--tuned-malloc`` first raises glibc's mmap and trim thresholds (``mallopt``), so that freed
large tensors are reused instead of returned to the system and faulted in again: the same
process-wide setting for both models, to separate the allocator's share from the code's.

    export TORCHMD_NET_SRC=/path/to/torchmd-net   # see torchmd_reference.py
    OMP_NUM_THREADS=1 python benchmarks/et_reference.py --sizes small,paper
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import logging
import os
import time
from collections.abc import Callable

import torch
from torch import nn
from torch_geometric.data import Batch

from et_throughput import nci_batches
from machine_info import device_name
from molssl.encoders.et import EquivariantTransformer
from step_timing import StepTimes
from torchmd_reference import reference_like, reference_outputs

SIZES = {
    "small": {"hidden_channels": 64, "num_layers": 2, "num_heads": 4, "num_rbf": 32},
    "paper": {"hidden_channels": 256, "num_layers": 8, "num_heads": 8, "num_rbf": 64},
}


def tune_malloc() -> bool:
    """Raise glibc's mmap and trim thresholds; ``False`` where that is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(
        libc.mallopt(m_mmap_threshold, ctypes.c_int(1 << 30))
        and libc.mallopt(m_trim_threshold, ctypes.c_int(2**31 - 1))
    )


def molssl_outputs(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    out = model(batch)
    return out.node, out.vec


def training_step(
    model: nn.Module, outputs: Callable[[nn.Module, Batch], tuple[torch.Tensor, torch.Tensor]]
) -> Callable[[Batch], None]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(batch: Batch) -> None:
        x, vec = outputs(model, batch)
        loss = x.pow(2).mean() + vec.pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def compile_reference_layers(reference: nn.Module) -> None:
    # Its scatter reads index.max().item(): a graph break, reported once as a warning.
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)
    for layer in reference.attention_layers:
        layer.forward = torch.compile(layer.forward, dynamic=True)


def variants(size: str, args: argparse.Namespace) -> dict[str, Callable[[Batch], None]]:
    torch.manual_seed(0)
    ours = EquivariantTransformer(**SIZES[size], max_num_neighbors=None)
    plain = copy.deepcopy(ours)
    plain.pair_edges = False
    for layer in plain.attention_layers:
        layer.edge_chunk = None
    steps = {
        "reference": training_step(reference_like(copy.deepcopy(ours)), reference_outputs),
        "molssl": training_step(ours, molssl_outputs),
        "molssl plain": training_step(plain, molssl_outputs),
    }
    if not args.no_compile:
        compiled = copy.deepcopy(ours)
        compiled.compile_layers = True
        steps["molssl compiled"] = training_step(compiled, molssl_outputs)
    if args.compile_reference:
        reference = reference_like(copy.deepcopy(ours))
        compile_reference_layers(reference)
        steps["reference compiled"] = training_step(reference, reference_outputs)
    return steps


def check_equal(size: str, batch: Batch) -> float:
    """Largest output difference of the two models in float64 on ``batch`` (same weights)."""
    torch.manual_seed(0)
    ours = EquivariantTransformer(**SIZES[size], max_num_neighbors=None).double()
    reference = reference_like(ours)
    double = batch.clone()
    double.pos = batch.pos.double()
    with torch.no_grad():
        node, vec = molssl_outputs(ours, double)
        x, vec_ref = reference_outputs(reference, double)
    return max(float((node - x).abs().max()), float((vec - vec_ref).abs().max()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small,paper")
    parser.add_argument("--molecules", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="passes over the batches")
    parser.add_argument("--paper-batches", type=int, default=2, help="batches timed at paper size")
    parser.add_argument("--no-compile", action="store_true", help="skip molssl compiled")
    parser.add_argument("--compile-reference", action="store_true")
    parser.add_argument("--tuned-malloc", action="store_true")
    args = parser.parse_args()
    tuned = tune_malloc() if args.tuned_malloc else False
    batches = nci_batches(args.molecules, args.batch_size, torch.device("cpu"))
    atoms = sum(b.num_nodes for b in batches) / sum(b.num_graphs for b in batches)
    print(
        f"{device_name(torch.device('cpu'))}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {len(batches)} batches of {args.batch_size} NCI "
        f"molecules ({atoms:.1f} atoms with H); glibc malloc "
        f"{'tuned (mallopt)' if tuned else 'default'}; load average "
        + " ".join(f"{v:.2f}" for v in os.getloadavg())
    )
    for size in args.sizes.split(","):
        difference = check_equal(size, batches[0])
        print(f"\n{size}: {SIZES[size]}; float64 outputs differ by at most {difference:.1e}")
        steps = variants(size, args)
        chosen = batches if size == "small" else batches[: args.paper_batches]
        start = time.perf_counter()
        for step in steps.values():  # warm-up (and compilation) on the first batch
            step(chosen[0])
        print(f"  warm-up and compilation: {time.perf_counter() - start:.0f} s")
        times = StepTimes(steps)
        for _ in range(args.repeats):
            for batch in chosen:
                for name, step in steps.items():
                    times.run(name, lambda step=step, batch=batch: step(batch))
        times.print_table("reference")
    print("\nload average after: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()

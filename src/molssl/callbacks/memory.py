"""``MemoryCheck``: before the first step on a machine without a GPU, warn if a step won't fit.

A paper-size config (UniCorn: a 26.9M-parameter model, batch 256, Graphormer attention over
every atom pair) needs more memory per step than a laptop or a small CPU machine has, and the
operating system kills the process without a word. Before the first optimiser step on the CPU
this callback estimates what one step needs,

* weights, gradients and AdamW's two moments: 4 x the parameters' bytes, and
* activations: the bytes autograd saves for the backward pass
  (``torch.autograd.graph.saved_tensors_hooks``) in a forward pass of a copy of the module on
  a few molecules of the first batch (the largest one among them), scaled to the batch,

and when that exceeds ``fraction`` of the machine's memory (the cgroup limit in a container)
prints one warning with the estimate and what to do; the run goes on. The copy is thrown away
and the random state restored, so the run is the same with or without the check.
"""

from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch_geometric.data import Batch

__all__ = ["MemoryCheck", "StepMemory", "estimate_step_memory", "machine_memory_bytes"]

_GB = 1024**3


@dataclass(frozen=True)
class StepMemory:
    """The estimate of one training step, in bytes."""

    parameters: int
    activations: int
    batch_size: int

    @property
    def total(self) -> int:
        """Optimiser state, weights and activations together."""
        return self.parameters + self.activations


def machine_memory_bytes() -> int:
    """Physical memory, or the cgroup's limit when it is lower (0 if unknown)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 0
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < (total or int(text) + 1):
            total = int(text)
    return total


def _sample(batch: Batch, molecules: int) -> Batch:
    """The first ``molecules - 1`` molecules of ``batch`` and its largest one."""
    sizes = torch.diff(batch.ptr)
    chosen = list(range(min(molecules - 1, batch.num_graphs)))
    largest = int(torch.argmax(sizes))
    if largest not in chosen:
        chosen.append(largest)
    return Batch.from_data_list(batch.index_select(chosen))


def _forward(module: LightningModule, batch: Batch) -> Any:
    if hasattr(module, "objective_results"):
        return module.objective_results(batch)
    if hasattr(module, "compute_loss"):
        return module.compute_loss(batch, train=True)
    return module(batch)


def estimate_step_memory(
    module: LightningModule, batch: Batch, molecules: int = 4, batch_size: int | None = None
) -> StepMemory:
    """Estimates one training step's memory on ``batch`` (see the module docstring).

    Args:
        module: The module about to train (left untouched: a copy runs the forward pass).
        batch: A training batch (a PyG ``Batch``).
        molecules: Molecules of the batch run through the copy.
        batch_size: Molecules per step to scale to (default: the batch's).
    """
    parameter_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    sample = _sample(batch, molecules)
    trainer = module._trainer
    module._trainer = None  # the copy must not drag the Trainer (and its data) along
    try:
        clone = copy.deepcopy(module)
    finally:
        module._trainer = trainer
    parameter_storage = {p.untyped_storage().data_ptr() for p in clone.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameter_storage:
            saved[storage.data_ptr()] = max(saved.get(storage.data_ptr(), 0), storage.nbytes())
        return tensor

    with (
        torch.random.fork_rng(devices=[]),
        torch.enable_grad(),
        torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor),
    ):
        _forward(clone, sample)
    del clone
    size = batch.num_graphs if batch_size is None else batch_size
    return StepMemory(
        parameters=4 * parameter_bytes,
        activations=int(sum(saved.values()) * size / max(1, sample.num_graphs)),
        batch_size=int(size),
    )


class MemoryCheck(Callback):
    """Warns before the first CPU step whose estimate exceeds ``fraction`` of the memory.

    Args:
        fraction: Share of the machine's memory a step may take before the warning (the rest
            is left to data-loader workers, the data and the system).
        molecules: Molecules of the first batch used for the estimate.
    """

    def __init__(self, fraction: float = 0.5, molecules: int = 4) -> None:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        self.fraction = fraction
        self.molecules = molecules
        self.estimate: StepMemory | None = None

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Estimates on the run's first batch (CPU, rank zero, PyG batches only)."""
        if self.estimate is not None or trainer.global_step != 0 or not trainer.is_global_zero:
            return
        if trainer.strategy.root_device.type != "cpu" or not isinstance(batch, Batch):
            return
        self.estimate = estimate_step_memory(pl_module, batch, self.molecules)
        available = machine_memory_bytes()
        if available and self.estimate.total > self.fraction * available:
            sys.stderr.write(memory_warning(self.estimate, available) + "\n")


def memory_warning(estimate: StepMemory, available: int) -> str:
    """The warning line."""
    return (
        f"molssl fit: warning: one training step needs about {estimate.total / _GB:.1f} GB of "
        f"memory (estimated before the first step: {estimate.parameters / _GB:.2f} GB of "
        f"weights and optimiser state, {estimate.activations / _GB:.1f} GB of activations for "
        f"{estimate.batch_size} molecules per batch) and this machine has "
        f"{available / _GB:.1f} GB and no GPU: the run may be killed for lack of memory. For a "
        "CPU, use a configs/cpu/ config (e.g. configs/cpu/unicorn.yaml) or a smaller "
        "--data.init_args.batch_size"
    )

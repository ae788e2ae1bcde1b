"""Equivariant transformer throughput at paper size (8 layers, 8 heads, 256 channels, 64 RBF).

Same batches (RDKit's bundled NCI molecules with hydrogens and one fixed-seed ETKDG conformer,
built before any timing), same model, same run:

* ``forward``: encoder forward pass only (inference, ``torch.no_grad``): the baseline.
* ``denoise step``: forward + per-atom vector head + MSE against a fixed target + backward
  (the pre-training step of coordinate denoising).
* ``energy+forces step``: forward + scalar head + forces by ``autograd.grad(create_graph)``
  + a loss on energies and forces + backward (MD17-style fine-tuning; double backward).
* ``... whitened``: the same steps with ``layernorm_on_vec="whitened"``.

Figures are molecules per second (best of ``--repeats`` passes over all batches, the steps
taking turns within each repeat) and the ratio of each step's time to the forward pass in the
same run.

Run: ``.venv/bin/python benchmarks/et_throughput.py [--molecules 256] [--batch-size 32]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rdkit import Chem, RDConfig, RDLogger
from rdkit.Chem import AllChem
from torch_geometric.data import Batch, Data

from molssl.encoders.et import EquivariantTransformer
from molssl.encoders.heads import EquivariantScalarHead, EquivariantVectorHead


def nci_batches(num_molecules: int, batch_size: int, device: torch.device) -> list[Batch]:
    """Batches of NCI molecules with hydrogens and an ETKDGv3 conformer each."""
    RDLogger.DisableLog("rdApp.*")
    path = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
    molecules: list[Data] = []
    with open(path) as handle:
        for line in handle:
            mol = Chem.MolFromSmiles(line.split()[0])
            if mol is None or mol.GetNumHeavyAtoms() > 40:
                continue
            mol = Chem.AddHs(mol)
            params = AllChem.ETKDGv3()
            params.randomSeed = 0
            if AllChem.EmbedMolecule(mol, params) != 0:
                continue
            z = torch.tensor([a.GetAtomicNum() for a in mol.GetAtoms()])
            pos = torch.tensor(mol.GetConformer().GetPositions(), dtype=torch.float32)
            molecules.append(Data(z=z, pos=pos))
            if len(molecules) == num_molecules:
                break
    return [
        Batch.from_data_list(molecules[i : i + batch_size]).to(device)
        for i in range(0, len(molecules), batch_size)
    ]


def time_pass(step: Callable[[Batch], None], batches: list[Batch]) -> float:
    """Wall time of one pass of ``step`` over all batches."""
    device_is_cuda = batches[0].pos.is_cuda
    if device_is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    if device_is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def best_times(
    steps: dict[str, Callable[[Batch], None]], batches: list[Batch], repeats: int
) -> dict[str, float]:
    """Best pass time per step; steps take turns within each repeat so that drifting machine
    load biases no step against the baseline. One untimed warm-up pass each."""
    for step in steps.values():
        time_pass(step, batches)
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(repeats):
        for name, step in steps.items():
            best[name] = min(best[name], time_pass(step, batches))
    return best


def make_steps(layernorm_on_vec: str | None, device: torch.device) -> dict[str, Callable]:
    torch.manual_seed(0)
    encoder = EquivariantTransformer(layernorm_on_vec=layernorm_on_vec).to(device)
    vector_head = EquivariantVectorHead(encoder.out_dim).to(device)
    scalar_head = EquivariantScalarHead(encoder.out_dim).to(device)
    params = [*encoder.parameters(), *vector_head.parameters(), *scalar_head.parameters()]

    def forward(batch: Batch) -> None:
        with torch.no_grad():
            encoder(batch)

    def denoise(batch: Batch) -> None:
        noise = vector_head(encoder(batch), batch)
        torch.nn.functional.mse_loss(noise, torch.ones_like(noise)).backward()
        for p in params:
            p.grad = None

    def energy_forces(batch: Batch) -> None:
        pos = batch.pos.detach().requires_grad_(True)
        moved = batch.clone()
        moved.pos = pos
        energy = scalar_head(encoder(moved), moved)
        (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=True)
        loss = 0.2 * energy.pow(2).mean() + 0.8 * grad.pow(2).mean()
        loss.backward()
        for p in params:
            p.grad = None

    return {"forward": forward, "denoise step": denoise, "energy+forces step": energy_forces}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecules", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    batches = nci_batches(args.molecules, args.batch_size, device)
    num_molecules = sum(b.num_graphs for b in batches)
    num_atoms = sum(b.num_nodes for b in batches)
    print(
        f"device {device}, {num_molecules} NCI molecules ({num_atoms} atoms), "
        f"batch size {args.batch_size}, torch {torch.__version__}"
    )
    encoder = EquivariantTransformer()
    print(f"parameters at paper size: {sum(p.numel() for p in encoder.parameters()):,}")
    steps: dict[str, Callable[[Batch], None]] = {}
    for norm in (None, "whitened"):
        for name, step in make_steps(norm, device).items():
            steps[name + (" whitened" if norm else "")] = step
    times = best_times(steps, batches, args.repeats)
    baseline = times["forward"]
    print(f"{'step':<32}{'molecules/s':>14}{'x forward':>12}")
    for label, seconds in times.items():
        print(f"{label:<32}{num_molecules / seconds:>14.1f}{seconds / baseline:>12.2f}")


if __name__ == "__main__":
    main()

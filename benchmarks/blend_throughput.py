"""MoleBLEND transformer throughput: blending vs all relations, and where the time goes.

Same batches (RDKit's bundled NCI molecules with hydrogens, featurized by
``molssl.chem.features`` with one fixed-seed ETKDG conformer, built before any timing), same
model, same run:

* ``all``: ``relation_mode="all"`` (fine-tuning): every pair gets all three biases, the 3D
  kernel runs on every pair. The baseline.
* ``blend``: ``relation_mode="blend"`` with the default (0.2, 0.2, 0.6): the 3D kernel runs only
  on the pairs that drew it.
* ``blend, precomputed 2D``: the same with ``spd``/``path_edges`` stored per molecule by
  ``AddGraphRelations`` (as the data pipeline does), so the step does no shortest-path search.
* ``relations only``: ``dense_graph_relations`` alone on the raw batches (the part the
  precomputation removes).

Each step is forward + backward of ``node.sum() + graph.sum()`` in training mode. Figures are
molecules per second (best of ``--repeats`` passes over all batches, the steps taking turns
within each repeat) and each step's time as a ratio to ``all`` in the same run.

Run: ``.venv/bin/python benchmarks/blend_throughput.py [--molecules 128] [--batch-size 32]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rdkit import RDConfig
from torch_geometric.data import Batch, Data

from molssl.chem.conformers import ConformerOptions, embed_conformers
from molssl.chem.errors import MoleculeError
from molssl.chem.features import mol_from_smiles, mol_to_data
from molssl.chem.graph import AddGraphRelations, dense_graph_relations
from molssl.encoders.blend import MoleBlendTransformer


def nci_data(num_molecules: int) -> list[Data]:
    """NCI molecules (explicit H, one ETKDG conformer, seed 0); failures are skipped."""
    path = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
    options = ConformerOptions(num_conformers=1, seed=0, optimize=False)
    out: list[Data] = []
    with open(path) as handle:
        for line in handle:
            if len(out) >= num_molecules:
                break
            fields = line.split()
            if not fields:
                continue
            try:
                mol = embed_conformers(mol_from_smiles(fields[0], max_heavy_atoms=60), options)
            except MoleculeError:
                continue
            out.append(mol_to_data(mol, conf_id=0))
    return out


def batches(data: list[Data], batch_size: int, device: torch.device) -> list[Batch]:
    return [
        Batch.from_data_list(data[i : i + batch_size]).to(device)
        for i in range(0, len(data), batch_size)
    ]


def best_times(
    steps: dict[str, tuple[Callable[[Batch], None], list[Batch]]], repeats: int
) -> dict[str, float]:
    """Best wall time of one pass over all batches per step; the steps take turns within each
    repeat so that a change in machine load hits them all alike (one warm-up pass first)."""
    best = dict.fromkeys(steps, float("inf"))
    for repeat in range(repeats + 1):
        for name, (step, inputs) in steps.items():
            start = time.perf_counter()
            for batch in inputs:
                step(batch)
            if inputs and inputs[0].x.is_cuda:
                torch.cuda.synchronize()
            if repeat > 0:
                best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecules", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    data = nci_data(args.molecules)
    raw = batches(data, args.batch_size, device)
    relations = AddGraphRelations(max_hops=5)
    precomputed = batches([relations(d.clone()) for d in data], args.batch_size, device)
    model = MoleBlendTransformer(
        num_layers=args.layers, num_heads=args.heads, hidden_channels=args.hidden
    ).to(device)
    model.train()

    def step(mode: str) -> Callable[[Batch], None]:
        def run(batch: Batch) -> None:
            model.relation_mode = mode  # type: ignore[assignment]
            out = model(batch)
            (out.node.sum() + out.graph.sum()).backward()
            model.zero_grad(set_to_none=True)

        return run

    def relations_only(batch: Batch) -> None:
        dense_graph_relations(batch, max_hops=5)

    timings = best_times(
        {
            "all": (step("all"), raw),
            "blend": (step("blend"), raw),
            "blend, precomputed 2D": (step("blend"), precomputed),
            "relations only": (relations_only, raw),
        },
        args.repeats,
    )
    atoms = sum(d.num_nodes for d in data) / max(len(data), 1)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"{len(data)} molecules (mean {atoms:.1f} atoms with H), batch {args.batch_size}, "
        f"{args.layers} layers / {args.heads} heads / {args.hidden} channels "
        f"({params / 1e6:.2f} M parameters), device {device}"
    )
    print(f"{'step':<24}{'molecules/s':>14}{'time / all':>14}")
    for name, seconds in timings.items():
        print(f"{name:<24}{len(data) / seconds:>14.1f}{seconds / timings['all']:>14.2f}")


if __name__ == "__main__":
    main()

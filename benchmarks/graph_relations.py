"""2D relations and radius graph: molssl against simple baselines, in the same run.

* ``shortest_path_matrix`` against RDKit's ``Chem.GetDistanceMatrix`` (C++ Floyd-Warshall) on
  RDKit's bundled NCI molecules with explicit hydrogens, plus the worst case the pipeline
  meets: a 50-carbon alkane with hydrogens (152 atoms, diameter 51).
* ``AddGraphRelations`` (distances + 5-hop edge paths), the per-molecule cost of preparation.
* ``radius_graph`` (chunked per-molecule blocks) against the naive dense version that builds
  one ``N x N`` distance matrix over the whole batch and masks pairs of different molecules.

Figures are microseconds or milliseconds per call (best of ``--repeats``) and the ratio to the
baseline. Run: ``.venv/bin/python benchmarks/graph_relations.py [--molecules 200]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rdkit import Chem, RDConfig, rdBase
from rdkit.Chem import AllChem
from torch_geometric.data import Data

from molssl.chem.graph import AddGraphRelations, shortest_path_matrix
from molssl.chem.radius import radius_graph


def nci_molecules(count: int) -> list[Chem.Mol]:
    """First ``count`` parseable NCI molecules, hydrogens explicit."""
    path = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
    out: list[Chem.Mol] = []
    with open(path) as handle:
        for line in handle:
            fields = line.split()
            mol = Chem.MolFromSmiles(fields[0]) if fields else None
            if mol is not None:
                out.append(Chem.AddHs(mol))
            if len(out) >= count:
                break
    return out


def edge_index_of(mol: Chem.Mol) -> np.ndarray:
    pairs = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()]
    return np.asarray(pairs + [(j, i) for i, j in pairs], dtype=np.int64).reshape(-1, 2).T


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_relations(mols: list[Chem.Mol], repeats: int) -> None:
    edges = [edge_index_of(m) for m in mols]
    datas = [
        Data(edge_index=torch.from_numpy(e), num_nodes=m.GetNumAtoms())
        for m, e in zip(mols, edges, strict=True)
    ]
    transform = AddGraphRelations(max_hops=5)

    def rdkit_all() -> None:
        for m in mols:
            Chem.GetDistanceMatrix(m, force=True)

    def ours_all() -> None:
        for m, e in zip(mols, edges, strict=True):
            shortest_path_matrix(e, m.GetNumAtoms())

    def relations_all() -> None:
        for d in datas:
            transform(d)

    per = 1e6 / len(mols)
    base = best_seconds(rdkit_all, repeats)
    ours = best_seconds(ours_all, repeats)
    rel = best_seconds(relations_all, repeats)
    mean_atoms = np.mean([m.GetNumAtoms() for m in mols])
    print(f"NCI, {len(mols)} molecules, mean {mean_atoms:.0f} atoms with H (us per molecule)")
    print(f"  RDKit GetDistanceMatrix          {base * per:8.1f}   1.00")
    print(f"  shortest_path_matrix             {ours * per:8.1f}   {ours / base:.2f}")
    print(f"  AddGraphRelations (spd + paths)  {rel * per:8.1f}   {rel / base:.2f}")

    chain = Chem.AddHs(Chem.MolFromSmiles("C" * 50))
    chain_edges = edge_index_of(chain)
    chain_data = Data(edge_index=torch.from_numpy(chain_edges), num_nodes=chain.GetNumAtoms())
    base = best_seconds(lambda: Chem.GetDistanceMatrix(chain, force=True), repeats * 5)
    ours = best_seconds(lambda: shortest_path_matrix(chain_edges, chain.GetNumAtoms()), repeats * 5)
    rel = best_seconds(lambda: transform(chain_data), repeats * 5)
    print(f"C50 alkane, {chain.GetNumAtoms()} atoms (ms)")
    print(f"  RDKit GetDistanceMatrix          {base * 1e3:8.2f}   1.00")
    print(f"  shortest_path_matrix             {ours * 1e3:8.2f}   {ours / base:.2f}")
    print(f"  AddGraphRelations (spd + paths)  {rel * 1e3:8.2f}   {rel / base:.2f}")


def naive_radius(pos: torch.Tensor, batch: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Whole-batch N x N baseline (no neighbour cap)."""
    dist = torch.cdist(pos, pos)
    keep = (dist < cutoff) & (batch[:, None] == batch[None, :])
    keep.fill_diagonal_(False)
    centre, neighbour = keep.nonzero(as_tuple=True)
    return torch.stack([neighbour, centre])


def bench_radius(mols: list[Chem.Mol], repeats: int) -> None:
    coords = []
    params = AllChem.ETKDGv3()
    params.randomSeed = 0
    with rdBase.BlockLogs():
        for mol in mols:
            copy = Chem.Mol(mol)
            if AllChem.EmbedMolecule(copy, params) == 0:
                coords.append(torch.tensor(copy.GetConformer().GetPositions(), dtype=torch.float32))
    print(f"radius_graph, cutoff 5 A, no cap, ETKDG conformers of {len(coords)} molecules (ms)")
    for batch_size in (32, 128, 512):
        chosen = [coords[i % len(coords)] for i in range(batch_size)]
        pos = torch.cat(chosen)
        batch = torch.repeat_interleave(
            torch.arange(batch_size), torch.tensor([len(c) for c in chosen])
        )
        base = best_seconds(lambda p=pos, b=batch: naive_radius(p, b, 5.0), repeats)
        ours = best_seconds(
            lambda p=pos, b=batch: radius_graph(p, b, 5.0, max_num_neighbors=None), repeats
        )
        capped = best_seconds(
            lambda p=pos, b=batch: radius_graph(p, b, 5.0, max_num_neighbors=32), repeats
        )
        n = pos.size(0)
        print(
            f"  B={batch_size:4d} N={n:6d}  naive N^2 {base * 1e3:8.2f}  "
            f"ours {ours * 1e3:8.2f} ({ours / base:.2f})  ours cap 32 {capped * 1e3:8.2f} "
            f"({capped / base:.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecules", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    mols = nci_molecules(args.molecules)
    bench_relations(mols, args.repeats)
    bench_radius(mols[:64], args.repeats)


if __name__ == "__main__":
    main()

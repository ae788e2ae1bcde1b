"""Radius graph against a brute-force reference on RDKit conformers of real NCI molecules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from molssl.chem.radius import (
    HAS_TORCH_CLUSTER,
    _keep_nearest,
    radius_graph,
    radius_graph_and_dropped,
)

Edge = tuple[int, int]


def conformer(smiles: str, seed: int = 7) -> np.ndarray:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise RuntimeError(f"test molecule failed to embed: {smiles}")
    return mol.GetConformer().GetPositions()


@pytest.fixture(scope="module")
def batch_of_molecules(nci_smiles: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Several molecules of different sizes, concatenated PyG style."""
    smiles = [nci_smiles[i] for i in (0, 3, 8, 11)] + ["O", "CCO", "[Na+].[Cl-]"]
    coords = [conformer(s) for s in smiles]
    pos = torch.tensor(np.concatenate(coords), dtype=torch.float64)
    batch = torch.repeat_interleave(
        torch.arange(len(coords)), torch.tensor([len(c) for c in coords])
    )
    return pos, batch


def brute_force(
    pos: np.ndarray,
    batch: np.ndarray,
    cutoff: float,
    max_num_neighbors: int | None,
    loop: bool,
) -> set[Edge]:
    """(source, target) pairs by looping over every centre and every atom."""
    edges: set[Edge] = set()
    for i in range(len(pos)):
        candidates = []
        for j in range(len(pos)):
            if batch[i] != batch[j] or (i == j and not loop):
                continue
            d = float(np.sqrt(((pos[i] - pos[j]) ** 2).sum()))
            if d < cutoff:
                candidates.append((d, j))
        candidates.sort()
        if max_num_neighbors is not None:
            candidates = candidates[:max_num_neighbors]
        edges.update((j, i) for _, j in candidates)
    return edges


def as_set(edge_index: torch.Tensor) -> set[Edge]:
    pairs = edge_index.t().tolist()
    assert len(pairs) == len(set(map(tuple, pairs))), "duplicate edges"
    return {(int(a), int(b)) for a, b in pairs}


@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize(("cutoff", "max_num_neighbors"), [(5.0, None), (5.0, 6), (2.5, 3)])
def test_matches_brute_force(
    batch_of_molecules: tuple[torch.Tensor, torch.Tensor],
    cutoff: float,
    max_num_neighbors: int | None,
    loop: bool,
) -> None:
    pos, batch = batch_of_molecules
    expected = brute_force(pos.numpy(), batch.numpy(), cutoff, max_num_neighbors, loop)
    got = radius_graph(
        pos, batch, cutoff=cutoff, max_num_neighbors=max_num_neighbors, loop=loop, backend="torch"
    )
    assert got.dtype == torch.long and got.shape[0] == 2
    assert as_set(got) == expected
    # Documented order: by target, then source.
    key = got[1] * pos.size(0) + got[0]
    assert bool((key[1:] > key[:-1]).all())
    # The limit is really exercised: some centre has more neighbours than allowed; the edges
    # it drops are counted, by the dense path (in small chunks) and by the nearest-k rule of
    # the torch_cluster path (applied to the full edge list).
    unlimited = brute_force(pos.numpy(), batch.numpy(), cutoff, None, loop)
    edges, dropped = radius_graph_and_dropped(
        pos, batch, cutoff, max_num_neighbors, loop, backend="torch", max_block_elements=400
    )
    assert as_set(edges) == expected and dropped.dtype == torch.long and dropped.dim() == 0
    assert int(dropped) == len(unlimited) - len(expected)
    if max_num_neighbors is not None:
        assert len(unlimited) > len(expected)
        full = torch.tensor(sorted(unlimited)).t()
        nearest, dropped_nearest = _keep_nearest(full, pos, max_num_neighbors)
        assert as_set(nearest) == expected and int(dropped_nearest) == int(dropped)


def test_no_edge_crosses_molecules(batch_of_molecules: tuple[torch.Tensor, torch.Tensor]) -> None:
    pos, batch = batch_of_molecules
    # Stack every molecule on the same spot: only the batch vector keeps them apart.
    centred = pos.clone()
    for g in batch.unique():
        centred[batch == g] -= centred[batch == g].mean(0)
    edges = radius_graph(centred, batch, cutoff=100.0, max_num_neighbors=None)
    assert bool((batch[edges[0]] == batch[edges[1]]).all())
    counts = torch.bincount(batch)
    assert edges.size(1) == int((counts * (counts - 1)).sum())


def test_small_memory_budget_gives_same_edges(
    batch_of_molecules: tuple[torch.Tensor, torch.Tensor],
) -> None:
    pos, batch = batch_of_molecules
    one_block = radius_graph(pos, batch, cutoff=4.0, max_num_neighbors=5, backend="torch")
    # A budget below one molecule's block forces one molecule per chunk.
    per_molecule = radius_graph(
        pos, batch, cutoff=4.0, max_num_neighbors=5, backend="torch", max_block_elements=1
    )
    torch.testing.assert_close(one_block, per_molecule, rtol=0, atol=0)


def test_unsorted_batch_and_no_batch(batch_of_molecules: tuple[torch.Tensor, torch.Tensor]) -> None:
    pos, batch = batch_of_molecules
    perm = torch.randperm(pos.size(0), generator=torch.Generator().manual_seed(0))
    got = radius_graph(pos[perm], batch[perm], cutoff=3.0, max_num_neighbors=4, backend="torch")
    expected = brute_force(pos[perm].numpy(), batch[perm].numpy(), 3.0, 4, False)
    assert as_set(got) == expected
    single = batch == 0
    alone = radius_graph(pos[single], None, cutoff=3.0, max_num_neighbors=None, backend="torch")
    assert as_set(alone) == brute_force(
        pos[single].numpy(), np.zeros(int(single.sum())), 3.0, None, False
    )


def test_float32_and_empty_inputs(batch_of_molecules: tuple[torch.Tensor, torch.Tensor]) -> None:
    pos, batch = batch_of_molecules
    got = radius_graph(pos.float(), batch, cutoff=5.0, max_num_neighbors=32, backend="torch")
    assert as_set(got) == brute_force(pos.numpy(), batch.numpy(), 5.0, 32, False)
    empty = radius_graph(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    assert empty.shape == (2, 0) and empty.dtype == torch.long


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pos": torch.zeros(4, 2)}, "pos"),
        ({"pos": torch.zeros(4, 3, dtype=torch.long)}, "pos"),
        ({"batch": torch.zeros(3, dtype=torch.long)}, "batch"),
        ({"batch": torch.zeros(4)}, "batch"),
        ({"cutoff": 0.0}, "cutoff"),
        ({"max_num_neighbors": 0}, "max_num_neighbors"),
        ({"backend": "faiss"}, "backend"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"pos": torch.zeros(4, 3), "batch": torch.zeros(4, dtype=torch.long)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        radius_graph(**args)  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(batch_of_molecules: tuple[torch.Tensor, torch.Tensor]) -> None:
    pos, batch = batch_of_molecules
    cpu = radius_graph(pos.float(), batch, cutoff=4.0, max_num_neighbors=6, backend="torch")
    gpu = radius_graph(
        pos.float().cuda(), batch.cuda(), cutoff=4.0, max_num_neighbors=6, backend="torch"
    )
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=0)


@pytest.mark.skipif(not HAS_TORCH_CLUSTER, reason="torch_cluster not installed")
@pytest.mark.parametrize("max_num_neighbors", [None, 5])
def test_torch_cluster_backend_agrees(
    batch_of_molecules: tuple[torch.Tensor, torch.Tensor], max_num_neighbors: int | None
) -> None:
    pos, batch = batch_of_molecules
    ours = radius_graph(pos, batch, 4.0, max_num_neighbors, backend="torch")
    theirs = radius_graph(pos, batch, 4.0, max_num_neighbors, backend="torch_cluster")
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_torch_cluster_backend_unavailable_is_an_import_error() -> None:
    if HAS_TORCH_CLUSTER:
        pytest.skip("torch_cluster is installed")
    with pytest.raises(ImportError, match="torch_cluster"):
        radius_graph(torch.zeros(2, 3), backend="torch_cluster")


def test_no_edge_dropped_below_the_cap(
    batch_of_molecules: tuple[torch.Tensor, torch.Tensor],
) -> None:
    pos, batch = batch_of_molecules
    _, dropped = radius_graph_and_dropped(pos, batch, 5.0, 1000, backend="torch")
    assert int(dropped) == 0
    _, dropped = radius_graph_and_dropped(torch.zeros(0, 3), None)
    assert int(dropped) == 0

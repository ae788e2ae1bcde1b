"""encode_molecules: batched equals one molecule at a time (3D and 2D encoders); workers agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from molssl.analysis.embeddings import encode_molecules
from molssl.analysis.molecules import read_molecules
from tests.analysis.embed_fixtures import write_smiles_with_failures
from tests.modules.pretrain_fixtures import tiny_et, tiny_graphormer


@pytest.fixture(scope="module")
def molecules(tmp_path_factory: pytest.TempPathFactory) -> list:
    path = tmp_path_factory.mktemp("input") / "mols.smi"
    write_smiles_with_failures(path, 20)
    found, failures, read = read_molecules(path, seed=0)
    assert len(found) == 20 and len(found) + len(failures) == read
    return found


@pytest.mark.parametrize("make", [tiny_et, tiny_graphormer], ids=["et", "graphormer"])
def test_batched_equals_one_at_a_time(molecules: list, make) -> None:
    torch.manual_seed(0)
    encoder = make()
    data = [m.data for m in molecules]
    batched = encode_molecules(encoder, data, batch_size=7)
    assert batched.shape == (len(data), encoder.out_dim) and batched.dtype == np.float32
    with torch.no_grad():
        alone = np.stack([encoder(Batch.from_data_list([d])).graph[0].numpy() for d in data])
    np.testing.assert_allclose(batched, alone, rtol=1e-5, atol=1e-5)
    # Different molecules, different embeddings: the comparison above is not vacuous.
    assert len({tuple(np.round(row, 4)) for row in batched}) == len(data)
    with pytest.raises(ValueError, match="batch_size"):
        encode_molecules(encoder, data, batch_size=0)
    with pytest.raises(ValueError, match="no molecule"):
        encode_molecules(encoder, [], batch_size=4)


def test_two_workers_give_the_same_molecules(molecules: list, tmp_path: Path) -> None:
    path = tmp_path / "mols.smi"
    write_smiles_with_failures(path, 20)
    parallel, failures, _ = read_molecules(path, seed=0, workers=2)
    assert [m.mol_id for m in parallel] == [m.mol_id for m in molecules]
    for a, b in zip(parallel, molecules, strict=True):
        assert a.smiles == b.smiles and a.scaffold == b.scaffold
        assert torch.equal(a.data.pos, b.data.pos)
    assert {f.reason for f in failures} == {"invalid_smiles", "unsupported_element", "empty_input"}

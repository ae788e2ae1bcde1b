"""Ridge probe of the transfer experiment: the split join by ``mol_id`` and the fit itself."""

from __future__ import annotations

import csv
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from molssl.datamodules.moleculenet import MoleculeNetDataModule
from tests.benchmarks.scripts import load_script
from tests.datamodules.moleculenet_files import write_moleculenet_csv


@pytest.fixture(scope="module")
def probe() -> ModuleType:
    return load_script("transfer/probe.py", "transfer_probe")


def write_embed_folder(
    folder: Path, mol_ids: np.ndarray, labels: np.ndarray, embeddings: np.ndarray
) -> Path:
    """A ``molssl embed`` output folder (the two files the probe reads), rows as given."""
    folder.mkdir(parents=True)
    np.save(folder / "embeddings.npy", embeddings.astype(np.float32))
    with (folder / "ids.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "mol_id", "source_id", "smiles", "label", "scaffold"])
        for row, (mol_id, label) in enumerate(zip(mol_ids, labels, strict=True)):
            writer.writerow([row, int(mol_id), f"SAMPL.csv:{mol_id}", "C", float(label), ""])
    return folder


def test_probe_joins_embeddings_to_the_finetuning_split_by_mol_id(
    probe: ModuleType, tmp_path: Path
) -> None:
    # Entry 3 is unparsable: mol_ids then differ from positions in the usable list.
    written = write_moleculenet_csv(tmp_path / "SAMPL.csv", "freesolv", n=40, invalid={3: "C1CC"})
    data = MoleculeNetDataModule(
        str(written.path), preset="freesolv", num_workers=0, progress=False,
        cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    split = probe.split_mol_ids(data)
    assert data.split_indices is not None
    assert {k: len(v) for k, v in split.items()} == {
        k: len(v) for k, v in data.split_indices._asdict().items()
    }
    joined = np.concatenate(list(split.values()))
    assert sorted(joined.tolist()) == [i for i in range(40) if i != 3]
    # The ids name the molecules of each split: their labels are the datamodule's.
    test_labels = [float(data.data[int(i)].y) for i in data.split_indices.test]
    assert written.labels[split["test"], 0] == pytest.approx(test_labels, abs=1e-3)

    rng = np.random.default_rng(0)
    mol_ids = joined[rng.permutation(len(joined))]  # embed's row order need not be the split's
    labels = written.labels[mol_ids, 0]
    noise = rng.normal(size=(len(mol_ids), 6))
    informative = np.column_stack([labels, noise])
    exact = probe.probe_embeddings(
        write_embed_folder(tmp_path / "exact", mol_ids, labels, informative), split
    )
    assert exact["test_rmse"] < 0.05 * np.std(labels)
    assert exact["sizes"] == {k: len(v) for k, v in split.items()}
    uninformative = probe.probe_embeddings(
        write_embed_folder(tmp_path / "noise", mol_ids, labels, noise), split
    )
    assert uninformative["test_rmse"] > 0.3 * np.std(labels)

    order = np.argsort(mol_ids)
    sorted_folder = write_embed_folder(
        tmp_path / "sorted", mol_ids[order], labels[order], informative[order]
    )
    assert probe.probe_embeddings(sorted_folder, split)["test_rmse"] == pytest.approx(
        exact["test_rmse"], rel=1e-6
    )

    lost = write_embed_folder(tmp_path / "lost", mol_ids[1:], labels[1:], informative[1:])
    with pytest.raises(ValueError, match=f"no embedding for mol_id \\[{mol_ids[0]}\\]"):
        probe.probe_embeddings(lost, split)


def test_ridge_probe_chooses_the_penalty_on_validation(
    probe: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(120, 40))
    labels = features[:, 0] + 0.5 * rng.normal(size=120)  # one useful feature, 39 distractors
    split = {"train": np.arange(0, 40), "val": np.arange(40, 80), "test": np.arange(80, 120)}
    result = probe.ridge_probe(features, labels, split)
    assert result["alpha"] in probe.ALPHAS
    assert result["alpha"] > probe.ALPHAS[0]  # 40 samples, 40 features: least squares overfits
    monkeypatch.setattr(probe, "ALPHAS", (probe.ALPHAS[0],))
    least_squares = probe.ridge_probe(features, labels, split)
    assert result["val_rmse"] < least_squares["val_rmse"]
    assert result["test_rmse"] < min(least_squares["test_rmse"], np.std(labels[split["test"]]))
    with pytest.raises(ValueError, match="finite"):
        probe.ridge_probe(np.full_like(features, np.nan), labels, split)
    with pytest.raises(ValueError, match="at least one"):
        probe.ridge_probe(features, labels, {**split, "val": np.arange(0)})

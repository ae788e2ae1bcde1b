"""Linear probe of frozen embeddings: how much of FreeSolv a ridge regression reads off them.

Fine-tuning moves every weight, so it can erase (or never need) what pre-training learned; a
probe on frozen features asks only what the encoder already holds. The features are the
mean-pooled atom embeddings that ``molssl embed`` writes (``embeddings.npy`` + ``ids.csv``);
the split is the fine-tuning runs' own (``MoleculeNetDataModule``'s scaffold split, joined on
``mol_id``), so probe and fine-tuning are judged on the same 65 test molecules.

Ridge regression on standardised features (train-split mean and std), the penalty chosen on
the validation RMSE from :data:`ALPHAS`, refit on the training split only; deterministic, so
the only noise is the split's. With 64 validation and 65 test molecules that noise is large, so
the probe is also run on :data:`BALANCED_SEEDS` seeded balanced scaffold splits (chemprop's,
same 8:1:1 fractions) and reported as mean ± std over them.

    python benchmarks/transfer/probe.py runs/transfer/embed/unicorn runs/transfer/embed/random_init
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import Ridge

from molssl.datamodules.moleculenet import MoleculeNetDataModule

__all__ = [
    "ALPHAS",
    "BALANCED_SEEDS",
    "probe_embeddings",
    "probe_splits",
    "ridge_probe",
    "split_mol_ids",
    "summarise_probes",
]

#: Ridge penalties searched on the validation split.
ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-4, 4, 17))
#: Seeds of the balanced scaffold splits the probe is repeated on.
BALANCED_SEEDS: tuple[int, ...] = tuple(range(10))


def split_mol_ids(data: MoleculeNetDataModule) -> dict[str, np.ndarray]:
    """``mol_id`` (CSV row) of each molecule in the datamodule's train, val and test splits."""
    data.setup("fit")
    assert data.split_indices is not None
    return {
        name: np.array([int(data.data[int(i)].mol_id) for i in indices], dtype=np.int64)
        for name, indices in data.split_indices._asdict().items()
    }


def probe_splits(freesolv: Path) -> dict[str, dict[str, np.ndarray]]:
    """``mol_id`` splits: ``"scaffold"`` (fine-tuning's) and ``"balanced_scaffold_<seed>"``."""
    splits: dict[str, dict[str, np.ndarray]] = {}
    for split, seed in [("scaffold", 0)] + [("balanced_scaffold", s) for s in BALANCED_SEEDS]:
        data = MoleculeNetDataModule(
            path=str(freesolv), preset="freesolv", split=split, seed=seed, num_workers=0,
            progress=False,
        )  # fmt: skip
        name = split if split == "scaffold" else f"{split}_{seed}"
        splits[name] = split_mol_ids(data)
    return splits


def summarise_probes(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The scaffold split's test RMSE and the balanced splits' mean ± std (population)."""
    balanced = [v["test_rmse"] for k, v in results.items() if k.startswith("balanced_scaffold")]
    return {
        "scaffold_test_rmse": results["scaffold"]["test_rmse"],
        "scaffold_val_rmse": results["scaffold"]["val_rmse"],
        "balanced_test_rmse_mean": float(np.mean(balanced)),
        "balanced_test_rmse_std": float(np.std(balanced)),
        "balanced_n": len(balanced),
    }


def rmse(prediction: np.ndarray, target: np.ndarray) -> float:
    """Root-mean-square error."""
    return math.sqrt(float(np.mean((prediction - target) ** 2)))


def ridge_probe(
    features: np.ndarray, labels: np.ndarray, split: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Ridge on ``features[split['train']]``, penalty chosen on val, RMSE on every split.

    ``split`` holds row positions into ``features`` and ``labels``.

    Raises:
        ValueError: Non-finite features or labels, or an empty split.
    """
    if not (np.isfinite(features).all() and np.isfinite(labels).all()):
        raise ValueError("features and labels must be finite")
    if any(len(split[name]) == 0 for name in ("train", "val", "test")):
        raise ValueError("every split needs at least one molecule")
    train = features[split["train"]]
    mean, std = train.mean(axis=0), train.std(axis=0)
    std[std == 0] = 1.0
    scaled = (features - mean) / std

    def fit(alpha: float) -> Ridge:
        return Ridge(alpha=alpha).fit(scaled[split["train"]], labels[split["train"]])

    val_rmse = {
        alpha: rmse(fit(alpha).predict(scaled[split["val"]]), labels[split["val"]])
        for alpha in ALPHAS
    }
    alpha = min(val_rmse, key=val_rmse.__getitem__)
    model = fit(alpha)
    scores = {
        f"{name}_rmse": rmse(model.predict(scaled[rows]), labels[rows])
        for name, rows in split.items()
    }
    return {"alpha": alpha, **scores, "sizes": {name: len(rows) for name, rows in split.items()}}


def read_embeddings(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mol_id, label, embedding)`` rows of a ``molssl embed`` output folder."""
    embeddings = np.load(folder / "embeddings.npy")
    with (folder / "ids.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if len(rows) != len(embeddings):
        raise ValueError(f"{folder}: {len(rows)} ids for {len(embeddings)} embeddings")
    mol_ids = np.array([int(row["mol_id"]) for row in rows], dtype=np.int64)
    labels = np.array([float(row["label"]) for row in rows], dtype=np.float64)
    return mol_ids, labels, embeddings.astype(np.float64)


def probe_embeddings(folder: Path, split_ids: dict[str, np.ndarray]) -> dict[str, Any]:
    """:func:`ridge_probe` of a ``molssl embed`` folder on the splits given by ``mol_id``.

    Raises:
        ValueError: A molecule of the split has no embedding (it failed in ``embed``).
    """
    mol_ids, labels, embeddings = read_embeddings(folder)
    position = {int(mol_id): row for row, mol_id in enumerate(mol_ids)}
    missing = [int(i) for ids in split_ids.values() for i in ids if int(i) not in position]
    if missing:
        raise ValueError(f"{folder}: no embedding for mol_id {missing[:10]} ({len(missing)})")
    split = {
        name: np.array([position[int(i)] for i in ids], dtype=np.int64)
        for name, ids in split_ids.items()
    }
    return ridge_probe(embeddings, labels, split)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", type=Path, nargs="+", help="molssl embed output folders")
    default = Path(__file__).resolve().parents[3] / "shared" / "data" / "freesolv.csv"
    parser.add_argument("--freesolv", type=Path, default=default)
    args = parser.parse_args()
    splits = probe_splits(args.freesolv)
    results = {}
    for folder in args.folders:
        by_split = {name: probe_embeddings(folder, ids) for name, ids in splits.items()}
        results[str(folder)] = {"summary": summarise_probes(by_split), "splits": by_split}
    print(json.dumps({k: v["summary"] for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()

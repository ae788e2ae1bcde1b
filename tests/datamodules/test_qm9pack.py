"""QM9DataModule on qm9pack's layout: labels with their molecule, units, failures, label budgets."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml

from molssl.cli import run_trainer_command
from molssl.datamodules.qm9 import QM9DataModule
from molssl.datamodules.qm9_raw import HARTREE_TO_MEV, QM9_TARGETS
from molssl.datamodules.sources.entry import SourceError
from molssl.datamodules.sources.qm9pack import QM9PACK_TARGET_COLUMNS
from tests.datamodules.qm9pack_files import QM9PACK_HEADER, qm9pack_labels, write_qm9pack

N = 24


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> object:
    written = write_qm9pack(tmp_path_factory.mktemp("qm9pack"), n=N, parts=3)
    # Row 3 of part 2 names a molecule its coordinates are not: it must fail alone.
    path = written.files[1]
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    column = QM9PACK_HEADER.index("SMILES")
    k = int(rows[3][QM9PACK_HEADER.index("Index")])
    rows[3][column] = "CC"
    with open(path, "w", newline="") as handle:
        csv.writer(handle, quoting=csv.QUOTE_NONNUMERIC).writerows(rows)
    written.broken = k  # type: ignore[attr-defined]
    return written


def _module(root: Path, cache: Path, **kwargs: object) -> QM9DataModule:
    dm = QM9DataModule(root=root, cache_dir=cache, batch_size=4, **kwargs)
    dm.setup("fit")
    return dm


def test_every_label_stays_with_its_molecule_in_the_paper_units(files, tmp_path: Path) -> None:
    dm = _module(files.root, tmp_path / "cache")
    stats = dm.stats()
    assert stats["layout"] == "qm9pack"
    assert stats["read"] == N == stats["ok"] + stats["failed"]
    assert stats["failed"] == 1 and stats["failures"][0]["mol_id"] == files.broken - 1
    assert stats["failures"][0]["reason"] == "composition_mismatch"
    scale = {name: HARTREE_TO_MEV if name not in ("mu", "alpha", "r2", "Cv") else 1.0
             for name in QM9_TARGETS}  # fmt: skip
    assert len(dm.data) == N - 1
    for data in dm.data:
        k = int(data.mol_id) + 1
        assert k != files.broken
        assert data.z.tolist() == files.elements[k]
        np.testing.assert_allclose(data.pos.double().numpy(), files.positions[k], atol=1e-5)
        labels = qm9pack_labels(k, files.elements[k])
        expected = [labels[QM9PACK_TARGET_COLUMNS[name]] * scale[name] for name in QM9_TARGETS]
        np.testing.assert_allclose(data.y.double().numpy()[0], expected, rtol=1e-6)


def test_label_budget_is_drawn_from_the_training_split_by_seed(files, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    full = _module(files.root, cache, targets=["homo"], split_seed=0)
    budgets = [
        _module(
            files.root, cache, targets=["homo"], split_seed=0, seed=seed, train_size=5, val_size=1
        )
        for seed in (0, 1)
    ]
    for dm in budgets:
        assert len(dm.split_indices.train) == 5
        assert set(dm.split_indices.train) <= set(full.split_indices.train)
        np.testing.assert_array_equal(dm.split_indices.test, full.split_indices.test)
        assert dm.split_indices.val[0] in full.split_indices.val
    assert set(budgets[0].split_indices.train) != set(budgets[1].split_indices.train)
    # Same split and validation molecule for both seeds: only the labelled subset moves.
    np.testing.assert_array_equal(budgets[0].split_indices.val, budgets[1].split_indices.val)
    half = _module(files.root, cache, split_seed=0, train_size=0.5)
    assert len(half.split_indices.train) == len(full.split_indices.train) // 2
    with pytest.raises(ValueError, match="more molecules than"):
        _module(files.root, cache, split_seed=0, train_size=len(full.split_indices.train) + 1)


def test_a_missing_qm9pack_package_is_one_line_naming_the_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(SourceError) as error:
        QM9DataModule(root="qm9pack")
    assert "pip install qm9pack" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(("given", "parsed"), [("1000", 1000), ("1", 1), ("0.25", 0.25)])
def test_a_count_stays_a_count_on_the_command_line(
    given: str, parsed: float, capsys: pytest.CaptureFixture[str]
) -> None:
    config = Path(__file__).parents[2] / "configs" / "finetune" / "qm9_homo.yaml"
    with pytest.raises(SystemExit):
        run_trainer_command(
            [
                "fit",
                "--config",
                str(config),
                f"--data.init_args.train_size={given}",
                "--print_config",
            ]
        )
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "train_size" in line]
    value = line.split(":", 1)[1].strip()
    assert value == given and type(yaml.safe_load(value)) is type(parsed)

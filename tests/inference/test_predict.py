"""``molssl predict`` and ``molssl.load(...).predict``: every row kept, in order; same numbers.

A tiny FreeSolv model is fine-tuned through ``molssl fit``; new molecules (valid ones among an
invalid SMILES, an empty cell and an element the force fields lack) are predicted from the
checkpoint alone. The output keeps every input row in order, with the reason for each failure;
the Python API gives the command line's numbers; and predicting the training file reproduces
``molssl test``'s RMSE on the test split, so the featurisation is the training one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import molssl
from molssl.cli import main
from molssl.datamodules.moleculenet import MoleculeNetDataModule
from molssl.inference.model import UnsupportedCheckpointError
from tests.inference.finetuned import (
    NEW_MOLECULES,
    fit_tiny_finetune,
    read_predictions,
    write_new_csv,
)

pytestmark = pytest.mark.usefixtures("isolated_cli")


@pytest.fixture(scope="module")
def freesolv(tmp_path_factory: pytest.TempPathFactory):
    """``(last.ckpt, the training CSV)`` of a one-epoch FreeSolv fine-tune."""
    return fit_tiny_finetune(tmp_path_factory.mktemp("freesolv"))


def predict_cli(ckpt: Path, source: Path, output: Path, *extra: str) -> list[dict[str, str]]:
    main(["predict", "--ckpt", str(ckpt), "--input", str(source), "--output", str(output),
          "--no-progress", "--accelerator", "cpu", *extra])  # fmt: skip
    return read_predictions(output)


def test_every_row_in_input_order_with_the_reason_of_each_failure(
    freesolv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt, _ = freesolv
    rows = predict_cli(ckpt, write_new_csv(tmp_path / "new.csv"), tmp_path / "out" / "p.csv")
    assert len(rows) == len(NEW_MOLECULES)
    assert list(rows[0]) == ["id", "smiles", "expt", "error"]  # named after the target
    for row, (name, smiles, reason) in zip(rows, NEW_MOLECULES, strict=True):
        assert (row["id"], row["smiles"]) == (name, smiles)
        if reason is None:
            assert row["error"] == "" and math.isfinite(float(row["expt"]))
        else:
            assert row["error"].startswith(f"{reason}: ") and row["expt"] == ""
    out = capsys.readouterr().out
    assert "7 rows, 4 predicted, 3 failed" in out and "written to" in out


def test_a_smiles_file_keeps_its_blank_lines_and_names(freesolv, tmp_path: Path) -> None:
    ckpt, _ = freesolv
    source = tmp_path / "new.smi"
    source.write_text("CCO ethanol\n\nC1CC broken\nc1ccccc1O\n")
    rows = predict_cli(ckpt, source, tmp_path / "p.csv")
    assert [row["id"] for row in rows] == ["ethanol", "new.smi:1", "broken", "new.smi:3"]
    assert [row["error"].split(":")[0] for row in rows] == ["", "empty_input", "invalid_smiles", ""]


def test_the_python_api_gives_the_command_lines_numbers(freesolv, tmp_path: Path) -> None:
    ckpt, _ = freesolv
    rows = predict_cli(ckpt, write_new_csv(tmp_path / "new.csv"), tmp_path / "p.csv")
    model = molssl.load(ckpt)
    result = model.predict([smiles for _, smiles, _ in NEW_MOLECULES], accelerator="cpu")
    assert result.columns == model.task_names == ["expt"]
    assert result.values.shape == (len(NEW_MOLECULES), 1)
    for row, value, error in zip(rows, result.values[:, 0], result.errors, strict=True):
        assert (error is None) == (row["error"] == "")
        if error is None:
            assert value == pytest.approx(float(row["expt"]), rel=1e-6, abs=1e-6)
        else:
            # The same reason; the message of a file's row names its file and line.
            assert math.isnan(value) and error.split(":")[0] == row["error"].split(":")[0]
    # Not a string: a failed row, not an exception.
    odd = model.predict(["CCO", None, 3], accelerator="cpu")
    assert odd.ok.tolist() == [True, False, False]


def test_predicting_the_training_file_reproduces_the_test_rmse(freesolv, tmp_path: Path) -> None:
    ckpt, written = freesolv
    main(["test", "--ckpt", str(ckpt), "--trainer.default_root_dir", str(tmp_path / "eval")])
    logged = json.loads((ckpt.parent / "metrics.json").read_text())["metrics"]["test/rmse"]

    rows = predict_cli(ckpt, written.path, tmp_path / "p.csv")
    assert len(rows) == len(written.smiles)  # the invalid row and the blank line included
    model = molssl.load(ckpt)
    data = MoleculeNetDataModule(**model.loaded.data_args)
    data.setup("test")
    test_rows = [int(data.data[i].mol_id) for i in data.split_indices.test]
    predicted = np.array([float(rows[r]["expt"]) for r in test_rows])
    labels = written.labels[test_rows, 0]
    known = ~np.isnan(labels)
    rmse = float(np.sqrt(np.mean((predicted[known] - labels[known]) ** 2)))
    assert rmse == pytest.approx(logged, rel=1e-4)


def test_a_two_target_classification_csv(tmp_path: Path) -> None:
    # The BBBP config on a ClinTox-layout file: num_tasks (2) and the task type come from the
    # data; predictions are probabilities named after the two label columns.
    ckpt, _ = fit_tiny_finetune(tmp_path / "clintox", "bbbp.yaml", preset="clintox")
    saved = torch.load(ckpt, weights_only=True)
    assert saved["hyper_parameters"]["num_tasks"] == 2
    model = molssl.load(ckpt)
    assert model.task == "classification" and model.task_names == ["FDA_APPROVED", "CT_TOX"]
    result = model.predict(["CCO", "c1ccccc1O", "C1CC"], accelerator="cpu")
    assert result.columns == ["FDA_APPROVED", "CT_TOX"]
    usable = result.values[:2]
    assert ((usable >= 0) & (usable <= 1)).all()
    assert np.isnan(result.values[2]).all() and result.errors[2].startswith("invalid_smiles")


def test_embeddings_of_a_finetuned_model_keep_failed_rows(freesolv) -> None:
    ckpt, _ = freesolv
    model = molssl.load(ckpt)
    result = model.embed(["CCO", "C1CC", "c1ccccc1O"], accelerator="cpu")
    assert result.values.shape == (3, model.module.encoder.out_dim)
    assert np.isfinite(result.values[[0, 2]]).all() and np.isnan(result.values[1]).all()


def test_bad_input_is_one_line_and_writes_nothing(
    freesolv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt, _ = freesolv
    output = tmp_path / "p.csv"
    for source in (tmp_path / "absent.csv", tmp_path / "molecules.xyz"):
        with pytest.raises(SystemExit) as exit_info:
            main(["predict", "--ckpt", str(ckpt), "--input", str(source), "--output", str(output)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("molssl predict: error: ") and len(err.strip().splitlines()) == 1
        assert str(source) in err
    assert not output.exists() and list(tmp_path.glob(".p.csv*")) == []


def test_a_pretraining_checkpoint_embeds_but_does_not_predict(tmp_path: Path) -> None:
    from tests.analysis.embed_fixtures import fit_tiny_unicorn

    ckpt = fit_tiny_unicorn(tmp_path / "unicorn", tmp_path / "cache")
    model = molssl.load(ckpt)
    with pytest.raises(UnsupportedCheckpointError, match="embed"):
        model.predict(["CCO"])
    smiles = ["CCO", "C1CC", "c1ccccc1O", "CC(=O)O"]
    source = tmp_path / "mols.smi"
    source.write_text("".join(f"{s} m{i}\n" for i, s in enumerate(smiles)))
    main(["embed", "--ckpt", str(ckpt), "--input", str(source), "--output", str(tmp_path / "e")])
    from_cli = np.load(tmp_path / "e" / "embeddings.npy")
    embedded = model.embed(smiles, accelerator="cpu")
    assert embedded.ok.tolist() == [True, False, True, True]
    np.testing.assert_allclose(embedded.values[embedded.ok], from_cli, rtol=1e-5, atol=1e-6)

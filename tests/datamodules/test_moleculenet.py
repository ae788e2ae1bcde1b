"""MoleculeNetDataModule: presets, label alignment after failures, cache, splits, errors."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from molssl.chem.scaffold import murcko_scaffold
from molssl.datamodules import MoleculeNetDataModule
from molssl.datamodules.moleculenet_csv import MoleculeNetFormatError, read_label_table
from molssl.datamodules.moleculenet_presets import PRESETS, get_preset
from molssl.datamodules.splits import scaffold_split
from molssl.errors import UserError
from tests.datamodules.moleculenet_files import (
    STANDARD_HEADERS,
    TASK_COLUMNS,
    WrittenCsv,
    canonical,
    write_moleculenet_csv,
)

#: Fast settings: no force-field relaxation, one process, no progress bar.
FAST = {"optimize_conformers": False, "prepare_workers": 1, "progress": False}
#: Entries 3 and 7 invalid, 10 blank, 12 an unsupported (dummy) element.
BAD = {3: "C1CC(", 7: "not_a_smiles", 12: "*C(=O)O"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("molssl-cache")


@pytest.fixture(scope="module")
def freesolv(tmp_path_factory: pytest.TempPathFactory) -> WrittenCsv:
    folder = tmp_path_factory.mktemp("freesolv")
    return write_moleculenet_csv(folder / "SAMPL.csv", "freesolv", n=44, invalid=BAD, blank=[10])


@pytest.fixture(scope="module")
def freesolv_module(freesolv: WrittenCsv, cache: Path) -> MoleculeNetDataModule:
    module = MoleculeNetDataModule(
        str(freesolv.path), preset="freesolv", cache_dir=str(cache), batch_size=8, **FAST
    )
    module.setup("fit")
    return module


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_reads_its_standard_layout(preset: str, tmp_path: Path) -> None:
    name = get_preset(preset).file_name
    written = write_moleculenet_csv(tmp_path / name, preset, n=12, missing_every=5)
    spec = get_preset(preset)
    table = read_label_table(
        written.path, spec.smiles_column, spec.target_columns, spec.task_type == "classification"
    )
    assert table.task_names == list(TASK_COLUMNS[preset])
    assert table.smiles == written.smiles
    assert table.lines == written.lines
    np.testing.assert_array_equal(table.labels, written.labels)
    assert np.isnan(table.labels).any()  # blank cells are missing labels


def test_preset_names_and_column_counts() -> None:
    assert len(get_preset("tox21").target_columns or ()) == 12
    assert len(get_preset("SIDER").target_columns or ()) == 27
    assert len(get_preset("muv").target_columns or ()) == 17
    assert get_preset("lipo").name == "lipophilicity"
    assert get_preset("bace").smiles_column == "mol"
    assert get_preset("bace_regression").task_type == "regression"
    assert get_preset("toxcast").target_columns is None
    with pytest.raises(ValueError, match="unknown MoleculeNet preset 'pcqm'"):
        get_preset("pcqm")


def test_failed_rows_drop_with_their_labels(
    freesolv: WrittenCsv, freesolv_module: MoleculeNetDataModule
) -> None:
    stats = freesolv_module.stats()
    assert (stats["read"], stats["ok"], stats["failed"]) == (44, 40, 4)
    assert stats["failures_by_reason"] == {
        "invalid_smiles": 2,
        "empty_input": 1,
        "unsupported_element": 1,
    }
    # Entries 3 and 7 are on CSV lines 5 and 9 (line 1 is the header).
    assert stats["failed_lines_by_reason"]["invalid_smiles"] == [5, 9]
    assert stats["failed_lines_by_reason"]["empty_input"] == [12]
    assert stats["failed_lines_by_reason"]["unsupported_element"] == [14]
    kept = [i for i in range(44) if i not in {3, 7, 10, 12}]
    assert [int(d.mol_id) for d in freesolv_module.data] == kept
    for data in freesolv_module.data:
        mol_id = int(data.mol_id)
        assert data.smiles == canonical(freesolv.smiles[mol_id])
        np.testing.assert_allclose(data.y.numpy(), freesolv.labels[mol_id : mol_id + 1], 1e-6)


def test_batches_carry_graph_3d_and_labels(freesolv_module: MoleculeNetDataModule) -> None:
    batch = next(iter(freesolv_module.train_dataloader()))
    assert batch.y.shape == (batch.num_graphs, 1) and batch.y.dtype == torch.float32
    assert batch.pos.shape == (batch.num_nodes, 3)
    assert batch.x.shape == (batch.num_nodes, 7) and batch.edge_attr.shape[1] == 4
    assert batch.edge_index.max() < batch.num_nodes
    assert len(batch.smiles) == batch.num_graphs and batch.mol_id.shape == (batch.num_graphs,)
    assert freesolv_module.task_type == "regression"
    assert freesolv_module.task_names == ["expt"]


def test_manifest_records_failures_and_second_setup_uses_cache(
    freesolv: WrittenCsv, freesolv_module: MoleculeNetDataModule, cache: Path
) -> None:
    entry = Path(freesolv_module.stats()["cache_entry"])
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["read"] == 44 and manifest["ok"] == 40
    assert sorted(f["line"] for f in manifest["failures"]) == [5, 9, 12, 14]
    again = MoleculeNetDataModule(
        str(freesolv.path), preset="freesolv", cache_dir=str(cache), **FAST
    )
    again.setup()
    assert again.stats()["from_cache"] is True
    assert (
        again.stats()["failed_lines_by_reason"] == freesolv_module.stats()["failed_lines_by_reason"]
    )
    for a, b in zip(again.data, freesolv_module.data, strict=True):
        torch.testing.assert_close(a.pos, b.pos)
        torch.testing.assert_close(a.y, b.y, equal_nan=True)


def test_cache_key_follows_file_columns_and_conformer_settings(
    freesolv: WrittenCsv, tmp_path: Path
) -> None:
    def key(path: Path, **kwargs: object) -> str:
        module = MoleculeNetDataModule(
            str(path), preset="freesolv", cache_dir=str(tmp_path), **FAST | kwargs
        )
        return json.dumps(module.cache_fields(), sort_keys=True)

    base = key(freesolv.path)
    assert key(freesolv.path) == base
    assert key(freesolv.path, conformer_seed=1) != base
    assert key(freesolv.path, target_columns=["calc"]) != base
    assert key(freesolv.path, max_heavy_atoms=20) != base
    changed = write_moleculenet_csv(tmp_path / "SAMPL.csv", "freesolv", n=44, first=1)
    assert key(changed.path) != base


def test_summary_names_failed_lines(freesolv: WrittenCsv, cache: Path, caplog) -> None:
    module = MoleculeNetDataModule(
        str(freesolv.path), preset="freesolv", cache_dir=str(cache), **FAST
    )
    with caplog.at_level(logging.INFO):
        module.setup()
    text = caplog.text
    assert "40 of 44 molecules usable" in text
    assert "invalid_smiles 2: line 5, 9" in text


def test_scaffold_split_is_the_deterministic_standard_for_every_seed(
    freesolv: WrittenCsv, freesolv_module: MoleculeNetDataModule, cache: Path
) -> None:
    smiles = [d.smiles for d in freesolv_module.data]
    expected = scaffold_split(smiles, (0.8, 0.1, 0.1))
    split = freesolv_module.split_indices
    assert split is not None
    for ours, theirs in zip(split, expected, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    scaffolds = [murcko_scaffold(s) for s in smiles]
    sides = [{scaffolds[i] for i in part} for part in split]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    other_seed = MoleculeNetDataModule(
        str(freesolv.path), preset="freesolv", cache_dir=str(cache), seed=7, **FAST
    )
    other_seed.setup()
    assert other_seed.split_indices is not None
    np.testing.assert_array_equal(other_seed.split_indices.test, split.test)


@pytest.mark.parametrize("split", ["seeded_scaffold", "random", "balanced_scaffold"])
def test_seeded_splits_change_with_the_seed(split: str, freesolv: WrittenCsv, cache: Path) -> None:
    tests = []
    for seed in (0, 0, 1, 2):
        module = MoleculeNetDataModule(
            str(freesolv.path), preset="freesolv", cache_dir=str(cache), split=split,
            seed=seed, **FAST,
        )  # fmt: skip
        module.setup()
        assert module.split_indices is not None
        tests.append(module.split_indices.test.tolist())
        if split != "random":
            scaffolds = [murcko_scaffold(d.smiles) for d in module.data]
            train = {scaffolds[i] for i in module.split_indices.train}
            assert not train & {scaffolds[i] for i in module.split_indices.test}
    assert tests[0] == tests[1]
    assert tests[0] != tests[2] or tests[0] != tests[3]


def test_regression_statistics_use_the_train_split(
    freesolv: WrittenCsv, freesolv_module: MoleculeNetDataModule
) -> None:
    split = freesolv_module.split_indices
    assert split is not None
    ids = [int(freesolv_module.data[i].mol_id) for i in split.train]
    labels = freesolv.labels[ids, 0]
    stats = freesolv_module.target_statistics()
    assert float(stats["mean"][0]) == pytest.approx(labels.mean(), rel=1e-5)
    assert float(stats["std"][0]) == pytest.approx(labels.std(), rel=1e-4)


def test_classification_with_missing_labels(tmp_path: Path) -> None:
    written = write_moleculenet_csv(tmp_path / "tox21.csv.gz", "tox21", n=30, missing_every=4)
    module = MoleculeNetDataModule(
        str(written.path), preset="tox21", cache_dir=str(tmp_path), split="random", **FAST
    )
    module.setup()
    assert module.task_type == "classification" and len(module.task_names) == 12
    assert module.split_indices is not None
    ids = [int(module.data[i].mol_id) for i in module.split_indices.train]
    expected = np.nanmean(written.labels[ids], axis=0)
    stats = module.target_statistics()
    np.testing.assert_allclose(stats["positive_fraction"].numpy(), expected, rtol=1e-6)
    batch = next(iter(module.val_dataloader()))
    ids = batch.mol_id.tolist()
    np.testing.assert_array_equal(np.isnan(batch.y.numpy()), np.isnan(written.labels[ids]))


def test_free_form_columns(tmp_path: Path) -> None:
    path = tmp_path / "assay.csv"
    path.write_text(
        "id,structure,pka,logd\n"
        "a,CCO,15.9,-0.3\n"
        "b,c1ccccc1O,10.0,\n"
        "c,CC(=O)O,4.76,-0.2\n"
        "d,CCN,10.7,-0.1\n"
        "e,c1ccncc1,5.2,0.6\n"
    )
    module = MoleculeNetDataModule(
        str(path), smiles_column="structure", target_columns=["logd", "pka"],
        task_type="regression", split="random", split_fractions=(0.6, 0.2, 0.2),
        cache_dir=str(tmp_path), **FAST,
    )  # fmt: skip
    module.setup()
    assert module.task_names == ["logd", "pka"]
    by_id = {int(d.mol_id): d.y.numpy()[0] for d in module.data}
    np.testing.assert_array_equal(by_id[1], [np.nan, 10.0])
    np.testing.assert_allclose(by_id[2], [-0.2, 4.76], rtol=1e-6)


def test_constructor_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="task_type"):
        MoleculeNetDataModule(str(tmp_path / "x.csv"))
    with pytest.raises(ValueError, match="unknown split"):
        MoleculeNetDataModule(str(tmp_path / "x.csv"), preset="bbbp", split="stratified")
    with pytest.raises(UserError, match="list of column names"):
        MoleculeNetDataModule(str(tmp_path / "x.csv"), preset="bbbp", target_columns="p_np")


def _format_error(path: Path, preset: str = "freesolv") -> MoleculeNetFormatError:
    spec = get_preset(preset)
    with pytest.raises(MoleculeNetFormatError) as info:
        read_label_table(
            path, spec.smiles_column, spec.target_columns, spec.task_type == "classification"
        )
    assert str(path) in str(info.value)
    return info.value


def test_empty_and_missing_column_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert _format_error(empty).reason == "empty_file"
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("iupac,smiles,calc\nethanol,CCO,-5.0\n")
    error = _format_error(wrong)
    assert (error.reason, error.line, error.column) == ("missing_column", 1, "expt")
    with pytest.raises(MoleculeNetFormatError, match="no such file"):
        read_label_table(tmp_path / "absent.csv", "smiles", None, False)


def test_label_errors_name_line_and_column(tmp_path: Path) -> None:
    written = write_moleculenet_csv(tmp_path / "SAMPL.csv", "freesolv", n=6)
    lines = written.path.read_text().splitlines()
    lines[4] = lines[4].rsplit(",", 2)[0] + ",n/a,-1.5"
    written.path.write_text("\n".join(lines) + "\n")
    error = _format_error(written.path)
    assert (error.reason, error.line, error.column) == ("non_numeric_label", 5, "expt")
    assert "'n/a'" in str(error)
    bbbp = write_moleculenet_csv(tmp_path / "BBBP.csv", "bbbp", n=6)
    text = bbbp.path.read_text().splitlines()
    fields = text[3].split(",")
    fields[2] = "2"
    text[3] = ",".join(fields)
    bbbp.path.write_text("\n".join(text) + "\n")
    error = _format_error(bbbp.path, "bbbp")
    assert (error.reason, error.line, error.column) == ("invalid_class_label", 4, "p_np")


def test_truncated_and_ragged_files(tmp_path: Path) -> None:
    written = write_moleculenet_csv(tmp_path / "SAMPL.csv", "freesolv", n=8)
    content = written.path.read_bytes()
    cut = tmp_path / "cut.csv"
    cut.write_bytes(content[: content.rindex(b",", 0, len(content) - 12)])
    error = _format_error(cut)
    assert (error.reason, error.line) == ("truncated_file", 9)
    ragged = tmp_path / "ragged.csv"
    lines = content.decode().splitlines()
    lines[3] += ",extra"
    ragged.write_text("\n".join(lines) + "\n")
    error = _format_error(ragged)
    assert (error.reason, error.line) == ("ragged_row", 4)
    gz = tmp_path / "cut.csv.gz"
    gz.write_bytes(gzip.compress(content * 50)[:300])
    assert _format_error(gz).reason == "truncated_file"


def test_header_only_file_has_no_usable_molecule(tmp_path: Path) -> None:
    path = tmp_path / "SAMPL.csv"
    path.write_text(",".join(STANDARD_HEADERS["freesolv"]) + "\n")
    module = MoleculeNetDataModule(str(path), preset="freesolv", cache_dir=str(tmp_path), **FAST)
    with pytest.raises(ValueError, match="no usable molecule"):
        module.setup()


def _free_form(
    path: Path, cache: Path, targets: list[str], **kwargs: object
) -> MoleculeNetDataModule:
    module = MoleculeNetDataModule(
        str(path), target_columns=targets, task_type="regression", split="random",
        split_fractions=(0.6, 0.2, 0.2), cache_dir=str(cache), **{**FAST, **kwargs},
    )  # fmt: skip
    module.setup()
    return module


def test_a_smiles_cell_with_whitespace_fails_its_row_with_its_label(tmp_path: Path) -> None:
    # RDKit would read "c1ccccc1 O" as benzene (named O): phenol's label on benzene. The row
    # fails instead; no label moves.
    rows = ["CCO,1.0", "c1ccccc1 O,2.0", '"CC\nO",3.0', "CCN,4.0", "CCCC,5.0", "c1ccncc1,6.0"]
    path = tmp_path / "ws.csv"
    path.write_text("smiles,y\n" + "\n".join(rows) + "\n")
    module = _free_form(path, tmp_path, ["y"])
    kept = {int(d.mol_id): (d.smiles, float(d.y[0, 0])) for d in module.data}
    assert kept == {0: ("CCO", 1.0), 3: ("CCN", 4.0), 4: ("CCCC", 5.0), 5: ("c1ccncc1", 6.0)}
    stats = module.stats()
    assert stats["read"] == 6 == stats["ok"] + stats["failed"]
    assert stats["failed_lines_by_reason"] == {"invalid_smiles": [3, 4]}
    assert all("contains whitespace" in f["message"] for f in stats["failures"])


def test_columns_match_in_any_case_like_prepare(tmp_path: Path) -> None:
    path = tmp_path / "caps.csv"
    path.write_text("SMILES,Y\nCCO,1.0\nCCN,2.0\nCCCC,3.0\nc1ccccc1,4.0\nCC(=O)O,5.0\n")
    module = _free_form(path, tmp_path, ["y"])  # smiles_column defaults to "smiles"
    assert module.task_names == ["Y"] and len(module.data) == 5
    assert sorted(d.smiles for d in module.data) == sorted(
        ["CCO", "CCN", "CCCC", "c1ccccc1", "CC(=O)O"]
    )


def test_a_task_without_any_label_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "blank.csv"
    path.write_text("smiles,y,z\nCCO,1.0,\nCCN,2.0,\nCCCC,3.0,\nc1ccccc1,4.0,\nCCCl,5.0,\n")
    with pytest.raises(MoleculeNetFormatError, match="no label in any of the 5 rows") as info:
        _free_form(path, tmp_path, ["y", "z"])
    assert (info.value.reason, info.value.column) == ("no_labels", "z")
    # Labels only on rows whose molecule fails: no usable molecule has one.
    path.write_text("smiles,y,z\nCCO,1.0,\nCCN,2.0,\nCCCC,3.0,\nc1ccccc1,4.0,\nC1CC(,5.0,7\n")
    with pytest.raises(UserError, match="column 'z': none of the 4 usable molecules has a label"):
        _free_form(path, tmp_path, ["y", "z"])


@pytest.mark.parametrize(("cell", "hint"), [("\u22121.5", "U\\+2212"), ("inf", "not finite")])
def test_a_typographic_minus_or_infinite_label_names_its_cell(
    tmp_path: Path, cell: str, hint: str
) -> None:
    path = tmp_path / "minus.csv"
    path.write_text(f"smiles,y\nCCO,1.0\nCCN,{cell}\n")
    with pytest.raises(MoleculeNetFormatError, match=hint) as info:
        read_label_table(path, "smiles", ["y"], False)
    assert (info.value.line, info.value.column) == (3, "y")


def test_no_usable_molecule_or_an_empty_split_is_one_user_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("smiles,y\n" + "".join(f"xx{i}yy,{i}\n" for i in range(6)))
    with pytest.raises(UserError, match=r"no usable molecule .* invalid_smiles 6: line 2, 3"):
        _free_form(path, tmp_path, ["y"])
    path.write_text("smiles,y\n" + "".join(f"c1ccccc1{'C' * i},{i}\n" for i in range(1, 6)))
    with pytest.raises(
        UserError, match=r"scaffold split of 5 molecules .* leaves train and val empty"
    ):
        MoleculeNetDataModule(
            str(path), target_columns=["y"], task_type="regression", cache_dir=str(tmp_path), **FAST
        ).setup()

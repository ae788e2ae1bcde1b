"""QM9 raw files → Data: units, exclusion, alignment by name, sanitisation policy, split, cache."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from rdkit import Chem

from molssl.datamodules.qm9 import (
    QM9_SPLIT_SIZES,
    QM9DataModule,
    element_counts,
    fit_atomref,
)
from molssl.datamodules.qm9_parse import parse_qm9, parse_qm9_block
from molssl.datamodules.qm9_raw import (
    HARTREE_TO_MEV,
    QM9_TARGETS,
    QM9FormatError,
    iter_sdf_blocks,
    read_qm9_labels,
    read_uncharacterized,
    resolve_targets,
)
from tests.datamodules.qm9_files import CSV_COLUMNS, REFERENCE_HA, QM9RawFiles, write_qm9_raw

N = 24
# Paper target -> (csv column, factor from the file's unit).
TARGET_COLUMNS = {
    "mu": ("mu", 1.0),
    "alpha": ("alpha", 1.0),
    "homo": ("homo", HARTREE_TO_MEV),
    "lumo": ("lumo", HARTREE_TO_MEV),
    "gap": ("gap", HARTREE_TO_MEV),
    "r2": ("r2", 1.0),
    "zpve": ("zpve", HARTREE_TO_MEV),
    "U0": ("u0", HARTREE_TO_MEV),
    "U": ("u298", HARTREE_TO_MEV),
    "H": ("h298", HARTREE_TO_MEV),
    "G": ("g298", HARTREE_TO_MEV),
    "Cv": ("cv", 1.0),
}


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> QM9RawFiles:
    return write_qm9_raw(tmp_path_factory.mktemp("qm9"), n=N, uncharacterized=(3, 11))


def _copy(raw: QM9RawFiles, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(raw.root, target)
    return target


def _module(root: Path, cache: Path, **kwargs: object) -> QM9DataModule:
    dm = QM9DataModule(root=root, cache_dir=cache, batch_size=4, **kwargs)
    dm.setup("fit")
    return dm


# -- raw files --------------------------------------------------------------------------


def test_labels_are_joined_by_name_and_converted_to_the_paper_units(raw: QM9RawFiles) -> None:
    table = read_qm9_labels(raw.csv)
    assert len(table.rows) == N
    assert abs(HARTREE_TO_MEV - 27211.386) < 1e-3
    for name, written in raw.labels.items():
        row = table.values[table.rows[name]]
        for t, target in enumerate(QM9_TARGETS):
            column, factor = TARGET_COLUMNS[target]
            assert row[t] == pytest.approx(written[column] * factor, rel=1e-12)


def test_uncharacterized_layout_header_rules_and_rows(raw: QM9RawFiles, tmp_path: Path) -> None:
    assert read_uncharacterized(raw.uncharacterized_txt) == {3, 11}
    broken = tmp_path / "uncharacterized.txt"
    lines = raw.uncharacterized_txt.read_text().splitlines()
    first_row = next(i for i, line in enumerate(lines) if line.split()[:1] == ["3"])
    lines.insert(first_row + 1, "garbage in the middle")
    broken.write_text("\n".join(lines) + "\n")
    with pytest.raises(QM9FormatError, match="line") as info:
        read_uncharacterized(broken)
    assert info.value.reason == "invalid_row"
    broken.write_text("just a header\n=====\n")
    with pytest.raises(QM9FormatError) as info:
        read_uncharacterized(broken)
    assert info.value.reason == "empty_file"


def _rename_homo(lines: list[str]) -> list[str]:
    return [lines[0].replace(",homo,", ",HOMO_X,"), *lines[1:]]


def _text_label(lines: list[str]) -> list[str]:
    cells = lines[1].split(",")
    cells[CSV_COLUMNS.index("gap")] = "n/a"
    return [lines[0], ",".join(cells), *lines[2:]]


def _duplicate_row(lines: list[str]) -> list[str]:
    return [*lines, lines[1]]


def _truncated_last_row(lines: list[str]) -> list[str]:
    return [*lines[:-1], lines[-1][:20]]


def _nothing(lines: list[str]) -> list[str]:
    return []


@pytest.mark.parametrize(
    ("edit", "reason", "where"),
    [
        (_rename_homo, "missing_column", "homo"),
        (_text_label, "invalid_label", "line 2, column 'gap'"),
        (_duplicate_row, "duplicate_id", f"line {N + 2}"),
        (_truncated_last_row, "truncated_row", f"line {N + 1}"),
        (_nothing, "empty_file", "empty"),
    ],
)
def test_label_file_errors_name_the_line_and_column(
    raw: QM9RawFiles,
    tmp_path: Path,
    edit: Callable[[list[str]], list[str]],
    reason: str,
    where: str,
) -> None:
    path = tmp_path / "gdb9.sdf.csv"
    path.write_text("".join(f"{line}\n" for line in edit(raw.csv.read_text().splitlines())))
    with pytest.raises(QM9FormatError, match=where) as info:
        read_qm9_labels(path)
    assert info.value.reason == reason


def test_missing_file_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(QM9FormatError, match="not found") as info:
        read_qm9_labels(tmp_path / "absent.csv")
    assert info.value.reason == "missing_file"


def test_target_names_resolve_aliases_and_reject_unknown() -> None:
    assert resolve_targets(["u0", "HOMO", "cv", "u298"]) == ["U0", "homo", "Cv", "U"]
    assert resolve_targets(None) == list(QM9_TARGETS)
    with pytest.raises(ValueError, match="unknown QM9 target"):
        resolve_targets(["homo", "energy"])
    with pytest.raises(ValueError, match="twice"):
        resolve_targets(["homo", "HOMO"])


# -- parsing ----------------------------------------------------------------------------


def test_parse_excludes_uncharacterized_and_keeps_molecules_aligned(raw: QM9RawFiles) -> None:
    parsed = parse_qm9(raw.sdf, raw.csv, raw.uncharacterized_txt)
    assert parsed.read == N
    assert len(parsed) + len(parsed.failures) == N
    assert sorted((f.mol_id, f.reason) for f in parsed.failures) == [
        (2, "uncharacterized"),
        (10, "uncharacterized"),
    ]
    a = parsed.arrays
    assert sorted(a["mol_id"].tolist()) == [k - 1 for k in range(1, N + 1) if k not in (3, 11)]
    for i, mol_id in enumerate(a["mol_id"]):
        name = f"gdb_{mol_id + 1}"
        atoms = slice(a["atom_ptr"][i], a["atom_ptr"][i + 1])
        assert a["z"][atoms].tolist() == raw.atoms[name]
        np.testing.assert_allclose(a["pos"][atoms], raw.positions[name], atol=1e-4)
        assert a["y"][i, QM9_TARGETS.index("mu")] == pytest.approx(raw.labels[name]["mu"])
        if mol_id + 1 != raw.unsanitizable:
            # Stereo tags come from the 3D coordinates; the graph must be the written one.
            flat = [
                Chem.MolToSmiles(Chem.MolFromSmiles(text), isomericSmiles=False)
                for text in (str(a["smiles"][i]), raw.smiles[mol_id])
            ]
            assert flat[0] == flat[1]


def test_unsanitizable_molecule_is_relaxed_by_default_and_dropped_on_request(
    raw: QM9RawFiles,
) -> None:
    k = raw.unsanitizable
    assert k is not None
    relaxed = parse_qm9(raw.sdf, raw.csv, raw.uncharacterized_txt, on_sanitize_error="relax")
    assert [(f.mol_id, f.reason) for f in relaxed.relaxed] == [(k - 1, "relaxed_valence")]
    assert "valence" in relaxed.relaxed[0].message
    row = relaxed.arrays["mol_id"].tolist().index(k - 1)
    atoms = slice(relaxed.arrays["atom_ptr"][row], relaxed.arrays["atom_ptr"][row + 1])
    assert relaxed.arrays["z"][atoms].tolist() == raw.atoms[f"gdb_{k}"]  # hydrogens as given
    assert relaxed.arrays["relaxed"][row] == "valence"
    dropped = parse_qm9(raw.sdf, raw.csv, raw.uncharacterized_txt, on_sanitize_error="drop")
    assert len(dropped) == len(relaxed) - 1
    assert ("sanitization_failed", k - 1) in {(f.reason, f.mol_id) for f in dropped.failures}
    # Every other molecule keeps its own labels.
    common = np.isin(relaxed.arrays["mol_id"], dropped.arrays["mol_id"])
    np.testing.assert_array_equal(relaxed.arrays["y"][common], dropped.arrays["y"])


def test_damaged_blocks_are_recorded_failures(raw: QM9RawFiles, tmp_path: Path) -> None:
    blocks = list(iter_sdf_blocks(raw.sdf))
    texts = [b.text for b in blocks]
    texts[0] = texts[0].replace("gdb_1", "molecule one", 1)  # not a gdb_k title
    texts[1] = "gdb_2\n  garbage\n\n  not a counts line\nM  END\n"
    body = "".join(f"{t}$$$$\n" for t in texts[:-1])
    last = texts[-1]
    (tmp_path / "gdb9.sdf").write_text(body + last[: len(last) // 2])  # truncated file
    lines = raw.csv.read_text().splitlines()
    (tmp_path / "gdb9.sdf.csv").write_text(
        "\n".join(line for line in lines if not line.startswith("gdb_4,")) + "\n"
    )
    parsed = parse_qm9(tmp_path / "gdb9.sdf", tmp_path / "gdb9.sdf.csv", None)
    reasons = {f.reason: f for f in parsed.failures}
    assert set(reasons) == {"invalid_title", "invalid_record", "missing_label", "truncated_record"}
    assert (
        reasons["invalid_record"].mol_id == 1 and reasons["invalid_record"].line == blocks[1].line
    )
    assert reasons["missing_label"].mol_id == 3
    assert reasons["truncated_record"].mol_id == N - 1
    assert parsed.read == N and len(parsed) == N - 4


def test_a_missing_terminator_fails_one_molecule_and_hides_none(
    raw: QM9RawFiles, tmp_path: Path
) -> None:
    texts = [b.text for b in iter_sdf_blocks(raw.sdf)]
    # gdb_5 loses its $$$$: the text up to the next one holds gdb_5 and gdb_6.
    body = "".join(t + ("" if i == 4 else "$$$$\n") for i, t in enumerate(texts))
    (tmp_path / "gdb9.sdf").write_text(body)
    blocks = list(iter_sdf_blocks(tmp_path / "gdb9.sdf"))
    assert [b.title for b in blocks] == [f"gdb_{k}" for k in range(1, N + 1)]
    assert blocks[4].next_line == blocks[5].line
    parsed = parse_qm9(tmp_path / "gdb9.sdf", raw.csv, raw.root / "uncharacterized.txt")
    assert parsed.read == N  # every molecule counted: ok + failed == read
    assert len(parsed) + len(parsed.failures) == N
    reasons = {f.mol_id: f.reason for f in parsed.failures}
    assert reasons == {2: "uncharacterized", 10: "uncharacterized", 4: "missing_terminator"}
    assert 5 in parsed.arrays["mol_id"]  # gdb_6 is read, with its own labels
    for mol_id, y in zip(parsed.arrays["mol_id"], parsed.arrays["y"], strict=True):
        np.testing.assert_allclose(
            y[QM9_TARGETS.index("mu")], raw.labels[f"gdb_{mol_id + 1}"]["mu"]
        )


def test_block_parser_rejects_a_block_without_atoms() -> None:
    empty = "gdb_9\n     RDKit          3D\n\n  0  0  0  0  0  0  0  0  0  0999 V2000\nM  END\n"
    result = parse_qm9_block(empty)
    assert getattr(result, "reason", None) == "empty_input"


# -- datamodule -------------------------------------------------------------------------


def test_datamodule_serves_selected_targets_with_graph_features(
    raw: QM9RawFiles, tmp_path: Path
) -> None:
    dm = _module(raw.root, tmp_path / "cache", targets=["homo", "U0"])
    assert dm.task_type == "regression" and dm.task_names == ["homo", "U0"]
    stats = dm.stats()
    assert (stats["read"], stats["ok"], stats["failed"]) == (N, N - 2, 2)
    assert stats["failures_by_reason"] == {"uncharacterized": 2}
    assert stats["relaxed"] == 1 and stats["units"] == {"homo": "meV", "U0": "meV"}
    batch = next(iter(dm.train_dataloader()))
    assert batch.y.shape == (4, 2) and batch.y.dtype == torch.float32
    assert batch.x.shape[1] == 7 and batch.edge_attr.shape[1] == 4
    assert batch.pos.shape == (batch.num_nodes, 3) and batch.mol_id.shape == (4,)
    for j, mol_id in enumerate(batch.mol_id.tolist()):
        written = raw.labels[f"gdb_{mol_id + 1}"]
        expected = [written["homo"] * HARTREE_TO_MEV, written["u0"] * HARTREE_TO_MEV]
        np.testing.assert_allclose(batch.y[j].double(), expected, rtol=1e-6)


def test_split_is_proportional_on_small_files_and_paper_sized_on_the_full_set(
    raw: QM9RawFiles, tmp_path: Path
) -> None:
    assert QM9DataModule._default_sizes(130_831) == QM9_SPLIT_SIZES
    assert QM9DataModule._default_sizes(130_500) == QM9_SPLIT_SIZES
    assert QM9DataModule._default_sizes(13_083) == (10_999, 999)
    dm = _module(raw.root, tmp_path / "cache", seed=1)
    n = N - 2
    sizes = (len(dm.split_indices.train), len(dm.split_indices.val), len(dm.split_indices.test))
    assert sizes == (n * 110_000 // 130_831, 1, n - n * 110_000 // 130_831 - 1)
    again = _module(raw.root, tmp_path / "cache", seed=1)
    other = _module(raw.root, tmp_path / "cache", seed=2)
    np.testing.assert_array_equal(dm.split_indices.train, again.split_indices.train)
    assert not np.array_equal(dm.split_indices.train, other.split_indices.train)
    # A label budget is drawn from the training split; the validation and test splits stay.
    custom = _module(raw.root, tmp_path / "cache", seed=1, train_size=10, val_size=1.0)
    assert (len(custom.split_indices.train), len(custom.split_indices.val)) == (10, 1)
    assert set(custom.split_indices.train) <= set(dm.split_indices.train)
    np.testing.assert_array_equal(custom.split_indices.test, dm.split_indices.test)


def test_parse_is_cached_and_a_changed_file_misses(raw: QM9RawFiles, tmp_path: Path) -> None:
    root = _copy(raw, tmp_path)
    cache = tmp_path / "cache"
    first = _module(root, cache)
    second = _module(root, cache)
    assert not first.stats()["from_cache"] and second.stats()["from_cache"]
    assert first.stats()["cache"] == second.stats()["cache"]
    assert second.stats()["relaxed_molecules"] == first.stats()["relaxed_molecules"]
    for key, array in first.packed.arrays.items():
        np.testing.assert_array_equal(second.packed.arrays[key], array, err_msg=key)
    text = (root / "gdb9.sdf.csv").read_text()
    (root / "gdb9.sdf.csv").write_text(text.replace("gdb_7,", "gdb_7,1", 1))
    third = _module(root, cache)
    assert not third.stats()["from_cache"] and third.stats()["cache"] != first.stats()["cache"]


def test_atomref_is_fitted_on_train_and_explains_the_energies(
    raw: QM9RawFiles, tmp_path: Path
) -> None:
    dm = _module(raw.root, tmp_path / "cache", targets=["homo", "U0"], atomref=True)
    statistics = dm.target_statistics()
    atomref = statistics["atomref"].double()
    assert atomref.shape == (int(dm.packed.arrays["z"].max()) + 1, 2)
    assert torch.all(atomref[:, 0] == 0)  # homo is intensive: no reference
    train = dm.split_indices.train
    counts = element_counts(dm.packed.arrays["z"], dm.packed.arrays["atom_ptr"], atomref.shape[0])
    present = counts[train].sum(0) > 0
    for z in np.flatnonzero(present):
        # Labels are sums of REFERENCE_HA plus noise of 0.01 Ha per molecule.
        assert float(atomref[z, 1]) == pytest.approx(
            REFERENCE_HA[z] * HARTREE_TO_MEV, abs=0.05 * HARTREE_TO_MEV
        )
    y = dm.packed.targets(train)
    residual = y[:, 1] - counts[train] @ atomref[:, 1].numpy()
    assert float(statistics["std"][1]) == pytest.approx(residual.std(), rel=1e-4)
    assert float(statistics["std"][1]) < 0.05 * HARTREE_TO_MEV < y[:, 1].std()
    plain = _module(raw.root, tmp_path / "cache", targets=["homo", "U0"]).target_statistics()
    assert "atomref" not in plain
    assert float(plain["std"][1]) == pytest.approx(y[:, 1].std(), rel=1e-5)


def test_fit_atomref_recovers_exact_references() -> None:
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 6, size=(40, 10)).astype(float)
    counts[:, [0, 2, 3]] = 0  # absent elements get 0
    truth = rng.normal(size=(10, 2))
    truth[[0, 2, 3]] = 0
    np.testing.assert_allclose(fit_atomref(counts, counts @ truth), truth, atol=1e-9)


def test_bad_arguments_are_clear_errors(raw: QM9RawFiles, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="random"):
        QM9DataModule(root=raw.root, split="scaffold")
    with pytest.raises(ValueError, match="on_sanitize_error"):
        QM9DataModule(root=raw.root, on_sanitize_error="ignore")
    with pytest.raises(QM9FormatError, match="not found"):
        _module(tmp_path / "nowhere", tmp_path / "cache")
    assert set(CSV_COLUMNS) >= {column for column, _ in TARGET_COLUMNS.values()}


def test_parallel_parse_gives_the_serial_result(raw: QM9RawFiles) -> None:
    serial = parse_qm9(raw.sdf, raw.csv, raw.uncharacterized_txt)
    parallel = parse_qm9(raw.sdf, raw.csv, raw.uncharacterized_txt, workers=2)
    for key, array in serial.arrays.items():
        np.testing.assert_array_equal(parallel.arrays[key], array, err_msg=key)
    assert parallel.failures == serial.failures and parallel.relaxed == serial.relaxed


def test_the_label_join_is_counted_both_ways_and_reported_at_setup(
    raw: QM9RawFiles, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _copy(raw, tmp_path)
    lines = (root / "gdb9.sdf.csv").read_text().splitlines()
    values = lines[1].split(",", 1)[1]
    absent = [f"gdb_{k}" for k in range(101, 108)]  # 7 rows naming no SDF molecule
    kept_rows = [line for line in lines if not line.startswith(("gdb_5,", "gdb_9,"))]
    (root / "gdb9.sdf.csv").write_text(
        "\n".join([*kept_rows, *(f"{name},{values}" for name in absent)]) + "\n"
    )
    sdf_line = {block.title: block.line for block in iter_sdf_blocks(root / "gdb9.sdf")}
    with caplog.at_level("INFO"):
        dm = _module(root, tmp_path / "cache", targets=["homo"])
    stats = dm.stats()
    # An SDF molecule without a label is a recorded failure: every molecule read is accounted for.
    assert stats["ok"] + stats["failed"] == stats["read"] == N
    assert stats["failures_by_reason"]["missing_label"] == 2
    assert stats["molecules_without_label"] == 2
    assert stats["molecules_without_label_examples"] == [
        {"id": "gdb_5", "line": sdf_line["gdb_5"]},
        {"id": "gdb_9", "line": sdf_line["gdb_9"]},
    ]
    assert {4, 8}.isdisjoint(int(d.mol_id) for d in dm.data)
    # The rows of gdb_3 and gdb_11 (uncharacterized, so dropped) do name SDF molecules.
    assert stats["label_rows_without_molecule"] == 7
    first_absent_line = len(kept_rows) + 1
    assert stats["label_rows_without_molecule_examples"] == [
        {"id": name, "line": first_absent_line + i} for i, name in enumerate(absent[:5])
    ]
    summary = dm.describe()
    assert f"gdb_5 (SDF line {sdf_line['gdb_5']})" in summary
    unused = (
        f"7 label row(s) without an SDF molecule, unused: gdb_101 (CSV line {first_absent_line})"
    )
    assert unused in summary
    assert "gdb_105" in summary and "gdb_106" not in summary and summary.endswith(", ...")
    assert summary in caplog.text  # the line printed at setup
    cached = _module(root, tmp_path / "cache", targets=["homo"])
    assert cached.stats()["from_cache"]
    for key in ("molecules_without_label", "label_rows_without_molecule"):
        assert cached.stats()[key] == stats[key]
        assert cached.stats()[f"{key}_examples"] == stats[f"{key}_examples"]
    assert cached.describe() == summary


def test_a_clean_label_join_reports_nothing_unmatched(raw: QM9RawFiles, tmp_path: Path) -> None:
    dm = _module(raw.root, tmp_path / "cache", targets=["homo"])
    stats = dm.stats()
    assert stats["molecules_without_label"] == stats["label_rows_without_molecule"] == 0
    assert stats["label_rows_without_molecule_examples"] == []
    assert "label row" not in dm.describe()


def test_label_names_that_match_no_molecule_are_one_error(raw: QM9RawFiles, tmp_path: Path) -> None:
    root = _copy(raw, tmp_path)
    lines = (root / "gdb9.sdf.csv").read_text().splitlines()
    renamed = [lines[0], *(line.removeprefix("gdb_") for line in lines[1:])]  # "1,...", not "gdb_1"
    (root / "gdb9.sdf.csv").write_text("\n".join(renamed) + "\n")
    with pytest.raises(QM9FormatError, match=r"none of the 24 molecule titles \('gdb_1', ") as info:
        parse_qm9(root / "gdb9.sdf", root / "gdb9.sdf.csv", None)
    assert info.value.reason == "names_do_not_match"
    assert re.search(r"\(its mol_id column holds '\d+', '\d+', '\d+', \.\.\.\);", str(info.value))


def test_a_label_row_with_an_extra_field_is_refused(raw: QM9RawFiles, tmp_path: Path) -> None:
    root = _copy(raw, tmp_path)
    lines = (root / "gdb9.sdf.csv").read_text().splitlines()
    name, rest = lines[5].split(",", 1)
    lines[5] = f"{name},0.0,{rest}"  # every later column would move onto the next target
    (root / "gdb9.sdf.csv").write_text("\n".join(lines) + "\n")
    header = len(lines[0].split(","))
    expected = f"line 6: {header + 1} columns, the header has {header}"
    with pytest.raises(QM9FormatError, match=expected) as info:
        read_qm9_labels(root / "gdb9.sdf.csv")
    assert info.value.reason == "ragged_row"

"""Bad fine-tuning inputs through the data modules' ``setup``: MoleculeNet-style CSVs, QM9's
SDF + label CSV, MD NPZ trajectories. Wherever molecules are dropped, the checks compare every
kept molecule's label with the one written on its own row (no label shifted onto a neighbour).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from molssl.datamodules import MD22DataModule, MoleculeNetDataModule, QM9DataModule
from molssl.datamodules.qm9_raw import HARTREE_TO_MEV
from tests.bad_inputs.shared import SharedInputs
from tests.datamodules.md_files import write_sgdml

FAST = {"optimize_conformers": False, "prepare_workers": 1, "progress": False}
ROWS = [("CCO", 1.0), ("c1ccccc1", 2.0), ("CC(=O)O", 3.0), ("CCN", 4.0), ("CCCC", 5.0)]
ROWS += [("CCCl", 6.0), ("OCCO", 7.0), ("CC#N", 8.0)]


def _csv_module(path: Path, work: Path) -> MoleculeNetDataModule:
    module = MoleculeNetDataModule(
        str(path), smiles_column="smiles", target_columns=["y"], task_type="regression",
        split="random", split_fractions=(0.6, 0.2, 0.2), cache_dir=str(work / "cache"), **FAST,
    )  # fmt: skip
    module.setup("fit")
    return module


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def _rows(rows: list[tuple[str, float | str]]) -> list[str]:
    return [f"{smiles},{label}" for smiles, label in rows]


def _error(error: Exception) -> str:
    reason = getattr(error, "reason", None)
    kind = type(error).__name__ + (f" ({reason})" if reason else "")
    return f"{kind}: {str(error).splitlines()[0]}"


def _kept_labels(module: MoleculeNetDataModule) -> dict[int, tuple[str, float]]:
    return {int(d.mol_id): (d.smiles, float(d.y[0, 0])) for d in module.data}


def csv_missing_column(work: Path, shared: SharedInputs) -> str:
    path = _write(work / "a.csv", ["smiles,label", *_rows(ROWS)])
    try:
        _csv_module(path, work)
    except ValueError as error:
        return _error(error)
    raise AssertionError("a CSV without its label column was accepted")


def csv_blank_labels(work: Path, shared: SharedInputs) -> str:
    rows: list[tuple[str, float | str]] = [*ROWS]
    rows[0], rows[5] = (ROWS[0][0], ""), (ROWS[5][0], "")
    module = _csv_module(_write(work / "b.csv", ["smiles,y", *_rows(rows)]), work)
    kept = _kept_labels(module)
    assert sorted(kept) == list(range(len(ROWS)))
    for mol_id, (_, label) in kept.items():
        written = rows[mol_id][1]
        assert math.isnan(label) if written == "" else label == written, (mol_id, label)
    return f"kept: {len(kept)} of {len(ROWS)} molecules, rows 2 and 7 with a NaN (missing) label"


def csv_non_numeric_label(work: Path, shared: SharedInputs) -> str:
    rows: list[tuple[str, float | str]] = [*ROWS]
    rows[3] = (ROWS[3][0], "n/a")
    try:
        _csv_module(_write(work / "c.csv", ["smiles,y", *_rows(rows)]), work)
    except ValueError as error:
        return _error(error)
    raise AssertionError("a non-numeric label was accepted")


def csv_truncated_row(work: Path, shared: SharedInputs) -> str:
    path = work / "d.csv"
    path.write_text("\n".join(["smiles,y", *_rows(ROWS[:7])]) + "\nCC#")  # cut mid-row
    try:
        _csv_module(path, work)
    except ValueError as error:
        return _error(error)
    raise AssertionError("a truncated CSV was accepted")


def csv_invalid_smiles_rows(work: Path, shared: SharedInputs) -> str:
    rows = [*ROWS[:2], ("C1CC(", 9.0), ("not_a_smiles", 10.0), *ROWS[2:]]
    module = _csv_module(_write(work / "e.csv", ["smiles,y", *_rows(rows)]), work)
    kept = _kept_labels(module)
    assert sorted(kept) == [0, 1, 4, 5, 6, 7, 8, 9]
    for mol_id, (smiles, label) in kept.items():
        assert (smiles, label) == rows[mol_id], (mol_id, smiles, label)
    stats = module.stats()
    lines = stats["failed_lines_by_reason"]
    return f"recorded: {stats['failed']} of {stats['read']} dropped with their labels {lines}"


def csv_whitespace_in_smiles_cell(work: Path, shared: SharedInputs) -> str:
    # "c1ccccc1 O" is phenol with a stray space, not benzene named "O"; a quoted line break is
    # no end of a SMILES either. Both rows fail with their labels; no label moves.
    rows: list[tuple[str, float | str]] = [*ROWS]
    rows[2], rows[4] = ("c1ccccc1 O", 3.0), ('"CC\nO"', 5.0)
    module = _csv_module(_write(work / "ws.csv", ["smiles,y", *_rows(rows)]), work)
    kept = _kept_labels(module)
    assert sorted(kept) == [0, 1, 3, 5, 6, 7]
    for mol_id, (smiles, label) in kept.items():
        assert (smiles, label) == ROWS[mol_id], (mol_id, smiles, label)
    stats = module.stats()
    assert stats["read"] == stats["ok"] + stats["failed"] == len(ROWS)
    lines = stats["failed_lines_by_reason"]
    return f"recorded: {stats['failed']} of {stats['read']} dropped with their labels {lines}"


def csv_capitalised_smiles_column(work: Path, shared: SharedInputs) -> str:
    # molssl prepare finds a column named SMILES; MoleculeNet finds it by the same rule.
    module = _csv_module(_write(work / "caps.csv", ["SMILES,y", *_rows(ROWS)]), work)
    kept = _kept_labels(module)
    assert all(kept[mol_id] == ROWS[mol_id] for mol_id in range(len(ROWS)))
    return f"kept: {len(kept)} of {len(ROWS)} molecules, column 'SMILES' found for 'smiles'"


# -- QM9 ----------------------------------------------------------------------------------


def _qm9_copy(work: Path, shared: SharedInputs) -> Path:
    root = work / "qm9"
    shutil.copytree(shared.qm9.root, root)
    return root


def _qm9_module(root: Path, work: Path) -> QM9DataModule:
    module = QM9DataModule(root=root, cache_dir=work / "cache", batch_size=4, targets=["homo"])
    module.setup("fit")
    return module


def _check_qm9_labels(module: QM9DataModule, shared: SharedInputs) -> list[int]:
    kept = []
    for data in module.data:
        mol_id = int(data.mol_id)
        written = shared.qm9.labels[f"gdb_{mol_id + 1}"]["homo"] * HARTREE_TO_MEV
        np.testing.assert_allclose(float(data.y[0, 0]), written, rtol=1e-6)
        kept.append(mol_id)
    return sorted(kept)


def _qm9_edit(
    work: Path, shared: SharedInputs, edit: Callable[[list[str]], list[str]]
) -> tuple[str, list[int]]:
    root = _qm9_copy(work, shared)
    csv = root / "gdb9.sdf.csv"
    csv.write_text("\n".join(edit(csv.read_text().splitlines())) + "\n")
    module = _qm9_module(root, work)
    stats = module.stats()
    return f"{stats['ok']} of {stats['read']} kept; failed {stats['failures_by_reason']}", (
        _check_qm9_labels(module, shared)
    )


def qm9_label_row_missing(work: Path, shared: SharedInputs) -> str:
    text, kept = _qm9_edit(work, shared, lambda ls: [x for x in ls if not x.startswith("gdb_5,")])
    assert 4 not in kept and 2 not in kept and len(kept) == 10  # gdb_3: uncharacterized
    return f"recorded: {text}"


def qm9_label_rows_reordered(work: Path, shared: SharedInputs) -> str:
    text, kept = _qm9_edit(work, shared, lambda ls: [ls[0], *ls[1:][::-1]])
    assert len(kept) == 11
    return f"kept (joined by name): {text}"


def qm9_label_for_absent_molecule(work: Path, shared: SharedInputs) -> str:
    text, kept = _qm9_edit(work, shared, lambda ls: [*ls, "gdb_99," + ls[1].split(",", 1)[1]])
    assert len(kept) == 11
    return f"kept, the extra label unused: {text}"


def qm9_duplicate_label_row(work: Path, shared: SharedInputs) -> str:
    try:
        _qm9_edit(work, shared, lambda ls: [*ls, ls[1]])
    except ValueError as error:
        return _error(error)
    raise AssertionError("two label rows for one molecule were accepted")


def qm9_truncated_sdf(work: Path, shared: SharedInputs) -> str:
    root = _qm9_copy(work, shared)
    sdf = root / "gdb9.sdf"
    text = sdf.read_text()
    last = text.rindex("$$$$", 0, len(text) - 5)
    sdf.write_text(text[: last + (len(text) - last) // 2])
    module = _qm9_module(root, work)
    kept = _check_qm9_labels(module, shared)
    assert 11 not in kept and len(kept) == 10
    stats = module.stats()
    return f"recorded: {stats['ok']} of {stats['read']} kept; failed {stats['failures_by_reason']}"


def qm9_sdf_missing_terminator(work: Path, shared: SharedInputs) -> str:
    root = _qm9_copy(work, shared)
    sdf = root / "gdb9.sdf"
    text = sdf.read_text()
    cut = text.index("$$$$\n", text.index("gdb_5"))  # gdb_5 loses its $$$$ before gdb_6
    sdf.write_text(text[:cut] + text[cut + 5 :])
    module = _qm9_module(root, work)
    kept = _check_qm9_labels(module, shared)
    assert 4 not in kept and 5 in kept and len(kept) == 10  # gdb_3: uncharacterized
    stats = module.stats()
    assert stats["read"] == 12 == stats["ok"] + stats["failed"]
    return f"recorded: {stats['ok']} of {stats['read']} kept; failed {stats['failures_by_reason']}"


# -- MD NPZ -------------------------------------------------------------------------------


def _md(work: Path, change: dict, drop: str | None = None) -> MD22DataModule:
    write_sgdml(work / "clean.npz", frames=40)
    arrays = dict(np.load(work / "clean.npz"))
    if drop is not None:
        arrays.pop(drop)
    arrays.update(change)
    np.savez(work / "edited.npz", **arrays)
    module = MD22DataModule(path=work / "edited.npz", batch_size=4)
    module.setup("fit")
    return module


def _md_error(work: Path, change: dict, drop: str | None = None) -> str:
    try:
        _md(work, change, drop)
    except ValueError as error:
        return _error(error)
    raise AssertionError("a damaged trajectory was accepted")


def md_missing_key(work: Path, shared: SharedInputs) -> str:
    return _md_error(work, {}, drop="F")


def md_shape_mismatch(work: Path, shared: SharedInputs) -> str:
    write_sgdml(work / "clean.npz", frames=40)
    positions = np.load(work / "clean.npz")["R"]
    return _md_error(work, {"R": positions[:, :-1]})


def md_nan_frame(work: Path, shared: SharedInputs) -> str:
    write_sgdml(work / "clean.npz", frames=40)
    clean = dict(np.load(work / "clean.npz"))
    forces = clean["F"].copy()
    forces[5, 0, 0] = np.nan
    module = _md(work, {"F": forces})
    frames = {int(d.mol_id): d for d in module.data}
    assert sorted(frames) == [i for i in range(40) if i != 5]
    for frame, data in frames.items():  # every kept frame carries its own energy
        np.testing.assert_allclose(float(data.energy), float(clean["E"][frame][0]), rtol=1e-6)
    stats = module.stats()
    reasons = stats["failures_by_reason"]
    return f"recorded: {stats['ok']} of {stats['read']} frames kept; failed {reasons}"


def md_not_npz(work: Path, shared: SharedInputs) -> str:
    path = work / "text.npz"
    path.write_text("not a zip archive")
    try:
        MD22DataModule(path=path, batch_size=4).setup("fit")
    except ValueError as error:
        return _error(error)
    raise AssertionError("a text file was accepted as a trajectory")


def md_coincident_atoms(work: Path, shared: SharedInputs) -> str:
    write_sgdml(work / "clean.npz", frames=40)
    clean = dict(np.load(work / "clean.npz"))
    positions = clean["R"].copy()
    positions[11, 3] = positions[11, 0]  # two atoms on one point
    module = _md(work, {"R": positions})
    frames = {int(d.mol_id): d for d in module.data}
    assert sorted(frames) == [i for i in range(40) if i != 11]
    for frame, data in frames.items():
        np.testing.assert_allclose(float(data.energy), float(clean["E"][frame][0]), rtol=1e-6)
    stats = module.stats()
    reasons = stats["failures_by_reason"]
    return f"recorded: {stats['ok']} of {stats['read']} frames kept; failed {reasons}"

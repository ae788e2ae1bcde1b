"""Bad fine-tuning data and checkpoints through ``molssl fit`` with the shipped configs.

Each case runs ``configs/finetune/<task>.yaml`` at test sizes on a small file in the true
format with one thing wrong, and must end in one line naming the file (and the line, column or
key) with exit status 2, before any training step.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.bad_inputs.shared import (
    SharedInputs,
    one_line_exit,
    tiny_finetune_config,
    write_config,
)
from tests.datamodules.md_files import write_sgdml
from tests.datamodules.moleculenet_files import write_moleculenet_csv

FAST = {"optimize_conformers": False, "progress": False, "prepare_workers": 1}


def _fit(task: str, data: dict, work: Path, model: dict | None = None) -> str:
    config = tiny_finetune_config(task, data, work / "runs")
    config["model"]["init_args"].update(model or {})
    path = write_config(work / f"{task}.yaml", config)
    return one_line_exit(["fit", "--config", str(path)], work)


def _freesolv(work: Path, edit: Callable[[list[list[str]]], None]) -> Path:
    """A FreeSolv-layout CSV of 12 molecules with ``edit`` applied to its rows (header first)."""
    path = write_moleculenet_csv(work / "SAMPL.csv", "freesolv", n=12).path
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    edit(rows)
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def _set_cell(column: str, row: int, value: str) -> Callable[[list[list[str]]], None]:
    def edit(rows: list[list[str]]) -> None:
        rows[row][rows[0].index(column)] = value

    return edit


def _freesolv_fit(work: Path, edit: Callable[[list[list[str]]], None], **data: object) -> str:
    path = _freesolv(work, edit)
    return _fit(
        "freesolv", {"path": str(path), "cache_dir": str(work / "cache"), **FAST, **data}, work
    )


def inf_label(work: Path, shared: SharedInputs) -> str:
    return _freesolv_fit(work, _set_cell("expt", 5, "inf"))


def unicode_minus_label(work: Path, shared: SharedInputs) -> str:
    return _freesolv_fit(work, _set_cell("expt", 5, "\u22123.2"))


def all_smiles_invalid(work: Path, shared: SharedInputs) -> str:
    def garbage(rows: list[list[str]]) -> None:
        for number, row in enumerate(rows[1:]):
            row[rows[0].index("smiles")] = f"C1CC({number}"

    return _freesolv_fit(work, garbage)


def scaffold_split_without_training(work: Path, shared: SharedInputs) -> str:
    def one_scaffold(rows: list[list[str]]) -> None:  # every molecule a benzene derivative
        for number, row in enumerate(rows[1:], start=1):
            row[rows[0].index("smiles")] = "c1ccccc1" + "C" * number

    return _freesolv_fit(work, one_scaffold)


def _blank_column(rows: list[list[str]]) -> None:
    rows[0].append("logp")
    for row in rows[1:]:
        row.append("")


def task_without_labels(work: Path, shared: SharedInputs) -> str:
    path = _freesolv(work, _blank_column)
    data = {"path": str(path), "cache_dir": str(work / "cache"), **FAST, "preset": None}
    data.update(smiles_column="smiles", target_columns=["expt", "logp"], task_type="regression")
    return _fit("freesolv", data, work, model={"num_tasks": 2})


def _init_from(work: Path, checkpoint: Path) -> str:
    path = _freesolv(work, lambda rows: None)
    data = {"path": str(path), "cache_dir": str(work / "cache"), **FAST}
    return _fit("freesolv", data, work, model={"init_from": str(checkpoint)})


def init_from_missing(work: Path, shared: SharedInputs) -> str:
    output = _init_from(work, work / "absent.ckpt")
    # Refused before the data set is prepared: nothing was written to its cache.
    cache = work / "cache"
    assert not cache.exists() or not any(cache.iterdir()), "data prepared before the check"
    return output


def init_from_empty(work: Path, shared: SharedInputs) -> str:
    (work / "empty.ckpt").write_bytes(b"")
    return _init_from(work, work / "empty.ckpt")


def qm9_names_do_not_match(work: Path, shared: SharedInputs) -> str:
    root = work / "qm9"
    shutil.copytree(shared.qm9.root, root)
    labels = root / "gdb9.sdf.csv"
    lines = labels.read_text().splitlines()
    labels.write_text(
        "\n".join([lines[0], *(line.removeprefix("gdb_") for line in lines[1:])]) + "\n"
    )
    return _fit("qm9_homo", {"root": str(root), "cache_dir": str(work / "cache")}, work)


def _md(work: Path, change: Callable[[dict[str, np.ndarray]], None]) -> str:
    write_sgdml(work / "clean.npz", frames=40)
    arrays = dict(np.load(work / "clean.npz"))
    change(arrays)
    np.savez(work / "edited.npz", **arrays)
    data = {"path": str(work / "edited.npz"), "molecule": None, "batch_size": 4}
    return _fit("md22_ac_ala3_nhme", data, work)


def md_unequal_lengths(work: Path, shared: SharedInputs) -> str:
    return _md(work, lambda arrays: arrays.update(E=arrays["E"][:-3]))


def md_all_nan_forces(work: Path, shared: SharedInputs) -> str:
    return _md(work, lambda arrays: arrays.update(F=np.full_like(arrays["F"], np.nan)))

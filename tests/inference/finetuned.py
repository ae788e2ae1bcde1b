"""Tiny fine-tuned checkpoints written by ``molssl fit``, and new-molecule inputs, for tests."""

from __future__ import annotations

import csv
from pathlib import Path

import yaml

from tests.analysis.embed_fixtures import BAD_SMILES
from tests.conftest import run_keeping_sys_path
from tests.datamodules.moleculenet_files import WrittenCsv, write_moleculenet_csv
from tests.test_configs import CONFIG_DIR, finetune_overrides

#: Rows of the fine-tuning CSV that cannot be used (an invalid SMILES; a blank line).
TRAINING_INVALID = {3: "C1CC"}
TRAINING_BLANK = (7,)


def fit_tiny_finetune(
    root: Path, config_name: str = "freesolv.yaml", preset: str | None = None, n: int = 40
) -> tuple[Path, WrittenCsv]:
    """``molssl fit`` of a fine-tuning config at test size for one epoch.

    Returns:
        The run's ``last.ckpt`` and the CSV it was trained on (with an invalid row and a blank
        line, so that row numbers and molecule ids differ from the usable molecules' order).
    """
    config_path = CONFIG_DIR / "finetune" / config_name
    config = yaml.safe_load(config_path.read_text())
    preset = preset or config["data"]["init_args"]["preset"]
    written = write_moleculenet_csv(
        root / f"{preset}.csv", preset, n=n, invalid=TRAINING_INVALID, blank=TRAINING_BLANK
    )
    run_keeping_sys_path(
        [
            "fit",
            "--config",
            str(config_path),
            *finetune_overrides(config, root),
            f"--data.init_args.path={written.path}",
            f"--data.init_args.preset={preset}",
            "--trainer.max_epochs=1",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={root}",
            "--model.init_args.warmup_steps=1",
        ]
    )
    return root / "checkpoints" / "last.ckpt", written


#: ``(id, SMILES, expected error reason or None)`` of the new molecules the tests predict.
NEW_MOLECULES = (
    ("ethanol", "CCO", None),
    ("broken", "C1CC", BAD_SMILES["C1CC"]),
    ("phenol", "c1ccccc1O", None),
    ("empty", "", "empty_input"),
    ("xenon", "[Xe]", BAD_SMILES["[Xe]"]),
    ("acid", "CC(=O)O", None),
    ("toluene", "Cc1ccccc1", None),
)


def write_new_csv(path: Path) -> Path:
    """:data:`NEW_MOLECULES` as a CSV with ``name`` and ``smiles`` columns."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "smiles"])
        writer.writerows((name, smiles) for name, smiles, _ in NEW_MOLECULES)
    return path


def read_predictions(path: Path) -> list[dict[str, str]]:
    """The rows of a ``molssl predict`` CSV."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))

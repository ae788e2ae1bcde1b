"""A fine-tuning model's task type and number of tasks follow from the data (molssl.task_link)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from molssl.cli import main
from molssl.datamodules.md import MD17DataModule
from molssl.datamodules.moleculenet import MoleculeNetDataModule
from molssl.datamodules.qm9 import QM9DataModule
from molssl.task_link import declared_tasks_of
from tests.datamodules.moleculenet_files import write_moleculenet_csv
from tests.test_configs import CONFIG_DIR, finetune_overrides

pytestmark = pytest.mark.usefixtures("isolated_cli")


def test_datamodules_declare_their_tasks_before_setup(tmp_path: Path) -> None:
    written = write_moleculenet_csv(tmp_path / "clintox.csv", "clintox", n=6)
    # No preset, no target columns: every column but the SMILES one, read from the header.
    free = MoleculeNetDataModule(str(written.path), task_type="classification")
    assert free.declared_tasks() == ("classification", ["FDA_APPROVED", "CT_TOX"])
    assert free.loaded is None  # nothing prepared
    assert QM9DataModule(str(tmp_path), targets=["homo", "lumo"]).declared_tasks() == (
        "regression",
        ["homo", "lumo"],
    )
    assert MD17DataModule(path=str(tmp_path / "x.npz")).declared_tasks() == (
        "energy_forces",
        ["energy"],
    )
    section = {
        "class_path": "molssl.datamodules.moleculenet.MoleculeNetDataModule",
        "init_args": {"path": str(written.path), "preset": "clintox"},
    }
    assert declared_tasks_of(section) == ("classification", ["FDA_APPROVED", "CT_TOX"])


def test_a_num_tasks_the_data_contradict_fails_before_any_molecule_is_prepared(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = CONFIG_DIR / "finetune" / "freesolv.yaml"
    config = yaml.safe_load(config_path.read_text())
    overrides = finetune_overrides(config, tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config_path), *overrides, "--model.init_args.num_tasks=2"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "molssl fit: error: model.init_args.num_tasks is 2 but the data have 1 target(s) (expt); "
        "leave model.init_args.num_tasks out (null) to follow the data"
    )
    assert not (tmp_path / "cache").exists() and not (tmp_path / "runs").exists()

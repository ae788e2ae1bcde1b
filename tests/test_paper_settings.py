"""The fine-tuning configs hold UniCorn's published settings (paper Appendix C.3, Tables 9-12).

One check per family against the paper's tables, so that an edit of a config that leaves the
paper is caught; what each config's header says it follows is what is checked here. Whether
the configs run is :mod:`tests.test_configs`'s business.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from molssl.datamodules.moleculenet_presets import get_preset
from tests.datamodules.moleculenet_files import TASK_COLUMNS

FINETUNE = Path(__file__).resolve().parents[1] / "configs" / "finetune"

#: Paper Table 10 (QM9), Table 11 (MD17) and Table 12 (MD22), as config entries.
FAMILY_SETTINGS: dict[str, dict[str, Any]] = {
    "qm9_": {
        "model.lr": 4.0e-4,
        "model.warmup_steps": 10000,
        "model.schedule": "cosine",
        "model.min_lr": 1.0e-7,
        "data.batch_size": 128,
        "model.encoder.init_args.layernorm_on_vec": "whitened",
    },
    "md17_": {
        "model.lr": 5.0e-4,
        "model.warmup_steps": 1000,
        "model.schedule": "plateau",
        "model.plateau_factor": 0.8,
        "model.plateau_patience": 30,
        "model.min_lr": 1.0e-7,
        "model.force_weight": 0.8,
        "model.energy_weight": 0.2,
        "data.batch_size": 8,
        "data.train_size": 950,
        "data.val_size": 50,
        "model.encoder.init_args.layernorm_on_vec": None,
    },
    "md22_": {
        "model.lr": 1.0e-3,
        "model.schedule": "cosine",
        "model.min_lr": 1.0e-7,
        "model.force_weight": 0.8,
        "model.energy_weight": 0.2,
        "data.train_size": 0.8,
        "data.val_size": 0.1,
        "trainer.max_epochs": 50,
        "model.encoder.init_args.layernorm_on_vec": None,
    },
}
#: Paper Table 12's batch sizes: 4 for the nanotube, 16 for Ac-Ala3-NHMe and DHA, 8 otherwise.
MD22_BATCH = {"double_walled_nanotube": 4, "ac_ala3_nhme": 16, "dha": 16}
#: QM9 targets whose head is not the summed scalar one, and those with free-atom references.
QM9_HEADS = {"mu": "dipole", "r2": "spatial_extent"}
QM9_ATOMREF = {"u0", "u", "h", "g"}


def entry(config: dict[str, Any], dotted: str) -> Any:
    """``config["model"]["init_args"][...]`` etc. from ``"model.lr"``."""
    section, *keys = dotted.split(".")
    value = config[section]
    if section in ("model", "data"):
        value = value["init_args"]
    for key in keys:
        value = value[key]
    return value


def configs(prefix: str) -> list[Path]:
    return sorted(FINETUNE.glob(f"{prefix}*.yaml"))


@pytest.mark.parametrize("prefix", list(FAMILY_SETTINGS))
def test_quantum_configs_hold_the_papers_settings(prefix: str) -> None:
    paths = configs(prefix)
    assert len(paths) == {"qm9_": 12, "md17_": 8, "md22_": 7}[prefix]
    for path in paths:
        config = yaml.safe_load(path.read_text())
        for key, expected in FAMILY_SETTINGS[prefix].items():
            assert entry(config, key) == expected, f"{path.name}: {key}"
        name = path.stem.removeprefix(prefix)
        if prefix == "md22_":
            assert entry(config, "data.batch_size") == MD22_BATCH.get(name, 8), path.name
        if prefix == "qm9_":
            assert entry(config, "model.head") == QM9_HEADS.get(name, "equivariant"), path.name
            expected_atomref = "qm9" if name in QM9_ATOMREF else False
            assert entry(config, "model.atomref") == expected_atomref, path.name
            assert entry(config, "data.atomref") is False, path.name


def test_moleculenet_configs_search_table_9_and_match_their_files() -> None:
    # UniCorn's 11 MoleculeNet tasks; MoleBLEND's own fine-tuning configs follow its scripts.
    paths = [
        p
        for p in FINETUNE.glob("*.yaml")
        if "moleculenet" in p.read_text() and not p.name.startswith("moleblend_")
    ]
    assert len(paths) == 11
    for path in paths:
        config = yaml.safe_load(path.read_text())
        preset = get_preset(entry(config, "data.preset"))
        # The task type and the number of tasks come from the file (molssl.task_link).
        assert not {"task", "num_tasks"} & set(config["model"]["init_args"]), path.name
        if preset.target_columns is not None:
            assert list(preset.target_columns) == list(TASK_COLUMNS[preset.name]), path.name
        assert entry(config, "data.split") == "scaffold", path.name
        assert entry(config, "model.head") == "mlp", path.name
        kind = preset.task_type
        # One point of Table 9's grid (configs/search/table9_<kind>.yaml holds the grid).
        grid = yaml.safe_load((FINETUNE.parent / "search" / f"table9_{kind}.yaml").read_text())
        point = {
            "model.init_args.lr": entry(config, "model.lr"),
            "data.init_args.batch_size": entry(config, "data.batch_size"),
            "trainer.max_epochs": config["trainer"]["max_epochs"],
            "model.init_args.weight_decay": entry(config, "model.weight_decay"),
        }
        for key, value in point.items():
            assert value in grid[key], f"{path.name}: {key}={value} not in Table 9's grid"

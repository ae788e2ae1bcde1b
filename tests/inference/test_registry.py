"""Packaged checkpoints by name: ``molssl.load("<name>")`` finds a file under the package."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import molssl
from molssl.checkpoints import CheckpointError
from molssl.inference import registry
from molssl.inference.registry import PACKAGED_CHECKPOINTS, resolve_checkpoint
from tests.inference.finetuned import fit_tiny_finetune


def test_nothing_is_packaged_yet_and_every_entry_is_a_relative_path() -> None:
    for name, relative in PACKAGED_CHECKPOINTS.items():
        assert not Path(relative).is_absolute(), name
        assert (registry.PACKAGE_ROOT / relative).is_file(), name


def test_a_packaged_name_loads_the_checkpoint_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt, _ = fit_tiny_finetune(tmp_path / "run")
    package = tmp_path / "package"
    (package / "checkpoints").mkdir(parents=True)
    shutil.copy(ckpt, package / "checkpoints" / "freesolv-tiny.ckpt")
    monkeypatch.setattr(registry, "PACKAGE_ROOT", package)
    monkeypatch.setitem(PACKAGED_CHECKPOINTS, "freesolv-tiny", "checkpoints/freesolv-tiny.ckpt")

    by_name = molssl.load("freesolv-tiny")
    assert by_name.path == package / "checkpoints" / "freesolv-tiny.ckpt"
    by_path = molssl.load(ckpt)
    smiles = ["CCO", "c1ccccc1O"]
    np.testing.assert_allclose(
        by_name.predict(smiles, accelerator="cpu").values,
        by_path.predict(smiles, accelerator="cpu").values,
        rtol=1e-6,
    )

    with pytest.raises(CheckpointError, match="did you mean 'freesolv-tiny'") as info:
        molssl.load("freesolv-tiyn")
    assert "packaged: freesolv-tiny" in str(info.value)


def test_a_file_wins_over_a_name_and_a_missing_packaged_file_is_reported(
    tmp_path: Path,
) -> None:
    local = tmp_path / "tiny"
    local.write_bytes(b"x")
    assert resolve_checkpoint(local, {"tiny": "absent.ckpt"}, tmp_path) == local
    with pytest.raises(CheckpointError, match="reinstall"):
        resolve_checkpoint("other", {"other": "absent.ckpt"}, tmp_path)
    with pytest.raises(CheckpointError, match="none in this version"):
        resolve_checkpoint(tmp_path / "nope.ckpt", {}, tmp_path)

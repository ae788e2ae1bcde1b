"""Shared fixtures: real molecules from RDKit's bundled data and ../shared/data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from rdkit import RDConfig

# pytest-xdist runs one worker per core; more intra-op threads per worker only oversubscribe.
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NCI_SMILES = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"


def read_nci_smiles(n: int) -> list[str]:
    """First ``n`` SMILES of RDKit's bundled NCI set (``SMILES name`` per line)."""
    out: list[str] = []
    with open(NCI_SMILES) as fh:
        for line in fh:
            parts = line.split()
            if parts:
                out.append(parts[0])
            if len(out) >= n:
                break
    return out


@pytest.fixture(scope="session")
def nci_smiles() -> list[str]:
    """300 real molecules from RDKit's bundled NCI set."""
    return read_nci_smiles(300)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of real molecules beside the checkout; tests that need it skip if absent."""
    path = Path(os.environ.get("MOLSSL_SHARED_DATA", SHARED_DATA))
    if not path.is_dir():
        pytest.skip(f"shared data folder not found at {path}")
    return path


@pytest.fixture(scope="session")
def small_pretrain_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests' small embedded default, prepared once per session (``PretrainDataModule``)."""
    from tests.modules.pretrain_fixtures import prepare_small_cache

    return prepare_small_cache(tmp_path_factory.getbasetemp() / "molssl_cache")


@pytest.fixture
def isolated_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Runs of ``molssl`` inside ``tmp_path``: relative paths (``runs/``) land there, and the
    working directory ``main()`` adds to ``sys.path`` does not outlive the test."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return tmp_path


def run_keeping_sys_path(argv: list[str]) -> None:
    """``molssl.cli.main(argv)`` outside a test's own isolation (module-scoped fixtures)."""
    from molssl.cli import main

    saved = list(sys.path)
    try:
        main(argv)
    finally:
        sys.path[:] = saved

"""A tiny UniCorn checkpoint written by ``molssl fit`` and small NCI input files for embed tests."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.conftest import NCI_SMILES, run_keeping_sys_path
from tests.modules.pretrain_fixtures import prepare_small_cache
from tests.test_configs import CONFIG_DIR, tiny_overrides

#: SMILES that fail for known reasons, with the reason code each gives.
BAD_SMILES = {"C1CC": "invalid_smiles", "[Xe]": "unsupported_element", "c1cccc1": "invalid_smiles"}


def fit_tiny_unicorn(root: Path, cache_dir: Path) -> Path:
    """``molssl fit`` of configs/unicorn.yaml at test sizes for 2 steps; returns ``last.ckpt``.

    Through the CLI, so that the checkpoint records its encoders' ``class_path``/``init_args``
    as real runs do (a module built in Python records none).
    """
    config_path = CONFIG_DIR / "unicorn.yaml"
    config = yaml.safe_load(config_path.read_text())
    run_keeping_sys_path(
        [
            "fit",
            "--config",
            str(config_path),
            *tiny_overrides(config, prepare_small_cache(cache_dir)),
            "--trainer.max_steps=2",
            "--trainer.limit_val_batches=0",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={root}",
            "--model.init_args.warmup_steps=1",
        ]
    )
    return root / "checkpoints" / "last.ckpt"


def nci_lines(n: int) -> list[tuple[str, str]]:
    """``(SMILES, name)`` of the first ``n`` lines of RDKit's NCI set."""
    out = []
    with open(NCI_SMILES) as handle:
        for line in handle:
            smiles, name = line.split()[:2]
            out.append((smiles, name))
            if len(out) == n:
                break
    return out


def write_smiles_with_failures(path: Path, n: int) -> tuple[list[int], list[str]]:
    """A ``.smi`` of ``n`` NCI molecules with bad SMILES and a blank line between them.

    Returns:
        The ``mol_id`` (line index) and name of every NCI line, in order.
    """
    bad = list(BAD_SMILES)
    lines: list[str] = []
    ids: list[int] = []
    names: list[str] = []
    for i, (smiles, name) in enumerate(nci_lines(n)):
        if i % 7 == 3:
            lines.append(f"{bad[i % len(bad)]}\tbad{i}")
        if i == 5:
            lines.append("")
        ids.append(len(lines))
        names.append(name)
        lines.append(f"{smiles}\t{name}")
    path.write_text("\n".join(lines) + "\n")
    return ids, names

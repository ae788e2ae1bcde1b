"""molssl.datamodules: pre-training and fine-tuning data.

The data modules are imported on first access, so ``import molssl.datamodules.splits``
stays light (no Lightning, no RDKit featurization).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from molssl.datamodules.finetune_base import FinetuneDataModule, LoadedDataset
    from molssl.datamodules.md import MD17DataModule, MD22DataModule
    from molssl.datamodules.moleculenet import MoleculeNetDataModule
    from molssl.datamodules.pretrain import PretrainDataModule
    from molssl.datamodules.qm9 import QM9DataModule

__all__ = [
    "FinetuneDataModule",
    "LoadedDataset",
    "MD17DataModule",
    "MD22DataModule",
    "MoleculeNetDataModule",
    "PretrainDataModule",
    "QM9DataModule",
]

#: Public name -> module defining it, imported on first access.
_LAZY = {
    "PretrainDataModule": "molssl.datamodules.pretrain",
    "FinetuneDataModule": "molssl.datamodules.finetune_base",
    "LoadedDataset": "molssl.datamodules.finetune_base",
    "MoleculeNetDataModule": "molssl.datamodules.moleculenet",
    "QM9DataModule": "molssl.datamodules.qm9",
    "MD17DataModule": "molssl.datamodules.md",
    "MD22DataModule": "molssl.datamodules.md",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module), name)

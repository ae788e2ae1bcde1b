"""molssl.datamodules: pre-training data (records, the embedded default, the datamodule).

``PretrainDataModule`` is imported on first access, so ``import molssl.datamodules.splits``
stays light (no Lightning, no RDKit featurization).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from molssl.datamodules.pretrain import PretrainDataModule

__all__ = ["PretrainDataModule"]


def __getattr__(name: str) -> Any:
    if name == "PretrainDataModule":
        from molssl.datamodules.pretrain import PretrainDataModule

        return PretrainDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Console noise of third-party packages that says nothing about the user's run, silenced.

* Lightning's adverts ("💡 Tip: ... try installing litlogger / litmodels"), printed on every
  Trainer start, are dropped by a filter on Lightning's ``rank_zero`` loggers;
* known deprecation warnings raised inside Lightning (its ``isinstance(treespec, LeafSpec)``
  under the torch we pin, its calls of jsonargparse APIs deprecated since jsonargparse 4.49),
  which the user cannot act on, are ignored.

Everything else (a warning about the user's data, settings or model) still shows.
:func:`silence_known_noise` is called by every command that starts a Trainer and by the Python
API; it is idempotent.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["KNOWN_DEPRECATIONS", "quiet_lightning_info", "silence_known_noise"]

_ADVERT_PREFIX = "💡 Tip:"
_LIGHTNING_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)
#: Message patterns of deprecation warnings raised inside third-party code: Lightning's use of
#: torch's pytree and of jsonargparse APIs that jsonargparse has deprecated.
KNOWN_DEPRECATIONS = (
    r".*isinstance\(treespec, LeafSpec\)",
    r"\s*``ArgumentParser\.add_instantiator`` was deprecated",
    r"\s*``instantiate_classes`` was deprecated",
)


class _DropAdverts(logging.Filter):
    """Drops Lightning's advertising tips."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(_ADVERT_PREFIX)


_FILTER = _DropAdverts()


def silence_known_noise() -> None:
    """Installs the advert filter and the deprecation-warning filters (see the module)."""
    for name in _LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    for pattern in KNOWN_DEPRECATIONS:
        for category in (DeprecationWarning, FutureWarning, UserWarning):
            warnings.filterwarnings("ignore", message=pattern, category=category)


@contextmanager
def quiet_lightning_info() -> Iterator[None]:
    """Lightning's info lines ("GPU available: ...") off for a Trainer the user did not ask for.

    The Python API predicts through a Trainer; in a notebook its start-up report is noise.
    Warnings still show.
    """
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)

"""Lightning callbacks that ``molssl fit`` adds to every run (see :func:`default_callbacks`).

- :class:`StepProgressBar`: the progress bar with the global step and molecules per second;
- :class:`MoleculeThroughput`: ``train/molecules_per_sec`` in the bar and the logs;
- :class:`LogCadence`: a few log points per epoch when ``log_every_n_steps`` is not set;
- :class:`MemoryCheck`: a warning before the first CPU step that will not fit in memory;
- :class:`FitSummary`: the best validation metric and checkpoint, in one line at the end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ProgressBar

from molssl.callbacks.fit_summary import FitSummary, fit_summary_line
from molssl.callbacks.log_cadence import LogCadence, steps_between_logs
from molssl.callbacks.memory import MemoryCheck, estimate_step_memory, machine_memory_bytes
from molssl.callbacks.progress import StepProgressBar
from molssl.callbacks.throughput import THROUGHPUT_KEY, MoleculeThroughput

__all__ = [
    "THROUGHPUT_KEY",
    "FitSummary",
    "LogCadence",
    "MemoryCheck",
    "MoleculeThroughput",
    "StepProgressBar",
    "default_callbacks",
    "estimate_step_memory",
    "fit_summary_line",
    "machine_memory_bytes",
    "steps_between_logs",
]


def default_callbacks(
    subcommand: str, trainer_config: Mapping[str, Any], given: Sequence[Callback] = ()
) -> list[Callback]:
    """molssl's callbacks for a Trainer built with ``trainer_config`` (its keyword arguments).

    Fitting gets all five (the progress bar only when the bar is on and the user brought none,
    the cadence only when ``log_every_n_steps`` is unset); evaluation keeps Lightning's bar.
    """
    if subcommand != "fit":
        return []
    callbacks: list[Callback] = [MoleculeThroughput(), MemoryCheck(), FitSummary()]
    bar_wanted = trainer_config.get("enable_progress_bar") is not False
    if bar_wanted and not any(isinstance(callback, ProgressBar) for callback in given):
        callbacks.append(StepProgressBar())
    if trainer_config.get("log_every_n_steps") is None:
        callbacks.append(LogCadence())
    return callbacks

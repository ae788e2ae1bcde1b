"""A preparation task that kills its own worker process, for the dead-worker tests.

In a module of its own, importing nothing heavy: each fresh worker process unpickles the
function by importing this module.
"""

from __future__ import annotations

import os
import signal
from typing import Any

#: The molecule whose worker dies, every time it is tried.
DYING_MOL_ID = 13


def dying_entry(task: tuple[Any, ...]) -> Any:
    """``_prepare_entry``, except that molecule :data:`DYING_MOL_ID` kills its worker."""
    from molssl.datamodules import prepare as prepare_module

    if task[0] == DYING_MOL_ID:
        os.kill(os.getpid(), signal.SIGKILL)
    return prepare_module._prepare_entry(task)


#: Left beside the input by :func:`dying_once_entry` when its worker dies.
DIED_MARKER = "worker-died.marker"


def dying_once_entry(task: tuple[Any, ...]) -> Any:
    """``_prepare_entry``, except that molecule :data:`DYING_MOL_ID` kills its worker once.

    The first time, a marker file is written beside the input and the worker kills itself; the
    retry finds the marker and prepares the molecule.
    """
    from pathlib import Path

    from molssl.datamodules import prepare as prepare_module

    marker = Path(task[1].source).parent / DIED_MARKER
    if task[0] == DYING_MOL_ID and not marker.exists():
        marker.write_text("died\n")
        os.kill(os.getpid(), signal.SIGKILL)
    return prepare_module._prepare_entry(task)

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

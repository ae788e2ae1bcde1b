"""What every ``molssl`` command shares: its name, its messages, the working directory on the path.

A leaf module: the dispatcher (:mod:`molssl.cli`) and the Lightning side
(:mod:`molssl.trainer_cli`) both import it, and neither imports the other at module level.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

__all__ = ["PROG", "exit_with_error", "make_working_directory_importable", "note"]

PROG = "molssl"


def note(subcommand: str, message: str) -> None:
    """``molssl <subcommand>: <message>`` on stderr."""
    sys.stderr.write(f"{PROG} {subcommand}: {message}\n" if subcommand else f"{PROG}: {message}\n")


def exit_with_error(subcommand: str, message: str) -> NoReturn:
    """``molssl <subcommand>: error: <message>`` on stderr, then exit status 2."""
    note(subcommand, f"error: {message}")
    raise SystemExit(2)


def make_working_directory_importable() -> None:
    """Lets YAML name ``class_path: my_module.MyObjective`` for a module in the working directory.

    A console script's ``sys.path`` starts at its own folder, not the user's, so an ablation
    written next to its config would not import (``python -m`` and notebooks do see it). The
    folder goes last, so that it never shadows an installed package.
    """
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)

"""The one rule for errors a user can fix: exit status 2 and one line, no traceback.

A bad input file, a wrong option value or a checkpoint that does not fit the model is the user's
to mend, and a 40-line traceback hides the one line that says what to mend. Every such error in
molssl derives from :class:`UserError`; ``molssl`` (:func:`molssl.cli.main`) prints its message as
``molssl <subcommand>: error: <message>`` and exits 2. The message names the file, the record
(line, molecule id or key) and what was expected. ``--debug`` on the command line, or
``MOLSSL_DEBUG=1`` in the environment, lets the exception through with its traceback.

Errors that are bugs (a ``TypeError`` inside an encoder, say) are not ``UserError`` and keep their
traceback, so that they get reported rather than worked around.
"""

from __future__ import annotations

import os

__all__ = ["DEBUG_ENV", "DEBUG_FLAG", "UserError", "debug_requested", "one_line"]

#: Environment variable that turns on tracebacks for user errors (any value but ``""``/``0``).
DEBUG_ENV = "MOLSSL_DEBUG"
#: Command-line flag with the same effect, accepted anywhere on a ``molssl`` command line.
DEBUG_FLAG = "--debug"


class UserError(ValueError):
    """An error the user can fix: bad input data, option values, files or checkpoints.

    Subclasses keep their own ``reason`` codes and wording; deriving from this class is what makes
    the command line report them in one line with exit status 2. ``ValueError`` is the base so
    that code catching ``ValueError`` around parsing keeps working.
    """


def debug_requested(argv: list[str] | None = None) -> bool:
    """Whether the user asked for tracebacks (``--debug`` in ``argv`` or ``MOLSSL_DEBUG``)."""
    if argv is not None and DEBUG_FLAG in argv:
        return True
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def one_line(error: BaseException) -> str:
    """``error``'s message folded onto one line (its first non-empty line, then the rest joined).

    Errors re-raised from a DataLoader worker carry the worker's traceback in their message; the
    user needs the original message, which PyTorch puts on the last line of that text.
    """
    text = str(error).strip()
    marker = "Original Traceback (most recent call last):"
    if marker in text:
        text = text.rsplit("\n", 1)[-1].strip()
        # The last line reads "module.ErrorType: message".
        head, sep, tail = text.partition(": ")
        if sep and head.rsplit(".", 1)[-1] == type(error).__name__:
            text = tail
    return (
        " ".join(part.strip() for part in text.splitlines() if part.strip()) or type(error).__name__
    )

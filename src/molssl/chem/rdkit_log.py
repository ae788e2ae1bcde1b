"""Silence RDKit's C++ log around one call and keep its error lines for our exceptions.

RDKit reports why a SMILES does not parse, or why a force field cannot type an atom, only on its
C++ log (stderr), not in a return value. Data pipelines run millions of molecules, so that log
is noise there; the explanation belongs in the typed error of the molecule that failed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from rdkit import rdBase

__all__ = ["RDKitLog", "quiet_rdkit"]

_TIMESTAMP = re.compile(r"^\[\d{2}:\d{2}:\d{2}\]\s?")
_MAX_SUMMARY_CHARS = 300


class RDKitLog:
    """Live view of the RDKit error lines captured so far inside :func:`quiet_rdkit`.

    Reading is possible inside the block, which is where the error is raised.
    """

    def __init__(self, capture: object | None = None) -> None:
        self._capture = capture

    def lines(self) -> list[str]:
        """Captured error lines, without RDKit's timestamps, blank lines or repeats."""
        if self._capture is None:
            return []
        out: list[str] = []
        for raw in str(self._capture.messages).splitlines():
            line = _TIMESTAMP.sub("", raw).strip()
            if line and line not in out:
                out.append(line)
        return out

    def summary(self) -> str:
        """The captured lines joined on one line, shortened, or ``""`` when there are none."""
        text = "; ".join(self.lines())
        if len(text) > _MAX_SUMMARY_CHARS:
            text = text[: _MAX_SUMMARY_CHARS - 3] + "..."
        return text


@contextmanager
def quiet_rdkit() -> Iterator[RDKitLog]:
    """Blocks every RDKit log line for the duration and captures the error ones.

    Yields:
        An :class:`RDKitLog`; it stays empty on RDKit versions without ``CaptureErrorLog``.
    """
    capture_type = getattr(rdBase, "CaptureErrorLog", None)
    # The capture must sit inside the block: the other way round, BlockLogs hides the lines
    # from the capture as well.
    with rdBase.BlockLogs():
        if capture_type is None:
            yield RDKitLog()
            return
        with capture_type() as capture:
            yield RDKitLog(capture)

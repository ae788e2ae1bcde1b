"""Where the molecules of an SDF file start: records counted from the file's own structure.

An SDF file separates its records with ``$$$$`` lines, but a record whose ``$$$$`` is missing
(a hand-edited file, a careless concatenation) must not swallow the next molecule: the text
between two ``$$$$`` lines is one record only if it holds one molecule. Each molfile has a
structure of its own: three header lines (title, program, comment), a counts line ending in
``V2000`` or ``V3000``, the connection table, ``M  END``, then the data items. So a new record
starts three lines above every further counts line; in files whose counts lines carry no
version tag, a second ``M  END`` in one record still tells two molecules apart (the split then
falls just after the first ``M  END``, and the data items go with the second molecule, which
fails to read rather than passing for something else).

Readers (:mod:`molssl.datamodules.sources.sdf`, :mod:`molssl.datamodules.qm9_raw`) give every
record found a number and an outcome: a record followed by another without ``$$$$`` between
them fails as ``missing_terminator``; the molecules around it are read as usual.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["RECORD_END", "is_counts_line", "record_starts"]

#: The line that ends an SDF record.
RECORD_END = "$$$$"
# "aaabbblllfffcccsssxxxrrrpppiiimmmvvvvvv": atom and bond counts in fixed 3-character fields,
# the version tag at the end. V3000's "M  V30 COUNTS" lines do not match (they start with M).
_COUNTS_LINE = re.compile(r"^[ \d]{2}\d[ \d]{2}\d.*[Vv][23]000\s*$")
_HEADER_LINES = 3
_MOL_END = "M  END"


def is_counts_line(line: str) -> bool:
    """Whether ``line`` is a molfile counts line (atom and bond counts, ``V2000``/``V3000``)."""
    return bool(_COUNTS_LINE.match(line))


def record_starts(lines: Sequence[str]) -> list[int]:
    """Offsets in ``lines`` (the text between two ``$$$$`` lines) where each molecule starts.

    ``[0]`` for a well-formed record; one offset per molecule when ``$$$$`` lines are missing
    (see the module docstring).
    """
    starts = {0}
    for index, line in enumerate(lines):
        if index > _HEADER_LINES and is_counts_line(line):
            starts.add(index - _HEADER_LINES)
    ordered = sorted(starts)
    found: list[int] = []
    for start, stop in zip(ordered, [*ordered[1:], len(lines)], strict=True):
        found.append(start)
        ends = [i for i in range(start, stop) if lines[i].startswith(_MOL_END)]
        found.extend(end + 1 for end in ends[:-1])
    return found

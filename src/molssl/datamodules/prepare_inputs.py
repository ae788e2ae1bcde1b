"""The input files of ``molssl prepare``: listed, hashed, duplicates set aside, output excluded.

Two inputs with the same bytes (``--input a.smi a.smi``, or a copy of a file inside an input
directory) would put every molecule in the data set twice, and a held-out shard would then hold
molecules that are also trained on. Files are compared by their sha256 (which the manifest
records anyway): the first one listed is read, every later copy is set aside, named on stderr
and listed in the manifest under ``duplicate_inputs``, so nothing is silently doubled.

The output directory is never read as input: when it lies inside an input directory, its
shards and ``manifest.json`` (a ``.json`` like PubChemQC's) are skipped while walking it. An
output that *is* an input directory is refused.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from molssl.datamodules.prepare_output import PrepareError
from molssl.datamodules.shards import file_sha256
from molssl.datamodules.sources import source_files

__all__ = ["InputFile", "PrepareInputs", "find_inputs"]


@dataclass(frozen=True)
class InputFile:
    """One input file: as it is named in messages, its content hash and size."""

    name: str
    sha256: str
    size: int

    def describe(self) -> dict[str, Any]:
        """The manifest's entry of the file."""
        return {"path": self.name, "sha256": self.sha256, "size": self.size}


@dataclass
class PrepareInputs:
    """The files to read, in order, and the duplicates set aside.

    Attributes:
        files: Files read, each content once, in the order given (a directory's files in
            sorted order of their relative path).
        duplicates: ``{"path", "same_as", "sha256"}`` of each file not read because an earlier
            one has the same bytes.
    """

    files: list[InputFile] = field(default_factory=list)
    duplicates: list[dict[str, str]] = field(default_factory=list)


def find_inputs(inputs: Sequence[str | os.PathLike[str]], output: Path) -> PrepareInputs:
    """List, hash and deduplicate the input files; the output directory is left out.

    Raises:
        SourceError: A missing input, an unknown suffix, a directory with no supported file.
        PrepareError: ``output_is_input`` when the output directory is an input directory.
    """
    found = PrepareInputs()
    first: dict[str, str] = {}
    resolved_output = output.resolve()
    for given in inputs:
        if Path(given).is_dir() and Path(given).resolve() == resolved_output:
            raise PrepareError(
                f"the output directory {output} is also an input directory: its shards and "
                "manifest would be read back as input; write the output elsewhere",
                reason="output_is_input",
            )
        for file in source_files(given, exclude=resolved_output):
            name = os.fspath(given) if Path(given) == file else str(file)
            digest = file_sha256(file)
            if digest in first:
                found.duplicates.append({"path": name, "same_as": first[digest], "sha256": digest})
                continue
            first[digest] = name
            found.files.append(InputFile(name, digest, file.stat().st_size))
    if found.duplicates:
        listed = "; ".join(f"{d['path']} (= {d['same_as']})" for d in found.duplicates[:5])
        more = f"; and {len(found.duplicates) - 5} more" if len(found.duplicates) > 5 else ""
        print(
            f"molssl prepare: {len(found.duplicates)} input file(s) have the same content as an "
            f"earlier one and are not read again (no molecule twice): {listed}{more}",
            file=sys.stderr,
        )
    return found

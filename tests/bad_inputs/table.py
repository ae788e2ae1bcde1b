"""Prints the bad-input table of docs/RELIABILITY.md: runs every case and shows what it did.

python -m tests.bad_inputs.table > /tmp/table.md
"""

from __future__ import annotations

import contextlib
import io
import re
import tempfile
from pathlib import Path

from tests.bad_inputs.cases import CASES
from tests.bad_inputs.shared import SharedInputs


def _cell(text: str, limit: int = 220) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def main() -> None:
    """Runs the cases in a temporary folder and prints a Markdown table."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        shared = SharedInputs(root / "shared")
        print("| Case | Entry point | Input | Expected | Observed |")
        print("|---|---|---|---|---|")
        for case in CASES:
            work = root / case.id
            work.mkdir()
            with contextlib.redirect_stdout(io.StringIO()):  # the commands' own summaries
                observed = case.run(work, shared)
            status = "" if re.search(case.match, observed) else " **(NOT AS EXPECTED)**"
            observed = observed.replace(str(root), "<tmp>")
            print(
                f"| `{case.id}` | {case.entry} | {case.given} | {case.expect} | "
                f"{_cell(observed)}{status} |"
            )


if __name__ == "__main__":
    main()

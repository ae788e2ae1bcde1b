"""RDKit's log is silenced inside quiet_rdkit and its error lines are kept, cleaned."""

from __future__ import annotations

import pytest
from rdkit import Chem, RDLogger, rdBase

from molssl.chem.rdkit_log import quiet_rdkit

needs_capture = pytest.mark.skipif(
    not hasattr(rdBase, "CaptureErrorLog"), reason="RDKit without CaptureErrorLog"
)


@needs_capture
def test_parse_error_is_captured_not_printed(capfd: pytest.CaptureFixture) -> None:
    with quiet_rdkit() as log:
        assert Chem.MolFromSmiles("C1CC") is None
        lines = log.lines()  # readable inside the block, where errors are raised
    assert lines == ["SMILES Parse Error: unclosed ring for input: 'C1CC'"]
    assert capfd.readouterr().err == ""


@needs_capture
def test_lines_are_deduplicated_and_summary_is_bounded() -> None:
    with quiet_rdkit() as log:
        for _ in range(3):
            Chem.MolFromSmiles("C1CC")
        for index in range(40):
            Chem.MolFromSmiles(f"C{index}CC")  # unclosed ring with another number each time
        assert log.lines()[0] == "SMILES Parse Error: unclosed ring for input: 'C1CC'"
        assert len(log.lines()) == 40  # 'C1CC' once, then 39 new ones
        summary = log.summary()
    assert len(summary) == 300 and summary.endswith("...")


def test_log_is_restored_after_the_block(capfd: pytest.CaptureFixture) -> None:
    RDLogger.EnableLog("rdApp.error")  # RDKit's default, whatever an earlier test did
    with quiet_rdkit():
        Chem.MolFromSmiles("C1CC")
    assert capfd.readouterr().err == ""
    Chem.MolFromSmiles("C1CC")
    assert "unclosed ring" in capfd.readouterr().err

"""Every case of :mod:`tests.bad_inputs.cases`: the outcome it promises, nothing lost."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.bad_inputs.cases import CASES, BadInput
from tests.bad_inputs.shared import SharedInputs


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> SharedInputs:
    return SharedInputs(tmp_path_factory.mktemp("bad_inputs_shared"))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: BadInput, shared: SharedInputs, tmp_path: Path) -> None:
    observed = case.run(tmp_path, shared)
    assert re.search(case.match, observed), observed
    if case.expect == "recorded":
        assert observed.startswith("recorded") or "failed" in observed, observed


def test_case_ids_are_unique_and_expectations_known() -> None:
    assert len({case.id for case in CASES}) == len(CASES)
    assert {case.expect for case in CASES} == {"error", "recorded", "kept"}

"""The one rule for user-fixable errors: exit 2, one line, the traceback only with --debug."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from molssl.cli import EXTRA_SUBCOMMANDS, ExtraSubcommand, main
from molssl.errors import DEBUG_ENV, UserError, debug_requested, one_line


class _BadRecordError(UserError):
    pass


def _raise(_namespace) -> None:
    raise _BadRecordError("data.csv, line 7, column 'smiles': expected a SMILES string, got ''")


@pytest.fixture
def failing_subcommand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        EXTRA_SUBCOMMANDS, "failing", ExtraSubcommand("Fails.", lambda parser: None, _raise)
    )
    monkeypatch.delenv(DEBUG_ENV, raising=False)


def test_user_error_is_one_line_and_exit_2(
    failing_subcommand: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["failing"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        "molssl failing: error: data.csv, line 7, column 'smiles': "
        "expected a SMILES string, got ''\n"
    )


def test_debug_flag_keeps_the_traceback(failing_subcommand: None) -> None:
    with pytest.raises(_BadRecordError):
        main(["failing", "--debug"])


def test_debug_environment_keeps_the_traceback(
    failing_subcommand: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(_BadRecordError):
        main(["failing"])


def test_debug_requested(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    assert not debug_requested(["fit"])
    assert debug_requested(["fit", "--debug"])
    monkeypatch.setenv(DEBUG_ENV, "0")
    assert not debug_requested([])
    monkeypatch.setenv(DEBUG_ENV, "yes")
    assert debug_requested([])


class _FailingDataset(Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> torch.Tensor:
        raise _BadRecordError(
            f"shard-000003.tar, record {index}: sha256 does not match the manifest"
        )


def test_an_error_from_a_loader_worker_keeps_its_own_message() -> None:
    loader = DataLoader(_FailingDataset(), num_workers=1)
    with pytest.raises(_BadRecordError) as info:
        next(iter(loader))
    assert "Original Traceback" in str(info.value)  # what PyTorch re-raises
    assert one_line(info.value) == (
        "shard-000003.tar, record 0: sha256 does not match the manifest"
    )


def test_one_line_folds_a_multi_line_message() -> None:
    assert one_line(UserError("first line\n  second line\n")) == "first line second line"

"""The command line of ``molssl fit|validate|test`` before LightningCLI parses it.

* ``--ckpt`` is an alias of Lightning's ``--ckpt_path``, and a missing or damaged file is
  reported in one line before anything is built.
* To evaluate a checkpoint (``validate``/``test --ckpt PATH``) the run's ``config.yaml`` (or,
  when it is gone, the hyper-parameters saved in the checkpoint) is put before everything the
  user typed, so their ``--config`` files and overrides are applied after it and win (see
  :mod:`molssl.checkpoints`). ``fit`` (resuming) takes its config from the command line.
* A command with nothing to build a model from says what to pass, instead of failing deep in
  Lightning with "model is required".
"""

from __future__ import annotations

import json
from pathlib import Path

from molssl.checkpoints import CheckpointError, checkpoint_run_config, find_run_config
from molssl.cli_common import exit_with_error, note
from molssl.errors import UserError
from molssl.last_checkpoint import unreadable_checkpoint_reason

__all__ = ["check_model_is_given", "with_checkpoint_config"]

# ``--ckpt`` is our short spelling; Lightning's Trainer methods call it ``ckpt_path``.
_CKPT_FLAGS = ("--ckpt", "--ckpt_path")
# Values of ``ckpt_path`` that Lightning resolves itself rather than reading a file.
_LIGHTNING_CKPT_ALIASES = ("best", "last", "hpc", "registry")
# What tells a Trainer subcommand which model to build.
_MODEL_FLAGS = ("-c", "--config", "--model", "--print_config")
_HELP_FLAGS = ("-h", "--help")


def with_checkpoint_config(subcommand: str, argv: list[str]) -> list[str]:
    """``argv`` with ``--ckpt`` spelled ``--ckpt_path`` and, to evaluate, the run's config first.

    Exits with status 2 for a checkpoint file that is not there or cannot be read.
    """
    argv, ckpt_path = _normalise_ckpt_flag(argv)
    if ckpt_path is None or _is_lightning_ckpt_alias(ckpt_path):
        return argv
    if not Path(ckpt_path).is_file():
        exit_with_error(subcommand, f"checkpoint not found: {ckpt_path}")
    if subcommand == "fit":
        # Resuming reads the file only after the data are set up; a damaged one fails now.
        reason = unreadable_checkpoint_reason(ckpt_path)
        if reason is not None:
            exit_with_error(subcommand, f"cannot resume from {ckpt_path}: {reason}")
        return argv
    run_config = find_run_config(ckpt_path)
    if run_config is not None:
        note(subcommand, f"using the run's config {run_config} (the command line overrides it)")
        return ["--config", str(run_config), *argv]
    try:
        sections = checkpoint_run_config(ckpt_path)
    except CheckpointError as exc:
        if exc.reason == "no_run_config" and _names_model(argv):
            return argv
        exit_with_error(subcommand, str(exc))
    note(subcommand, f"no config.yaml beside {ckpt_path}: using its saved hyper-parameters")
    return ["--config", json.dumps(sections), *argv]


def check_model_is_given(subcommand: str, argv: list[str]) -> None:
    """Raises a :class:`UserError` saying what to pass when ``argv`` names no model at all.

    ``argv`` is the command line after :func:`with_checkpoint_config` (a checkpoint's run
    config already counts as a config). Help requests pass.
    """
    flags = {token.split("=", 1)[0] for token in argv if token.startswith("-")}
    if flags & set(_HELP_FLAGS) or any(flag.endswith(".help") for flag in flags):
        return
    if any(flag == name or flag.startswith(f"{name}.") for flag in flags for name in _MODEL_FLAGS):
        return
    if subcommand == "fit":
        raise UserError(
            "nothing to train: pass --config CONFIG.yaml (the configs/ folder of molssl has "
            "them, e.g. --config configs/cpu/unicorn.yaml on a CPU) or --model CLASS; "
            "`molssl fit --help` lists every option"
        )
    raise UserError(
        f"nothing to {subcommand}: pass --ckpt CHECKPOINT (its run's config is found beside "
        "it) or --config CONFIG.yaml"
    )


def _normalise_ckpt_flag(argv: list[str]) -> tuple[list[str], str | None]:
    out: list[str] = []
    ckpt_path: str | None = None
    tokens = iter(argv)
    for token in tokens:
        flag, eq, value = token.partition("=")
        if flag not in _CKPT_FLAGS:
            out.append(token)
            continue
        if not eq:
            value = next(tokens, "")
            if not value:
                # Let the parser report the missing value in its usual words.
                out.append("--ckpt_path")
                continue
        # The last occurrence wins, as for any repeated option.
        ckpt_path = value
        out.append(f"--ckpt_path={value}")
    return out, ckpt_path


def _is_lightning_ckpt_alias(ckpt_path: str) -> bool:
    return ckpt_path in _LIGHTNING_CKPT_ALIASES or ckpt_path.startswith("registry:")


def _names_model(argv: list[str]) -> bool:
    """Whether the user gives the model (or a config file that may) on the command line."""
    return any(
        token in ("-c", "--config", "--model") or token.startswith(("--config=", "--model"))
        for token in argv
    )

"""The ``molssl`` command line: Lightning's ``fit``/``validate``/``test`` and our own commands.

::

    molssl fit --config configs/cpu/unicorn.yaml
    molssl test --ckpt runs/unicorn/version_0/checkpoints/last.ckpt
    molssl predict --ckpt best.ckpt --input new.csv --output preds.csv

This module only dispatches, and imports nothing heavy, so that ``molssl --help`` and the help
of every command come back at once:

- ``fit``, ``validate`` and ``test`` run LightningCLI (:mod:`molssl.trainer_cli`, imported
  when one of them runs); their ``--help`` texts are cached on disk after the first call
  (:mod:`molssl.help_cache`);
- the other commands (``predict``, ``prepare``, ``embed``, ``seeds``) are listed in
  :data:`molssl.commands.EXTRA_SUBCOMMANDS` and import their module only when they run or
  print their help. A command registered with ``forward_unknown=True`` receives the options
  it does not declare as ``namespace.overrides`` (``molssl seeds`` passes them to ``fit``).

Errors a user can fix (:class:`~molssl.errors.UserError`: bad data, a mistyped config key, a
missing checkpoint) end with ``molssl <subcommand>: error: <one line>`` and exit status 2; with
``--debug`` or ``MOLSSL_DEBUG=1`` the traceback is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import sys
from typing import TYPE_CHECKING, Any

from molssl import __version__
from molssl.cli_common import PROG, exit_with_error, make_working_directory_importable
from molssl.commands import EXTRA_SUBCOMMANDS, ExtraSubcommand
from molssl.errors import DEBUG_FLAG, UserError, debug_requested, one_line

if TYPE_CHECKING:
    from collections.abc import Callable

    from jsonargparse import ArgumentParser, Namespace

__all__ = [
    "EXTRA_SUBCOMMANDS",
    "PROG",
    "TRAINER_SUBCOMMANDS",
    "WARM_CLASS_HELP",
    "ExtraSubcommand",
    "main",
    "register_subcommand",
    "split_declared_options",
    "warm_help_cache",
]

#: Subcommands run by LightningCLI (``predict`` is molssl's own, see molssl.commands.predict).
TRAINER_SUBCOMMANDS = ("fit", "validate", "test")
_TRAINER_HELP = {
    "fit": "Train a model from a config (pre-training or fine-tuning): "
    "molssl fit --config CONFIG.yaml",
    "validate": "Evaluate a checkpoint on the validation split: molssl validate --ckpt CKPT",
    "test": "Evaluate a checkpoint on the test split, print the metrics and keep them beside "
    "it: molssl test --ckpt CKPT",
}

# Names kept importable from here for code written against the former single-module CLI.
_MOVED = {
    "MolsslCLI": "molssl.trainer_cli",
    "run_trainer_command": "molssl.trainer_cli",
    "format_metrics_table": "molssl.trainer_cli",
    "METRICS_BESIDE_CHECKPOINT": "molssl.trainer_cli",
}


def __getattr__(name: str) -> Any:
    """Lightning-side names, imported on first use (PEP 562) so that this module stays light."""
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_subcommand(
    name: str,
    help: str,
    add_arguments: Callable[[ArgumentParser], None],
    run: Callable[[Namespace], None],
    forward_unknown: bool = False,
) -> None:
    """Adds a non-Trainer subcommand to ``molssl`` (see :class:`ExtraSubcommand`).

    Raises:
        ValueError: If ``name`` is already a subcommand.
    """
    if name in TRAINER_SUBCOMMANDS or name in EXTRA_SUBCOMMANDS:
        raise ValueError(f"molssl already has a subcommand named {name!r}")
    EXTRA_SUBCOMMANDS[name] = ExtraSubcommand(help, add_arguments, run, forward_unknown)


def main(args: list[str] | None = None) -> None:
    """Runs the ``molssl`` command line.

    Args:
        args: Command-line arguments without the program name; ``None`` reads ``sys.argv``.

    Raises:
        SystemExit: With status 2 and a one-line message on stderr for a bad command line or
            config, a missing or unreadable checkpoint, a checkpoint that does not fit the
            model, or any other :class:`~molssl.errors.UserError` (bad input data); with
            ``--debug`` or ``MOLSSL_DEBUG=1`` a ``UserError`` keeps its traceback.
    """
    argv = list(sys.argv[1:] if args is None else args)
    debug = debug_requested(argv)
    argv = [token for token in argv if token != DEBUG_FLAG]
    subcommand = argv[0] if argv else ""
    make_working_directory_importable()
    try:
        if subcommand in EXTRA_SUBCOMMANDS:
            _run_extra_subcommand(subcommand, argv[1:])
        elif subcommand in TRAINER_SUBCOMMANDS:
            _run_trainer_subcommand(argv)
        else:
            _run_top_level(argv)
    except UserError as error:
        # Bad data, a bad option value, a checkpoint that does not fit the model: the user's
        # to mend, so one line and exit 2 (molssl.errors); --debug keeps the traceback.
        if debug:
            raise
        exit_with_error(subcommand, one_line(error))


# -- molssl, molssl --help, molssl --version --------------------------------------------------


def _subcommand_help() -> dict[str, str]:
    return {**_TRAINER_HELP, **{name: cmd.help for name, cmd in EXTRA_SUBCOMMANDS.items()}}


def top_level_parser() -> argparse.ArgumentParser:
    """The parser behind ``molssl --help``: every subcommand with one line of help."""
    commands = _subcommand_help()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Self-supervised molecular pre-training (UniCorn, MoleBLEND), fine-tuning "
        "and prediction.",
        epilog=f"Run `{PROG} <subcommand> --help` for its options. Add {DEBUG_FLAG} (or "
        "MOLSSL_DEBUG=1) to see the traceback of an error.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(
        title="subcommands", dest="subcommand", metavar="{" + ",".join(commands) + "}"
    )
    for name, text in commands.items():
        subparsers.add_parser(name, help=text)
    return parser


def _run_top_level(argv: list[str]) -> None:
    parser = top_level_parser()
    if argv and not argv[0].startswith("-"):
        close = difflib.get_close_matches(argv[0], list(_subcommand_help()), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UserError(
            f"unknown subcommand {argv[0]!r}{hint} (subcommands: {', '.join(_subcommand_help())})"
        )
    parser.parse_args(argv)  # --help and --version print and exit; an unknown option is an error
    parser.print_usage(sys.stderr)
    exit_with_error("", f"choose a subcommand ({PROG} --help lists them)")


# -- fit / validate / test ------------------------------------------------------------------------


def _run_trainer_subcommand(argv: list[str]) -> None:
    from molssl.help_cache import fixed_width, is_cacheable_help, read_cached, write_cached

    if is_cacheable_help(argv):
        cached = read_cached(argv)
        if cached is not None:
            sys.stdout.write(cached)
            raise SystemExit(0)
        buffer = io.StringIO()
        try:
            with fixed_width(), contextlib.redirect_stdout(buffer):
                _run_lightning(argv)
        except SystemExit as exit_info:
            text = buffer.getvalue()
            if exit_info.code in (0, None) and text:
                write_cached(argv, text)
            sys.stdout.write(text)
            raise
        return
    _run_lightning(argv)


#: ``--<group>.help NAME`` requests that :func:`warm_help_cache` caches for every subcommand:
#: molssl's models and data modules by their short names.
WARM_CLASS_HELP = (
    ("model", "PretrainModule"),
    ("model", "FinetuneModule"),
    ("data", "PretrainDataModule"),
    ("data", "MoleculeNetDataModule"),
    ("data", "QM9DataModule"),
    ("data", "MD17DataModule"),
    ("data", "MD22DataModule"),
)


def warm_help_cache(subcommands: tuple[str, ...] = TRAINER_SUBCOMMANDS) -> None:
    """Caches ``molssl <subcommand> --help`` and ``--model.help`` / ``--data.help`` of molssl's
    classes (:data:`WARM_CLASS_HELP`) for each subcommand, in one process.

    ``make install`` calls it, so that the first ``molssl fit --help`` (or ``molssl fit
    --model.help FinetuneModule``) is as fast as the later ones (:mod:`molssl.help_cache`).
    """
    # A class's help names its program after sys.argv[0]: as the console script does.
    program, sys.argv[0] = sys.argv[0], PROG
    try:
        for subcommand in subcommands:
            requests = [[subcommand, "--help"]]
            requests += [[subcommand, f"--{group}.help", name] for group, name in WARM_CLASS_HELP]
            for argv in requests:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
                    main(argv)
    finally:
        sys.argv[0] = program


def _run_lightning(argv: list[str]) -> None:
    from molssl.trainer_cli import run_trainer_command

    run_trainer_command(argv)


# -- predict, prepare, embed, seeds, ... ------------------------------------------------------


def _run_extra_subcommand(name: str, argv: list[str]) -> None:
    from jsonargparse import ArgumentParser

    command = EXTRA_SUBCOMMANDS[name]
    parser = ArgumentParser(prog=f"{PROG} {name}", description=command.help)
    command.add_arguments(parser)
    if not command.forward_unknown:
        command.run(parser.parse_args(argv))
        return
    known, unknown = split_declared_options(parser, argv)
    namespace = parser.parse_args(known)
    namespace.overrides = unknown
    command.run(namespace)


def split_declared_options(parser: ArgumentParser, argv: list[str]) -> tuple[list[str], list[str]]:
    """``argv`` split into the parser's own options (with their values) and everything else.

    A value goes with the option before it; a token like ``-0.5`` is a value, not an option.
    Tokens before any option stay with the parser (its positionals).
    """
    declared = {flag for action in parser._actions for flag in action.option_strings}
    known: list[str] = []
    unknown: list[str] = []
    target = known
    for token in argv:
        if token.startswith("-") and not _is_number(token):
            target = known if token.split("=", 1)[0] in declared else unknown
        target.append(token)
    return known, unknown


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True

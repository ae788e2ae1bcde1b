"""The ``molssl`` command line: Lightning's ``fit``/``validate``/``test``/``predict`` and our own.

Models and data are named by ``class_path`` in YAML (any ``LightningModule`` /
``LightningDataModule``), so a user's own subclass needs no registry edit::

    molssl fit --config configs/unicorn.yaml --trainer.max_steps 1000
    molssl test --ckpt runs/lightning_logs/version_0/checkpoints/last.ckpt

Defaults chosen for our users:

- runs go under ``runs/`` (``trainer.default_root_dir``), logged with TensorBoard (Lightning's
  default logger; ``tensorboard`` is a dependency), with the full config saved beside them as
  ``<log_dir>/config.yaml`` and ``last.ckpt`` always written (``--checkpoint.*`` configures it);
- ``seed_everything`` is 0, so the same command gives the same run;
- no ``--optimizer``/``--lr_scheduler`` groups (``auto_configure_optimizers=False``): our modules
  own their optimiser and schedule (AdamW + warm-up/cosine) as constructor arguments, so there is
  one place to set them, and a CLI group cannot silently replace ``configure_optimizers``.

Every Trainer subcommand accepts ``--ckpt`` as an alias of ``--ckpt_path`` and reports a missing
file plainly. ``fit --ckpt_path last`` resumes from the newest ``last.ckpt`` of the run's logger
version folders (a restarted job logs into a new one; see :mod:`molssl.last_checkpoint`).
``validate``/``test``/``predict`` accept it on its own: the run's saved config, or else the
hyper-parameters inside the checkpoint, is layered beneath whatever ``--config`` files and
overrides the command line gives (see :mod:`molssl.checkpoints`). Those commands save their own
config as ``<subcommand>_config.yaml``, never over the training run's ``config.yaml``;
``validate`` and ``test`` also write ``<subcommand>_metrics.json`` into their log dir and print
the metrics as a table; ``test`` of a checkpoint file writes the same record as ``metrics.json``
beside the checkpoint, where it stays with the weights it describes (a later ``test`` of a
checkpoint in the same folder replaces it; the record names the checkpoint it belongs to).

Modules in the working directory can be named by ``class_path`` (an ablation next to its YAML).

Commands that do not drive a Trainer (data preparation, the seeds runner) are registered in
:data:`EXTRA_SUBCOMMANDS`; :func:`main` dispatches to them before Lightning parses anything. A
command registered with ``forward_unknown=True`` receives the arguments it does not declare
(e.g. ``--trainer.max_epochs 5``) as ``namespace.overrides``, to pass on to a Trainer command
run in-process with :func:`run_trainer_command`.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from argparse import ArgumentError, RawDescriptionHelpFormatter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from jsonargparse import ArgumentParser, DefaultHelpFormatter, Namespace
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from molssl import __version__
from molssl.checkpoints import CheckpointError, checkpoint_run_config, find_run_config
from molssl.config_errors import (
    ConfigError,
    config_files,
    instantiation_error,
    summarize_config_error,
)
from molssl.errors import DEBUG_FLAG, UserError, debug_requested, one_line
from molssl.last_checkpoint import (
    find_last_checkpoint,
    last_checkpoint_folders,
    unreadable_checkpoint_reason,
)

PROG = "molssl"
TRAINER_SUBCOMMANDS = tuple(LightningCLI.subcommands())
# ``--ckpt`` is our short spelling; Lightning's Trainer methods call it ``ckpt_path``.
_CKPT_FLAGS = ("--ckpt", "--ckpt_path")
# Values of ``ckpt_path`` that Lightning resolves itself rather than reading a file.
_LIGHTNING_CKPT_ALIASES = ("best", "last", "hpc", "registry")
#: Name of the metrics file ``molssl test`` writes beside the checkpoint it evaluated.
METRICS_BESIDE_CHECKPOINT = "metrics.json"


@dataclass(frozen=True)
class ExtraSubcommand:
    """A ``molssl`` subcommand that runs outside Lightning's Trainer.

    Attributes:
        help: One line shown by ``molssl --help``.
        add_arguments: Adds the subcommand's options to its own parser.
        run: Does the work, given the parsed options.
        forward_unknown: Collect the options the parser does not declare, with their values,
            into ``namespace.overrides`` (a list of tokens) instead of rejecting them.
    """

    help: str
    add_arguments: Callable[[ArgumentParser], None]
    run: Callable[[Namespace], None]
    forward_unknown: bool = False


EXTRA_SUBCOMMANDS: dict[str, ExtraSubcommand] = {}
"""Non-Trainer subcommands by name. A module providing one calls :func:`register_subcommand`
at import time, and this module imports it, so that the console script sees the command."""


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


class _HelpFormatter(RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help, keeping the line breaks of the extra-subcommand table."""


class MolsslCLI(LightningCLI):
    """LightningCLI with molssl's checkpoint callback, config naming and metrics file."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Adds an always-present ``ModelCheckpoint`` (``--checkpoint.*``) keeping ``last.ckpt``."""
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True})

    def _parse_ckpt_path(self) -> None:
        """Leaves the parsed config alone.

        Lightning's version re-applies the checkpoint's hyper-parameters on top of the parsed
        config, which would override the user's explicit ``--model.*`` arguments. :func:`main`
        already layers the checkpoint's config beneath the command line instead.
        """

    def before_instantiate_classes(self) -> None:
        """Names the config saved by evaluation runs ``<subcommand>_config.yaml``.

        Their log dir can be the training run's own (a logger with a fixed ``version``), and
        their config must not replace the ``config.yaml`` that says how the checkpoint was
        trained and that later ``--ckpt`` runs read back.
        """
        if self.subcommand is not None and self.subcommand != "fit":
            self.save_config_kwargs = {
                **self.save_config_kwargs,
                "config_filename": f"{self.subcommand}_config.yaml",
            }

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer, without the ``checkpoint`` callback if checkpointing is switched off.

        Lightning refuses ``enable_checkpointing=False`` alongside a ``ModelCheckpoint``; the user
        who sets it means "no checkpoints", so the always-present callback steps aside.
        """
        if self.config_init[self.subcommand]["trainer"].get("enable_checkpointing") is False:
            parser = self._parser(self.subcommand)
            parser.callback_keys = [key for key in parser.callback_keys if key != "checkpoint"]
        return super().instantiate_trainer(**kwargs)

    def instantiate_classes(self) -> None:
        """Lightning's, with a class's refusal of an argument as one line (molssl.config_errors)."""
        try:
            super().instantiate_classes()
        except ValueError as error:
            converted = instantiation_error(error)
            if converted is None:
                raise
            raise converted from error

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        """Lightning's keyword arguments, with ``fit --ckpt_path last`` resolved to a file.

        See :mod:`molssl.last_checkpoint`: the newest complete ``last.ckpt`` of the run's
        checkpoint folder or logger version folders, named on stderr; when there is none, a
        note says so and the run starts from scratch (the first run of a job script that always
        passes ``--ckpt_path last``).
        """
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if subcommand == "fit" and kwargs.get("ckpt_path") == "last":
            found, skipped = find_last_checkpoint(self.trainer)
            for note in skipped:
                _note(subcommand, f"--ckpt_path last: passing over {note}")
            if found is None:
                searched = ", ".join(last_checkpoint_folders(self.trainer))
                _note(
                    subcommand,
                    f"--ckpt_path last: no last.ckpt in {searched}; starting from scratch",
                )
                kwargs["ckpt_path"] = None
            else:
                _note(subcommand, f"--ckpt_path last: resuming from {found}")
                kwargs["ckpt_path"] = str(found)
        return kwargs

    def after_validate(self) -> None:
        """Writes the validation metrics as JSON into the log dir."""
        self._write_metrics("validate")

    def after_test(self) -> None:
        """Writes the test metrics as JSON into the log dir."""
        self._write_metrics("test")

    def _write_metrics(self, subcommand: str) -> None:
        if not self.trainer.is_global_zero:
            return
        log_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        ckpt_path = self.trainer.ckpt_path or self.config[subcommand].get("ckpt_path")
        metrics = {name: value.item() for name, value in self.trainer.callback_metrics.items()}
        record = {
            "subcommand": subcommand,
            "ckpt_path": None if ckpt_path is None else str(ckpt_path),
            "metrics": metrics,
        }
        text = json.dumps(record, indent=2) + "\n"
        paths = [log_dir / f"{subcommand}_metrics.json"]
        if subcommand == "test" and ckpt_path is not None and Path(ckpt_path).is_file():
            paths.append(Path(ckpt_path).parent / METRICS_BESIDE_CHECKPOINT)
        for path in paths:
            path.write_text(text)
        print(format_metrics_table(metrics, title=f"{PROG} {subcommand}: {ckpt_path or 'metrics'}"))
        print(f"{subcommand} metrics written to {' and '.join(str(p) for p in paths)}")


def format_metrics_table(metrics: dict[str, float], title: str = "") -> str:
    """A plain two-column ``name  value`` table, names sorted, values to 6 significant digits."""
    width = max([len("metric"), *(len(name) for name in metrics)])
    lines = [title] if title else []
    lines.append(f"  {'metric':<{width}}  value")
    lines += [f"  {name:<{width}}  {metrics[name]:.6g}" for name in sorted(metrics)]
    return "\n".join(lines)


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
    _make_working_directory_importable()
    try:
        if subcommand in EXTRA_SUBCOMMANDS:
            _run_extra_subcommand(subcommand, argv[1:])
        else:
            run_trainer_command(argv)
    except UserError as error:
        # Bad data, a bad option value, a checkpoint that does not fit the model: the user's
        # to mend, so one line and exit 2 (molssl.errors); --debug keeps the traceback.
        if debug:
            raise
        _exit_with_error(subcommand, one_line(error))


def run_trainer_command(argv: list[str]) -> MolsslCLI:
    """Runs ``molssl fit|validate|test|predict ...`` in-process and returns the finished CLI.

    What :func:`main` does for those subcommands (``--ckpt``, the run's config); a caller such
    as the seeds runner reads ``cli.trainer`` afterwards (best checkpoint, metrics).
    """
    _make_working_directory_importable()
    if argv and argv[0] in TRAINER_SUBCOMMANDS:
        argv = [argv[0], *_with_checkpoint_config(argv[0], argv[1:])]
    with warnings.catch_warnings():
        # Lightning warns whenever ``args`` and ``sys.argv`` are both set; here ``args`` is
        # ``sys.argv`` itself, or the caller's explicit choice, never an accident.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return _run_lightning_cli(argv)


def _run_lightning_cli(argv: list[str]) -> MolsslCLI:
    try:
        return _lightning_cli(argv)
    except ArgumentError as error:
        # A config or command line jsonargparse cannot use: one line (molssl.config_errors).
        raise ConfigError(summarize_config_error(str(error), config_files(argv))) from error


def _lightning_cli(argv: list[str]) -> MolsslCLI:
    return MolsslCLI(
        model_class=LightningModule,
        # None, not LightningDataModule: Lightning then makes ``data`` optional (still any
        # LightningDataModule subclass), for modules that bring their own dataloaders.
        datamodule_class=None,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=SaveConfigCallback,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"default_root_dir": "runs"},
        seed_everything_default=0,
        auto_configure_optimizers=False,
        parser_kwargs={
            "prog": PROG,
            "version": __version__,
            "description": "Self-supervised molecular pre-training (UniCorn, MoleBLEND).",
            "epilog": _extra_subcommands_epilog(),
            "formatter_class": _HelpFormatter,
            # Errors raise ArgumentError, made one line by _run_lightning_cli.
            "exit_on_error": False,
        },
        args=argv,
    )


def _make_working_directory_importable() -> None:
    """Lets YAML name ``class_path: my_module.MyObjective`` for a module in the working directory.

    A console script's ``sys.path`` starts at its own folder, not the user's, so an ablation
    written next to its config would not import (``python -m`` and notebooks do see it). The
    folder goes last, so that it never shadows an installed package.
    """
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)


def _run_extra_subcommand(name: str, argv: list[str]) -> None:
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


def _extra_subcommands_epilog() -> str | None:
    if not EXTRA_SUBCOMMANDS:
        return None
    # Column 24, where argparse puts the help of fit/validate/test/predict just above.
    width = max(18, *(len(name) for name in EXTRA_SUBCOMMANDS))
    lines = [f"    {name:<{width}}  {cmd.help}" for name, cmd in sorted(EXTRA_SUBCOMMANDS.items())]
    return "more subcommands (molssl <subcommand> --help):\n" + "\n".join(lines)


def _with_checkpoint_config(subcommand: str, argv: list[str]) -> list[str]:
    """``argv`` with ``--ckpt`` spelled ``--ckpt_path`` and, to evaluate, the run's config first.

    The run's config goes before everything the user typed, so their ``--config`` files and
    overrides are applied after it and win. ``fit`` (resuming) takes its config from the
    command line like any other fit.
    """
    argv, ckpt_path = _normalise_ckpt_flag(argv)
    if ckpt_path is None or _is_lightning_ckpt_alias(ckpt_path):
        return argv
    if not Path(ckpt_path).is_file():
        _exit_with_error(subcommand, f"checkpoint not found: {ckpt_path}")
    if subcommand == "fit":
        # Resuming reads the file only after the data are set up; a damaged one fails now.
        reason = unreadable_checkpoint_reason(ckpt_path)
        if reason is not None:
            _exit_with_error(subcommand, f"cannot resume from {ckpt_path}: {reason}")
        return argv
    run_config = find_run_config(ckpt_path)
    if run_config is not None:
        _note(subcommand, f"using the run's config {run_config} (the command line overrides it)")
        return ["--config", str(run_config), *argv]
    try:
        sections = checkpoint_run_config(ckpt_path)
    except CheckpointError as exc:
        if exc.reason == "no_run_config" and _names_model(argv):
            return argv
        _exit_with_error(subcommand, str(exc))
    _note(subcommand, f"no config.yaml beside {ckpt_path}: using its saved hyper-parameters")
    return ["--config", json.dumps(sections), *argv]


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


def _note(subcommand: str, message: str) -> None:
    sys.stderr.write(f"{PROG} {subcommand}: {message}\n")


def _exit_with_error(subcommand: str, message: str) -> NoReturn:
    sys.stderr.write(f"{PROG} {subcommand}: error: {message}\n")
    raise SystemExit(2)


# Last, because the command modules import this one to register themselves (an import at the top
# would hand them a half-initialised module without register_subcommand).
import molssl.commands  # noqa: E402, F401  (registers prepare, seeds, ...)

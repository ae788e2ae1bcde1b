"""``molssl fit|validate|test``: LightningCLI with molssl's defaults.

Models and data are named by ``class_path`` in YAML (any ``LightningModule`` /
``LightningDataModule``), so a user's own subclass needs no registry edit; molssl's own classes
also go by their short names (``--model FinetuneModule``, ``--model.help FinetuneModule``), and
encoder arguments are typed :class:`~molssl.encoders.base.Encoder`, so ``--help`` lists
molssl's encoders. Defaults chosen for our users:

- runs go under ``runs/`` (``trainer.default_root_dir``), logged with TensorBoard, with the full
  config saved beside them as ``<log_dir>/config.yaml`` and ``last.ckpt`` always written, at
  the state the run ended in (``--checkpoint.*`` configures it; :mod:`molssl.checkpoint_callback`);
- ``seed_everything`` is 0, so the same command gives the same run;
- no ``--optimizer``/``--lr_scheduler`` groups (``auto_configure_optimizers=False``): our modules
  own their optimiser and schedule as constructor arguments;
- a fine-tuning model's ``task`` and ``num_tasks`` follow from the data when the config leaves
  them out (:mod:`molssl.task_link`);
- ``fit`` shows the global step and molecules per second, logs a few points per epoch, warns
  before a first CPU step that will not fit in memory and ends with the best validation metric
  and checkpoint (:mod:`molssl.callbacks`); Lightning's adverts and known deprecation warnings
  are silenced (:mod:`molssl.quiet`);
- a mistyped key ends with the closest accepted key (:mod:`molssl.config_errors`); a run that
  fails before its first step leaves no run folder behind.

``--ckpt`` is an alias of ``--ckpt_path``; ``fit --ckpt_path last`` resumes from the newest
``last.ckpt`` of the run (:mod:`molssl.last_checkpoint`); ``validate``/``test --ckpt PATH``
need nothing else (:mod:`molssl.trainer_args`). Those commands save their own config as
``<subcommand>_config.yaml``, never over the training run's ``config.yaml``, print the
metrics as one table and write ``<subcommand>_metrics.json`` into their log dir; ``test`` of a
checkpoint file writes the same record as ``metrics.json`` beside the checkpoint (a later
``test`` of a checkpoint in the same folder replaces it; the record names its checkpoint).
"""

from __future__ import annotations

import json
import shutil
import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

# Imported so that their classes resolve by short name (``--model FinetuneModule``).
import molssl.datamodules
import molssl.encoders
import molssl.modules
import molssl.objectives  # noqa: F401
from molssl import __version__
from molssl.callbacks import default_callbacks
from molssl.checkpoint_callback import LastStateCheckpoint
from molssl.cli_common import PROG, make_working_directory_importable, note
from molssl.config_errors import (
    ConfigError,
    config_files,
    instantiation_error,
    option_strings,
    summarize_config_error,
)
from molssl.last_checkpoint import find_last_checkpoint, last_checkpoint_folders
from molssl.modules.init_from import check_init_from
from molssl.quiet import silence_known_noise
from molssl.short_names import expand_short_help
from molssl.task_link import fill_tasks_from_data
from molssl.trainer_args import check_model_is_given, with_checkpoint_config

__all__ = ["METRICS_BESIDE_CHECKPOINT", "MolsslCLI", "format_metrics_table", "run_trainer_command"]

#: Name of the metrics file ``molssl test`` writes beside the checkpoint it evaluated.
METRICS_BESIDE_CHECKPOINT = "metrics.json"


class MolsslCLI(LightningCLI):
    """LightningCLI with molssl's checkpoint callback, callbacks, config naming and metrics."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """``fit``, ``validate`` and ``test`` (``molssl predict`` is a command of its own)."""
        commands = dict(LightningCLI.subcommands())
        commands.pop("predict", None)
        return commands

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Adds an always-present checkpoint callback (``--checkpoint.*``) keeping ``last.ckpt``
        at the state training ended in (:mod:`molssl.checkpoint_callback`)."""
        parser.add_lightning_class_args(LastStateCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True})

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Lightning's parsing; an error is one line naming the key (molssl.config_errors).

        The subcommand's own options are at hand here, for the closest match of a mistyped
        option or top-level key.
        """
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as error:
            argv = list(args) if isinstance(args, list) else []
            subparser = getattr(self, "_subcommand_parsers", {}).get(argv[0] if argv else "")
            options = option_strings(subparser if subparser is not None else parser)
            message = summarize_config_error(str(error), config_files(argv), options)
            raise ConfigError(message) from error

    def instantiate_classes(self) -> None:
        """Lightning's, with a class's refusal of an argument as one line (molssl.config_errors)."""
        try:
            super().instantiate_classes()
        except ValueError as error:
            converted = instantiation_error(error)
            if converted is None:
                raise
            raise converted from error

    def _parse_ckpt_path(self) -> None:
        """Leaves the parsed config alone.

        Lightning's version re-applies the checkpoint's hyper-parameters on top of the parsed
        config, which would override the user's explicit ``--model.*`` arguments.
        :mod:`molssl.trainer_args` already layers the checkpoint's config beneath the command
        line instead.
        """

    def before_instantiate_classes(self) -> None:
        """Takes the model's tasks from the data; names the evaluation configs apart.

        The config of ``validate``/``test`` is saved as ``<subcommand>_config.yaml``: their log
        dir can be the training run's own (a logger with a fixed ``version``), and their config
        must not replace the ``config.yaml`` that says how the checkpoint was trained.
        """
        if self.subcommand is None:
            return
        if self.subcommand == "fit":
            # A missing init_from is the user's to fix: say so before the data is prepared.
            init_from = _model_init_args(self.config["fit"]).get("init_from")
            if init_from:
                check_init_from(init_from)
        filled = fill_tasks_from_data(self.config[self.subcommand])
        if filled:
            note(self.subcommand, filled)
        if self.subcommand != "fit":
            self.save_config_kwargs = {
                **self.save_config_kwargs,
                "config_filename": f"{self.subcommand}_config.yaml",
            }

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer, without the ``checkpoint`` callback when nothing is trained or saved.

        Lightning refuses ``enable_checkpointing=False`` alongside a ``ModelCheckpoint``; the user
        who sets it means "no checkpoints", so the always-present callback steps aside. It also
        stays out of ``validate``/``test``, which write no checkpoint (and would otherwise warn
        that the evaluated checkpoint's callback state belongs to another folder).
        """
        trainer_config = self.config_init[self.subcommand]["trainer"]
        if self.subcommand != "fit" or trainer_config.get("enable_checkpointing") is False:
            parser = self._parser(self.subcommand)
            parser.callback_keys = [key for key in parser.callback_keys if key != "checkpoint"]
        return super().instantiate_trainer(**kwargs)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        """Adds molssl's callbacks (:func:`molssl.callbacks.default_callbacks`)."""
        given = [*(config.get("callbacks") or []), *callbacks]
        extra = default_callbacks(self.subcommand or "", config, given)
        return super()._instantiate_trainer(config, [*callbacks, *extra])

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        """Lightning's keyword arguments, with ``fit --ckpt_path last`` resolved to a file.

        See :mod:`molssl.last_checkpoint`: the newest complete ``last.ckpt`` of the run's
        checkpoint folder or logger version folders, named on stderr; when there is none, a
        note says so and the run starts from scratch (the first run of a job script that always
        passes ``--ckpt_path last``). ``validate``/``test`` print molssl's table only, not
        Lightning's as well.
        """
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if subcommand in ("validate", "test"):
            kwargs["verbose"] = False
        if subcommand == "fit" and kwargs.get("ckpt_path") == "last":
            found, skipped = find_last_checkpoint(self.trainer)
            for reason in skipped:
                note(subcommand, f"--ckpt_path last: passing over {reason}")
            if found is None:
                searched = ", ".join(last_checkpoint_folders(self.trainer))
                note(
                    subcommand,
                    f"--ckpt_path last: no last.ckpt in {searched}; starting from scratch",
                )
                kwargs["ckpt_path"] = None
            else:
                note(subcommand, f"--ckpt_path last: resuming from {found}")
                kwargs["ckpt_path"] = str(found)
        return kwargs

    def _run_subcommand(self, subcommand: str) -> None:
        """Runs the subcommand; a run that fails before its first step leaves no folder."""
        created = _new_log_dir(self.trainer)
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            _remove_failed_run(self.trainer, created)
            raise

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


def _new_log_dir(trainer: Trainer) -> list[Path]:
    """The folders this run is about to create for its logs, deepest first (none if it exists)."""
    if trainer.logger is None or trainer.log_dir is None:
        return []
    log_dir = Path(trainer.log_dir)
    if log_dir.resolve() == Path(trainer.default_root_dir).resolve():
        return []
    created = []
    for folder in (log_dir, *log_dir.parents):
        if folder.exists():
            break
        created.append(folder)
    return created


def _remove_failed_run(trainer: Trainer, created: list[Path]) -> None:
    """Deletes the folders a run created if it failed before a step and wrote no checkpoint."""
    if not created or not created[0].is_dir() or not trainer.is_global_zero:
        return
    if trainer.global_step > 0 or any(created[0].rglob("*.ckpt")):
        return
    shutil.rmtree(created[0], ignore_errors=True)
    for folder in created[1:]:
        try:
            folder.rmdir()  # only if empty: a folder the failed run created on its way
        except OSError:
            break


def format_metrics_table(metrics: dict[str, float], title: str = "") -> str:
    """A plain two-column ``name  value`` table, names sorted, values to 6 significant digits."""
    width = max([len("metric"), *(len(name) for name in metrics)])
    lines = [title] if title else []
    lines.append(f"  {'metric':<{width}}  value")
    lines += [f"  {name:<{width}}  {metrics[name]:.6g}" for name in sorted(metrics)]
    return "\n".join(lines)


def run_trainer_command(argv: list[str]) -> MolsslCLI:
    """Runs ``molssl fit|validate|test ...`` in-process and returns the finished CLI.

    What :func:`molssl.cli.main` does for those subcommands (``--ckpt``, the run's config); a
    caller such as the seeds runner reads ``cli.trainer`` afterwards (best checkpoint, metrics).
    """
    make_working_directory_importable()
    argv = expand_short_help(argv)
    if argv and argv[0] in MolsslCLI.subcommands():
        rest = with_checkpoint_config(argv[0], argv[1:])
        check_model_is_given(argv[0], rest)
        argv = [argv[0], *rest]
    silence_known_noise()
    with warnings.catch_warnings():
        # Lightning warns whenever ``args`` and ``sys.argv`` are both set; here ``args`` is
        # ``sys.argv`` itself, or the caller's explicit choice, never an accident.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        # validate/test run without a ModelCheckpoint on purpose (they write no checkpoint);
        # the evaluated checkpoint's callback state has nowhere to go, and needs nowhere.
        warnings.filterwarnings(
            "ignore", message="Be aware that when using `ckpt_path`, callbacks used to create"
        )
        try:
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
                    # Errors raise ArgumentError, made one line by MolsslCLI.parse_arguments.
                    "exit_on_error": False,
                },
                args=argv,
            )
        except ArgumentError as error:
            # Any other error jsonargparse raises (MolsslCLI.parse_arguments handles parsing).
            raise ConfigError(summarize_config_error(str(error), config_files(argv))) from error


def _model_init_args(config: Any) -> dict[str, Any]:
    """The model's ``init_args`` of a parsed subcommand config (empty when there are none)."""
    model = config.get("model") if hasattr(config, "get") else None
    init_args = model.get("init_args") if hasattr(model, "get") else None
    return dict(init_args) if hasattr(init_args, "keys") else {}

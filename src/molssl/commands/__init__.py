"""``molssl`` subcommands that do not drive a Lightning Trainer, listed without importing them.

Each command is a module with ``add_arguments(parser)`` and ``run(namespace)``. The table
:data:`EXTRA_SUBCOMMANDS` names the module and a one-line help; the module is imported only when
its command runs or prints its help, so ``molssl --help`` and ``molssl prepare --help`` never
import Lightning or the chemistry stack (see :mod:`molssl.cli`). This package imports nothing
of molssl, and no command module imports :mod:`molssl.cli`: there is no import circle.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser, Namespace

__all__ = ["EXTRA_SUBCOMMANDS", "ExtraSubcommand", "lazy_subcommand"]


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


@dataclass(frozen=True)
class _Deferred:
    """``module.attribute(*args)``, the module imported on the first call."""

    module: str
    attribute: str

    def __call__(self, *args: Any) -> Any:
        return getattr(importlib.import_module(self.module), self.attribute)(*args)


def lazy_subcommand(module: str, help: str, forward_unknown: bool = False) -> ExtraSubcommand:
    """The subcommand of a module defining ``add_arguments`` and ``run``, imported on use."""
    return ExtraSubcommand(
        help, _Deferred(module, "add_arguments"), _Deferred(module, "run"), forward_unknown
    )


#: Non-Trainer subcommands by name, in the order ``molssl --help`` lists them.
EXTRA_SUBCOMMANDS: dict[str, ExtraSubcommand] = {
    "predict": lazy_subcommand(
        "molssl.commands.predict",
        "Predict the fine-tuned targets of new molecules: molssl predict --ckpt CKPT "
        "--input new.csv --output preds.csv",
    ),
    "prepare": lazy_subcommand(
        "molssl.commands.prepare",
        "Prepare molecule files into sharded pre-training records (conformers, features).",
    ),
    "embed": lazy_subcommand(
        "molssl.commands.embed",
        "Embed molecules with a checkpoint's encoder; t-SNE map and Davies-Bouldin index.",
    ),
    "seeds": lazy_subcommand(
        "molssl.commands.seeds",
        "Fine-tune a config over several seeds (fit, then test the chosen checkpoint; other "
        "options go to fit): mean ± std.",
        forward_unknown=True,
    ),
    "search": lazy_subcommand(
        "molssl.commands.search",
        "Fine-tune a config over a grid of settings x seeds, select the grid point on "
        "validation, then test that point only: mean ± std (other options go to every fit).",
        forward_unknown=True,
    ),
}

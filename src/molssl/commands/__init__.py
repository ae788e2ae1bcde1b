"""``molssl`` subcommands that do not drive a Lightning Trainer.

Importing this package imports each command module, which registers itself with
:func:`molssl.cli.register_subcommand`; :mod:`molssl.cli` imports it so that the console
script lists them.
"""

import molssl.commands.embed
import molssl.commands.prepare
import molssl.commands.search
import molssl.commands.seeds  # noqa: F401

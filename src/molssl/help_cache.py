"""Help texts of the Trainer subcommands, kept on disk so that ``molssl fit --help`` is fast.

``molssl fit --help`` is LightningCLI's help: building it imports Lightning, torch and every
molssl module and inspects their signatures, several seconds on a busy machine, for a text that
changes only when molssl or one of those packages does. The first such call writes its text
into ``$MOLSSL_CACHE/cli-help/``; later calls print it without importing any of them.

The entry's key holds everything the text depends on: the command line, molssl's version and
the modification times of its source files (an editable install that gains an encoder gets a
new help), and the versions of Lightning, jsonargparse and torch. Cached texts are laid out
:data:`WIDTH` columns wide whatever the terminal, so that one entry serves every terminal and
``make install`` can fill the cache (:func:`molssl.cli.warm_help_cache`). Only plain help
requests are cached (``--help``/``-h``, or ``--<group>.help NAME`` for a class that does not
come from the working directory); anything else on the command line (a config file, an
override) is run as usual. A cache that cannot be read or written is ignored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = [
    "WIDTH",
    "cache_dir",
    "cache_path",
    "fixed_width",
    "is_cacheable_help",
    "read_cached",
    "write_cached",
]

#: Columns of a cached help text.
WIDTH = 100

_PACKAGES = ("lightning", "jsonargparse", "torch")
_HELP_FLAGS = ("-h", "--help")
# Classes named by these prefixes are installed packages, whose help the key covers.
_INSTALLED_PREFIXES = ("molssl.", "lightning.", "torch.")


def cache_dir() -> Path:
    """``$MOLSSL_CACHE/cli-help`` (default ``~/.cache/molssl/cli-help``)."""
    configured = os.environ.get("MOLSSL_CACHE")
    root = Path(configured).expanduser() if configured else Path.home() / ".cache" / "molssl"
    return root / "cli-help"


def is_cacheable_help(argv: list[str]) -> bool:
    """Whether ``argv`` (subcommand first) asks for nothing but a help text worth caching."""
    rest = argv[1:]
    if len(rest) == 1:
        return rest[0] in _HELP_FLAGS
    if len(rest) == 2 and rest[0].startswith("--") and rest[0].endswith(".help"):
        name = rest[1]
        return "." not in name or name.startswith(_INSTALLED_PREFIXES)
    return False


def _source_stamp() -> str:
    package = Path(__file__).resolve().parent
    newest, count = 0, 0
    for folder, _, files in os.walk(package):
        for name in files:
            if name.endswith(".py"):
                count += 1
                newest = max(newest, os.stat(os.path.join(folder, name)).st_mtime_ns)
    return f"{count}:{newest}"


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "absent"


def cache_path(argv: list[str]) -> Path:
    """The file holding the help text of ``argv`` (it may not exist yet)."""
    from molssl import __version__

    key = {
        "argv": argv,
        "molssl": __version__,
        "source": _source_stamp(),
        "packages": {name: _version(name) for name in _PACKAGES},
        "width": WIDTH,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir() / f"{argv[0]}-{digest}.txt"


def read_cached(argv: list[str]) -> str | None:
    """The cached help text of ``argv``, or ``None``."""
    try:
        return cache_path(argv).read_text(encoding="utf-8")
    except OSError:
        return None


def write_cached(argv: list[str], text: str) -> None:
    """Keeps ``text`` as the help of ``argv`` (atomically; failures are ignored)."""
    path = cache_path(argv)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except OSError:
        return


@contextlib.contextmanager
def fixed_width() -> Iterator[None]:
    """Help laid out :data:`WIDTH` columns wide (argparse reads ``COLUMNS``)."""
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = before

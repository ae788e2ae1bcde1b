"""One line for a config the command line cannot use: which key, which file and line, why.

jsonargparse reports a bad config as a nested tree (``Parser key "model": Does not validate
against any of the Union subtypes ... Errors: - Problem with given class_path ...``) of 40 to 80
lines, with the one line that matters near the end, and a YAML syntax error as if the file were
``"<unicode string>"``. :func:`summarize_config_error` keeps what a user needs: the key path
(``model.encoder_3d``), the class concerned, the innermost reason, a close class name when a
``class_path`` has a typo, and the config file and line that hold the bad value. A mistyped key
also gets the accepted key closest to it, or the accepted keys when none is close
(``Option 'mask_ratoi' is not accepted; did you mean 'mask_ratio'?``): the class's arguments
for a key inside a class, the subcommand's options for a command-line option or a top-level
key.
:func:`instantiation_error` does the same for a class whose ``__init__`` refused a value
(``batch_size must be >= 1``), which jsonargparse wraps the same way.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from collections.abc import Sequence
from pathlib import Path

import yaml

from molssl.errors import UserError

__all__ = [
    "ConfigError",
    "config_files",
    "init_arguments",
    "instantiation_error",
    "option_strings",
    "summarize_config_error",
]

_KEY = re.compile(r'^-?\s*Parser key "([^"]+)":\s*$')
_CLASS = re.compile(r"^-?\s*Problem with given class_path '([^']+)':\s*$")
_NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value type:",
    "Given value:",
    "Expected a <class 'NoneType'>",
)
_QUOTED = re.compile(r"'([^']+)'")
_MAX_LENGTH = 400
_UNRECOGNIZED = re.compile(r"unrecognized arguments?: (.+)")
_TOP_LEVEL = re.compile(r"does not accept option '([^']+)'")
_NOT_ACCEPTED = re.compile(r"(?:Option|Key) '([^']+)' (?:is not accepted|is not expected)")
# Accepted keys listed in a message, at most (the rest are counted).
_LISTED = 16


class ConfigError(UserError):
    """A config or command line that cannot be parsed or instantiated (one line)."""


def config_files(argv: Sequence[str]) -> list[Path]:
    """The existing files named by ``--config``/``-c`` in ``argv``, in order."""
    found: list[Path] = []
    tokens = list(argv)
    for index, token in enumerate(tokens):
        value = None
        if token in ("-c", "--config") and index + 1 < len(tokens):
            value = tokens[index + 1]
        elif token.startswith("--config="):
            value = token.split("=", 1)[1]
        if value is not None and Path(value).is_file():
            found.append(Path(value))
    return found


def summarize_config_error(
    message: str, files: Sequence[Path] = (), options: Sequence[str] = ()
) -> str:
    """jsonargparse's error ``message`` as one line (see the module docstring).

    Args:
        message: jsonargparse's message.
        files: The config files of the command line (for the line holding the bad value).
        options: The ``--option`` strings of the subcommand's parser (for the keys accepted at
            the top level and on the command line).
    """
    text = message.strip()
    if text.startswith("Problems parsing config"):
        return _yaml_error(text, files)
    unrecognized = _UNRECOGNIZED.search(text)
    if unrecognized and options:
        tokens = unrecognized.group(1).split()
        flag = next((t.split("=", 1)[0] for t in tokens if t.startswith("--")), tokens[0])
        return _fold(f"{text}; " + _suggest(flag, _option_group(flag, options)))
    top = _TOP_LEVEL.search(text)
    if top and options:
        name = top.group(1).split(".", 1)[0]
        sections = {option[2:].split(".", 1)[0] for option in options if option[:2] == "--"}
        accepted = sorted(sections - {"help", "config", "print_config"})
        hint = _suggest(name, accepted, quote=True)
        return _fold(f"unknown key {name!r}; {hint}" + _location(name, files))
    lines = [line for line in text.splitlines() if line.strip()]
    target = _innermost(lines)
    if target is None:
        return _fold(text)
    path: list[tuple[int, str, str]] = []  # (indent, "key" | "class", name)
    for line in lines[: target + 1]:
        indent = _indent(line)
        while path and path[-1][0] >= indent:
            path.pop()
        key, klass = _KEY.match(line.strip()), _CLASS.match(line.strip())
        if key:
            path.append((indent, "key", key.group(1)))
        elif klass:
            path.append((indent, "class", klass.group(1)))
    detail = lines[target].strip().lstrip("- ").strip()
    # As the YAML spells it: the arguments of a class sit under its init_args.
    parts: list[str] = []
    for _, kind, name in path:
        parts.append("init_args" if kind == "class" else name)
    while parts and parts[-1] == "init_args":
        parts.pop()
    keys = ".".join(parts)
    classes = [name for _, kind, name in path if kind == "class"]
    if classes and _is_import_problem(detail, classes[-1]):
        summary = f"{keys}.class_path: {classes[-1]!r} cannot be imported ({detail})"
        summary += _suggestion(classes[-1])
        token = classes[-1]
    else:
        named = f" ({classes[-1]})" if classes else ""
        summary = f"{keys}{named}: {detail}" if keys else detail
        quoted = _QUOTED.findall(detail)
        token = quoted[0] if quoted else (parts[-1] if parts else "")
        unknown = _NOT_ACCEPTED.search(detail)
        if unknown and classes:
            # The key is a path below the class that refused it; its first part is the typo.
            token = unknown.group(1).removeprefix("init_args.").split(".", 1)[0]
            accepted = init_arguments(classes[-1])
            if accepted:
                summary += "; " + _suggest(token, accepted, quote=True)
    return _fold(summary + _location(token, files))


def option_strings(parser: object) -> list[str]:
    """Every ``--option`` a parser declares."""
    actions = getattr(parser, "_actions", [])
    return [flag for action in actions for flag in action.option_strings]


def init_arguments(class_path: str) -> list[str]:
    """The keyword arguments of a class's constructor (``[]`` if it cannot be imported)."""
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        parameters = inspect.signature(cls).parameters.values()
    except (ImportError, AttributeError, ValueError, TypeError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [parameter.name for parameter in parameters if parameter.kind in kinds]


def _option_group(flag: str, options: Sequence[str]) -> list[str]:
    """The options of ``flag``'s group (``--trainer.*`` for ``--trainer.x``), else all."""
    prefix = flag.rsplit(".", 1)[0] + "." if "." in flag else ""
    group = [option for option in options if prefix and option.startswith(prefix)]
    return group or [option for option in options if option.startswith("--")]


def _suggest(typed: str, accepted: Sequence[str], quote: bool = False) -> str:
    """``did you mean X?`` for the closest accepted key, else the accepted keys."""
    show = repr if quote else str
    close = difflib.get_close_matches(typed, list(accepted), n=1, cutoff=0.6)
    if close:
        return f"did you mean {show(close[0])}?"
    listed = ", ".join(accepted[:_LISTED])
    if len(accepted) > _LISTED:
        listed += f", ... ({len(accepted)} in all; --help lists them)"
    return f"accepted: {listed}"


def instantiation_error(error: BaseException) -> ConfigError | None:
    """A one-line error for a class that refused its arguments, if ``error`` is one.

    jsonargparse wraps what ``__init__`` raised in a ``ValueError`` (chained as its cause); a
    ``ValueError`` there, :class:`~molssl.errors.UserError` included, is an argument the user
    gave, so it becomes one line naming the class. Anything else (``TypeError``, a bug) keeps
    its traceback: ``None`` is returned.
    """
    cause: BaseException = error
    while cause.__cause__ is not None:
        cause = cause.__cause__
    if cause is error or not isinstance(cause, ValueError):
        return None
    classes = re.findall(r"class_path='([^']+)'", str(error))
    named = f"{classes[-1]}: " if classes else ""
    return ConfigError(_fold(f"{named}{cause}"))


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _innermost(lines: list[str]) -> int | None:
    """Index of the deepest line that says what is wrong (not structure, not boilerplate)."""
    best: int | None = None
    for index, line in enumerate(lines):
        stripped = line.strip().lstrip("- ").strip()
        if not stripped or stripped.startswith(_NOISE):
            continue
        if _KEY.match(line.strip()) or _CLASS.match(line.strip()):
            continue
        if best is None or _indent(line) > _indent(lines[best]):
            best = index
    return best


def _is_import_problem(detail: str, class_path: str) -> bool:
    named = class_path.rsplit(".", 1)[-1] in detail and "import" in detail.lower()
    return named or any(
        words in detail for words in ("has no attribute", "No module named", "Unable to import")
    )


def _suggestion(class_path: str) -> str:
    module_name, _, name = class_path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception:  # any import failure just means no suggestion
        return ""
    names = [
        n for n in dir(module) if not n.startswith("_") and isinstance(getattr(module, n), type)
    ]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.75)
    return f"; did you mean '{module_name}.{close[0]}'?" if close else ""


def _location(token: str, files: Sequence[Path]) -> str:
    """`` (file, line N)`` of the first config line that holds ``token``, if any does."""
    if not token:
        return ""
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if re.search(rf"(^|[^\w.]){re.escape(token)}([^\w.]|$)", line):
                return f" ({path}, line {number})"
    return ""


def _yaml_error(text: str, files: Sequence[Path]) -> str:
    """Where a YAML syntax error is: the file, line and column (jsonargparse hides the file)."""
    for path in files:
        try:
            yaml.safe_load(path.read_text())
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
            context = ""
            if error.context:
                start = error.context_mark
                at = f" at line {start.line + 1}, column {start.column + 1}" if start else ""
                context = f" ({error.context} that starts{at})"
            return _fold(f"{where}: not valid YAML: {error.problem}{context}")
        except (OSError, yaml.YAMLError):
            continue
    return _fold(text.replace('"<unicode string>"', "the config given on the command line"))


def _fold(text: str) -> str:
    line = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return line if len(line) <= _MAX_LENGTH else line[: _MAX_LENGTH - 1] + "…"

"""molssl's classes by their short names, for LightningCLI's ``--<group>.help NAME``.

jsonargparse resolves a short ``class_path`` (``--model FinetuneModule``) among the imported
subclasses of the argument's type, but ``--data.help NAME`` of molssl's optional ``data``
argument (``Optional[LightningDataModule]``) wants a dotted import path. The command line is
therefore rewritten before parsing: a short name after a ``.help`` option becomes the dotted
path of the molssl class of that name, so that every group's help takes the same short names.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

__all__ = ["expand_short_help", "molssl_classes"]


def molssl_classes() -> dict[str, str]:
    """``{short name: dotted path}`` of the classes defined in molssl's data modules, modules,
    encoders and objectives (each package's modules imported)."""
    import molssl.datamodules
    import molssl.encoders
    import molssl.modules
    import molssl.objectives

    packages: tuple[ModuleType, ...] = (
        molssl.datamodules,
        molssl.encoders,
        molssl.modules,
        molssl.objectives,
    )
    found: dict[str, str] = {}
    for package in packages:
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
            module = importlib.import_module(info.name)
            for name, value in vars(module).items():
                if inspect.isclass(value) and value.__module__ == module.__name__:
                    found.setdefault(name, f"{value.__module__}.{value.__qualname__}")
    return found


def expand_short_help(argv: list[str]) -> list[str]:
    """``argv`` with the short molssl class name after each ``--<group>.help`` made dotted;
    other names (dotted paths, the user's own classes) are left to jsonargparse."""
    expanded = list(argv)
    classes: dict[str, str] | None = None
    for index, token in enumerate(expanded[:-1]):
        name = expanded[index + 1]
        if token.startswith("--") and token.endswith(".help") and "." not in name:
            classes = molssl_classes() if classes is None else classes
            expanded[index + 1] = classes.get(name, name)
    return expanded

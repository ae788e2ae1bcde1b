"""Checkpoints shipped inside the molssl package, by name: ``molssl.load("<name>")``.

:data:`PACKAGED_CHECKPOINTS` maps a name to a file's path relative to the installed ``molssl``
package folder. It is empty until a release ships a checkpoint; adding one is one line here,
the file under ``src/molssl/`` and its pattern in ``[tool.setuptools.package-data]`` of
``pyproject.toml``. :func:`resolve_checkpoint` turns what the user gave (a path or a name)
into a file.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path

from molssl.checkpoints import CheckpointError

__all__ = ["PACKAGED_CHECKPOINTS", "PACKAGE_ROOT", "resolve_checkpoint"]

#: Name -> checkpoint path relative to :data:`PACKAGE_ROOT`.
PACKAGED_CHECKPOINTS: dict[str, str] = {}
#: The installed ``molssl`` package folder.
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def resolve_checkpoint(
    name_or_path: str | os.PathLike[str],
    packaged: Mapping[str, str] | None = None,
    package_root: Path | None = None,
) -> Path:
    """The checkpoint file meant by a path or by the name of a packaged checkpoint.

    An existing file wins over a name, so a local ``best.ckpt`` is never shadowed.

    Args:
        name_or_path: A ``.ckpt`` path, or a key of ``packaged``.
        packaged: Names to relative paths (default :data:`PACKAGED_CHECKPOINTS`).
        package_root: What those paths are relative to (default :data:`PACKAGE_ROOT`).

    Raises:
        CheckpointError: ``checkpoint_not_found`` naming the packaged checkpoints (and the
            closest name), or a packaged entry whose file is missing from the installation.
    """
    packaged = PACKAGED_CHECKPOINTS if packaged is None else packaged
    root = PACKAGE_ROOT if package_root is None else package_root
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    name = str(name_or_path)
    if name in packaged:
        file = root / packaged[name]
        if not file.is_file():
            raise CheckpointError(
                "checkpoint_not_found",
                f"the packaged checkpoint {name!r} should be {file}, which this installation "
                "lacks (reinstall molssl)",
            )
        return file
    known = sorted(packaged)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listed = ", ".join(known) if known else "none in this version"
    raise CheckpointError(
        "checkpoint_not_found",
        f"checkpoint not found: {name} is neither a file nor the name of a packaged checkpoint"
        f"{hint} (packaged: {listed})",
    )

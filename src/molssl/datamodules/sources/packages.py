"""Data sets shipped inside Python packages, named as inputs: ``qm9pack`` and ``moses``.

Two real data sets reach an offline machine through the package registry:

* ``qm9pack`` (PyPI ``qm9pack`` 1.0.3, MIT; data CC0, Ramakrishnan et al. 2014): QM9's 130,831
  characterized molecules with DFT coordinates, SMILES and labels, ``qm9pack/data/
  qm9_part{1,2,3}.csv`` (layout: :mod:`molssl.datamodules.sources.qm9pack`).
* ``moses`` (PyPI ``molsets`` 0.3.1, MIT; Polykovskiy et al. 2020): 1,584,663 drug-like
  SMILES from ZINC's clean leads, ``moses/dataset/data/train.csv.gz`` (one ``SMILES``
  column); ``moses:test`` and ``moses:test_scaffolds`` name its two test sets.

Neither is a dependency of molssl: ``make data-packages`` (or the ``pip`` line in the error)
installs them. The files are found without importing the packages (``molsets`` imports
metrics libraries it does not declare when installed with ``--no-deps``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from molssl.datamodules.sources.entry import SourceError

__all__ = ["PACKAGE_INPUTS", "PackageInput", "is_package_input", "package_input_files"]


@dataclass(frozen=True)
class PackageInput:
    """Where one named input lives inside an installed package.

    Attributes:
        package: The importable top-level package holding the files.
        folder: Folder inside the package.
        files: File names in that folder, in the order they are read.
        install: The command that installs the package.
    """

    package: str
    folder: str
    files: tuple[str, ...]
    install: str


_QM9PACK_INSTALL = "pip install qm9pack==1.0.3 (or: make data-packages)"
_MOSES_INSTALL = "pip install --no-deps molsets==0.3.1 (or: make data-packages)"

#: Input names that stand for a package's data files.
PACKAGE_INPUTS: dict[str, PackageInput] = {
    "qm9pack": PackageInput(
        "qm9pack", "data", ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv"), _QM9PACK_INSTALL
    ),
    "moses": PackageInput("moses", "dataset/data", ("train.csv.gz",), _MOSES_INSTALL),
    "moses:train": PackageInput("moses", "dataset/data", ("train.csv.gz",), _MOSES_INSTALL),
    "moses:test": PackageInput("moses", "dataset/data", ("test.csv.gz",), _MOSES_INSTALL),
    "moses:test_scaffolds": PackageInput(
        "moses", "dataset/data", ("test_scaffolds.csv.gz",), _MOSES_INSTALL
    ),
}


def is_package_input(name: str | Path) -> bool:
    """Whether ``name`` is one of :data:`PACKAGE_INPUTS` (and not an existing local path)."""
    return str(name) in PACKAGE_INPUTS and not Path(name).exists()


def package_input_files(name: str) -> list[Path]:
    """The data files of the named input.

    Raises:
        SourceError: ``missing_package`` (one line naming the install command) when the
            package is not installed, ``missing_file`` when it lacks a file.
    """
    entry = PACKAGE_INPUTS.get(name)
    if entry is None:
        raise SourceError(
            f"unknown package input {name!r}; choose from {sorted(PACKAGE_INPUTS)}",
            reason="unknown_input",
        )
    spec = importlib.util.find_spec(entry.package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise SourceError(
            f"input {name!r} needs the {entry.package!r} package, which is not installed: "
            f"{entry.install}",
            reason="missing_package",
        )
    folder = Path(locations[0]) / entry.folder
    files = [folder / file for file in entry.files]
    missing = [str(file) for file in files if not file.is_file()]
    if missing:
        raise SourceError(
            f"input {name!r}: the installed {entry.package!r} package lacks {missing}; "
            f"reinstall it: {entry.install}",
            reason="missing_file",
        )
    return files

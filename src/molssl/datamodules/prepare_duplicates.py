"""Molecules that ``molssl prepare`` has already prepared once: kept once, the rest recorded.

The same molecule twice in a pre-training set (two input files that overlap, as ChEMBL and ZINC
do, or one file listing it twice) weighs it double, and when its copies land in different
shards, validation holds out a molecule that is also trained on. So by default a molecule that
was prepared before fails as ``duplicate_molecule``, naming the ``mol_id`` of its first copy:
``ok + failed == read`` still holds, and the manifest says what was left out.

What counts as the same molecule:

* a SMILES entry: the same canonical isomeric SMILES (stereoisomers differ; a salt and its
  parent differ) -- its conformers are generated anyway;
* an entry with coordinates (SDF, PubChemQC): the same SMILES *and* the same coordinates. Other
  conformers of one molecule (a conformer ensemble) are distinct data and all kept.

A 96-bit BLAKE2b digest of that identity is kept per molecule (about 100 bytes of memory each,
so 1 GB per 10 million molecules); ``--keep-duplicates`` turns the check off. Each shard's
sidecar lists its molecules' digests, so a resumed run knows the molecules of the shards it
keeps without reading them.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from molssl.datamodules.records import MoleculeRecord

__all__ = ["DuplicateMolecules"]

_DIGEST_BYTES = 12


class DuplicateMolecules:
    """The molecules seen so far in one preparation, in ``mol_id`` order.

    Args:
        keep: Keep every copy (nothing is ever a duplicate).
    """

    def __init__(self, keep: bool = False) -> None:
        self.keep = keep
        self._first: dict[int, int] = {}

    @staticmethod
    def key(record: MoleculeRecord, from_3d: bool) -> str:
        """Hex digest of the molecule's identity (see the module docstring)."""
        digest = hashlib.blake2b(record.smiles.encode(), digest_size=_DIGEST_BYTES)
        if from_3d:
            digest.update(np.ascontiguousarray(record.conformers, dtype=np.float32).tobytes())
        return digest.hexdigest()

    def check(self, record: MoleculeRecord, from_3d: bool) -> tuple[str, int | None]:
        """The record's key, and the ``mol_id`` of an earlier copy (``None``: first seen)."""
        key = self.key(record, from_3d)
        if self.keep:
            return key, None
        number = int(key, 16)
        first = self._first.get(number)
        if first is None:
            self._first[number] = int(record.mol_id)
        return key, first

    def restore(self, sidecar: dict[str, Any] | None, read: int) -> bool:
        """Takes the molecules of a finished shard's sidecar; ``False`` if it must be redone.

        A sidecar that read another number of entries, or has no ``molecule_keys`` (written by
        a molssl without this check), does not count as finished.
        """
        if sidecar is None or sidecar.get("read") != read:
            return False
        keys = sidecar.get("molecule_keys")
        if not isinstance(keys, list):
            return False
        if not self.keep:
            for mol_id, key in keys:
                self._first.setdefault(int(key, 16), int(mol_id))
        return True
